"""The embedded default dataset: real photographs shipped with installed packages, turned into a
small multi-class anomaly detection benchmark in the MVTec AD layout, offline and deterministically.

Sources: scikit-image (brick, grass, gravel, coins, coffee, chelsea), scikit-learn
(flower.jpg) and matplotlib (grace_hopper.jpg). Textures (brick, grass, gravel) give normal images
as random crops with flips; objects (coins, coffee, cat, flower, portrait) as a fixed framing with
small shifts and zoom. Every normal image also gets a brightness jitter and mild sensor noise.
Defects (data.defects) are drawn on fresh normal images, with exact masks.

Glossary (code name -> meaning):
    S          image side (256)
    ClassSpec  how one class is cut from its source photo and which defects it gets
    box        (y0, x0, y1, x1) crop of the source photo, fractions of its height/width
    roi        where defect centres go, fractions of S
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mambaadv2_ref.data.defects import Box, make_defect

VERSION = "embedded-v1"
SEED = 20260622
IMAGE_SIZE = 256
NUM_TRAIN = 40
NUM_TEST_GOOD = 10
NUM_PER_DEFECT = 3
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ClassSpec:
    """One embedded class: source photo, framing, defect placement and kinds."""

    name: str
    source: str
    texture: bool
    box: Box
    roi: Box
    kinds: tuple[str, ...]
    background: Box | None = None
    donor: str = "gravel"


CLASSES = (
    ClassSpec("brick", "brick", True, (0, 0, 1, 1), (0.1, 0.1, 0.9, 0.9),
              ("crack", "hole", "stain", "scratch"), donor="grass"),
    ClassSpec("grass", "grass", True, (0, 0, 1, 1), (0.1, 0.1, 0.9, 0.9),
              ("foreign_object", "stain", "hole", "scratch"), donor="brick"),
    ClassSpec("gravel", "gravel", True, (0, 0, 1, 1), (0.1, 0.1, 0.9, 0.9),
              ("foreign_object", "stain", "crack", "hole"), donor="coffee"),
    ClassSpec("coins", "coins", False, (0, 0.105, 1, 0.894), (0.1, 0.1, 0.9, 0.9),
              ("scratch", "stain", "crack", "foreign_object"), donor="grass"),
    ClassSpec("coffee", "coffee", False, (0, 0.167, 1, 0.833), (0.12, 0.2, 0.85, 0.8),
              ("crack", "stain", "missing_part", "foreign_object"),
              background=(0.0, 0.0, 0.1, 0.15)),
    ClassSpec("cat", "chelsea", False, (0, 0.25, 1, 0.915), (0.15, 0.15, 0.9, 0.85),
              ("scratch", "stain", "crack", "foreign_object")),
    ClassSpec("flower", "flower", False, (0, 0.147, 1, 0.814), (0.25, 0.3, 0.7, 0.7),
              ("hole", "stain", "missing_part", "foreign_object"),
              background=(0.0, 0.0, 0.2, 0.15)),
    ClassSpec("portrait", "grace_hopper", False, (0, 0, 0.853, 1), (0.3, 0.25, 0.95, 0.75),
              ("scratch", "stain", "crack", "foreign_object"), donor="brick"),
)


@cache
def load_source(name: str) -> Image.Image:
    """One of the shipped photographs as an RGB PIL image (gray ones replicated to RGB)."""
    if name == "flower":
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image("flower.jpg")).convert("RGB")
    if name == "grace_hopper":
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
            return img.convert("RGB")
    import skimage.data

    if name not in {"brick", "grass", "gravel", "coins", "coffee", "chelsea"}:
        raise ValueError(f"unknown source photo {name!r}")
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def normal_image(spec: ClassSpec, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw one defect-free image of a class: jittered crop, resize, brightness, sensor noise.

    Args:
        spec: the class; rng: numpy Generator; size: S.

    Returns:
        uint8 image (S, S, 3).
    """
    src = load_source(spec.source)
    width, height = src.size
    y0, x0, y1, x1 = spec.box
    if spec.texture:  # random square of about half the photo's side, anywhere
        side = rng.uniform(0.45, 0.55) * min(width, height)
        left = rng.uniform(0, width - side)
        top = rng.uniform(0, height - side)
        box = (left, top, left + side, top + side)
    else:  # the object's framing, shifted by up to 3% and zoomed by up to 3%
        bw, bh = (x1 - x0) * width, (y1 - y0) * height
        scale = min(rng.uniform(0.97, 1.03), width / bw, height / bh)
        half_w, half_h = scale * bw / 2, scale * bh / 2
        cx = (x0 + x1) / 2 * width + rng.uniform(-0.03, 0.03) * bw
        cy = (y0 + y1) / 2 * height + rng.uniform(-0.03, 0.03) * bh
        cx = float(np.clip(cx, half_w, width - half_w))  # keep the crop inside the photo
        cy = float(np.clip(cy, half_h, height - half_h))
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    img = src.resize((size, size), Image.BILINEAR, box=box, reducing_gap=None)
    if spec.texture and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if spec.texture and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_TOP_BOTTOM)
    x = np.asarray(img, dtype=np.float64) * rng.uniform(0.95, 1.05)
    x = x + rng.normal(0, 1.5, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _save(array: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)
    return path.as_posix()


def build_class(
    spec: ClassSpec,
    root: Path,
    rng: np.random.Generator,
    size: int = IMAGE_SIZE,
    num_train: int = NUM_TRAIN,
    num_test_good: int = NUM_TEST_GOOD,
    num_per_defect: int = NUM_PER_DEFECT,
) -> list[str]:
    """Write one class (train/good, test/good, test/<kind>, ground_truth/<kind>) under root.

    Returns:
        the written files, relative to root (POSIX).
    """
    by_name = {s.name: s for s in CLASSES}
    donor_spec = by_name.get(spec.donor, spec)
    base = root / spec.name
    files = []
    for i in range(num_train):
        files.append(_save(normal_image(spec, rng, size), base / "train/good" / f"{i:03d}.png"))
    for i in range(num_test_good):
        files.append(_save(normal_image(spec, rng, size), base / "test/good" / f"{i:03d}.png"))
    for kind in spec.kinds:
        for i in range(num_per_defect):
            clean = normal_image(spec, rng, size)
            donor = normal_image(donor_spec, rng, size)
            image, mask = make_defect(clean, kind, rng, spec.roi, donor, spec.background)
            files.append(_save(image, base / "test" / kind / f"{i:03d}.png"))
            mask_u8 = mask.astype(np.uint8) * 255
            files.append(_save(mask_u8, base / "ground_truth" / kind / f"{i:03d}_mask.png"))
    return [Path(f).relative_to(root).as_posix() for f in files]


def build_embedded(root: str | Path, seed: int = SEED, progress: bool = True) -> Path:
    """Build the whole embedded dataset into an empty or new folder (not atomic; see below).

    Args:
        root: output folder. seed: master seed (class i uses SeedSequence([seed, i])).
        progress: show a tqdm bar over classes.

    Returns:
        root, with a manifest.json listing every file (written last: marks completeness).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files, counts = [], {}
    for i, spec in enumerate(tqdm(CLASSES, desc="embedded dataset", disable=not progress)):
        rng = np.random.default_rng([seed, i])
        files += build_class(spec, root, rng, IMAGE_SIZE, NUM_TRAIN, NUM_TEST_GOOD, NUM_PER_DEFECT)
        counts[spec.name] = {
            "source": spec.source,
            "texture": spec.texture,
            "train_good": NUM_TRAIN,
            "test_good": NUM_TEST_GOOD,
            "test_defects": {k: NUM_PER_DEFECT for k in spec.kinds},
        }
    manifest = {"version": VERSION, "fingerprint": fingerprint(seed), "seed": seed,
                "image_size": IMAGE_SIZE, "classes": counts, "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return root


def fingerprint(seed: int = SEED) -> str:
    """SHA-256 of everything that shapes the dataset (version, seed, sizes, class specs)."""
    recipe = [VERSION, seed, IMAGE_SIZE, NUM_TRAIN, NUM_TEST_GOOD, NUM_PER_DEFECT,
              [asdict(spec) for spec in CLASSES]]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()


def is_complete(root: str | Path, seed: int = SEED) -> bool:
    """True when root holds a manifest of the current recipe (fingerprint) and all its files."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("fingerprint") != fingerprint(seed):
        return False
    return all((root / f).is_file() for f in manifest["files"])


def default_cache_dir() -> Path:
    """$MAMBAADV2_CACHE if set, else ~/.cache/mambaadv2_ref."""
    env = os.environ.get("MAMBAADV2_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mambaadv2_ref"


def embedded_dataset_root(cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Root of the embedded dataset, building it once (atomically) if needed.

    Args:
        cache_dir: parent folder; the dataset lives in <cache_dir>/embedded-v1.
            Default: $MAMBAADV2_CACHE or ~/.cache/mambaadv2_ref.
        progress: show a tqdm bar while building.

    Returns:
        Path of the MVTec-layout root (classes brick, grass, gravel, coins, coffee, cat, flower,
        portrait).

    The build goes to a temporary folder beside the target and is renamed into place, so a
    crashed or concurrent build never leaves a half-written dataset behind.
    """
    parent = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = parent / VERSION
    if is_complete(root):
        return root
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{VERSION}-", dir=parent))
    try:
        build_embedded(tmp, progress=progress)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if root.exists() and not is_complete(root):
            shutil.rmtree(root)  # an old version or a damaged copy
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first
            if not is_complete(root):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
