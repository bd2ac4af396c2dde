"""A tiny MVTec-layout dataset of procedural textures with exact defect masks, for fast tests:
the same layout and defects (data.defects) as the embedded dataset, no photographs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mambaadv2_ref.data.defects import make_defect
from mambaadv2_ref.data.embedded import _save


def _tiny_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth periodic colour texture (S, S, 3) in [40, 215] (procedural, no photo)."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.normal(size=(size, size, 3)), (1.5, 1.5, 0), mode="wrap")
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-12)
    return 40 + 175 * noise


def make_tiny_dataset(
    root: str | Path,
    classes: tuple[str, ...] = ("alpha", "beta"),
    image_size: int = 32,
    num_train: int = 4,
    num_test_good: int = 2,
    kinds: tuple[str, ...] = ("scratch", "stain"),
    num_per_defect: int = 1,
    seed: int = 0,
) -> Path:
    """Write a tiny MVTec-layout dataset of procedural textures, for fast tests.

    Args:
        root: output folder (created). classes: class names. image_size: S.
        num_train, num_test_good, num_per_defect: images per folder.
        kinds: defect kinds (any of data.defects.DEFECT_KINDS except missing_part).
        seed: master seed (deterministic output).

    Returns:
        root. Normal images are the class texture, randomly rolled, plus noise; defect images
        carry exact masks as in the embedded dataset.
    """
    root = Path(root)
    for i, cls in enumerate(classes):
        rng = np.random.default_rng([seed, i])
        texture, donor = _tiny_texture(rng, image_size), _tiny_texture(rng, image_size)

        def normal(rng=rng, texture=texture):
            shifted = np.roll(texture, tuple(rng.integers(0, image_size, 2)), axis=(0, 1))
            return np.clip(np.round(shifted + rng.normal(0, 2, shifted.shape)), 0, 255).astype(
                np.uint8)

        for j in range(num_train):
            _save(normal(), root / cls / "train/good" / f"{j:03d}.png")
        for j in range(num_test_good):
            _save(normal(), root / cls / "test/good" / f"{j:03d}.png")
        for kind in kinds:
            for j in range(num_per_defect):
                donor_u8 = np.round(donor).astype(np.uint8)
                image, mask = make_defect(normal(), kind, rng, donor=donor_u8)
                _save(image, root / cls / "test" / kind / f"{j:03d}.png")
                _save(mask.astype(np.uint8) * 255,
                      root / cls / "ground_truth" / kind / f"{j:03d}_mask.png")
    return root
