"""Synthetic surface defects with exact masks: scratch, crack, hole, stain, missing part, foreign
object.

A defect is an opacity map alpha and a content image; it is composited over the clean image

    x' = (1 - alpha) * x + alpha * content                                   (1)

and its ground-truth mask is where the saved (uint8) pixels changed noticeably,

    mask = fill_holes( max_c |x'_c - x_c| > tau ),  tau = 16 / 255           (2)

so soft edges that barely change a pixel are not called defective, and a defect that happens to
change nothing is rejected and drawn again. Shapes are drawn on a 4x supersampled canvas (PIL
ImageDraw) and box-filtered down, which gives anti-aliased, slightly soft edges.

Glossary (code name -> symbol):
    S        side of the square image
    alpha    opacity map in [0, 1], (S, S)
    content  what the defect shows where alpha > 0, (S, S, 3) in [0, 1]
    roi      (y0, x0, y1, x1) fractions of S where defect centres are placed
    donor    another photograph (S, S, 3) that foreign objects are cut from
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

SUPERSAMPLE = 4
TAU = 16  # eq. (2) threshold in uint8 levels
DEFECT_KINDS = ("scratch", "crack", "hole", "stain", "missing_part", "foreign_object")
STAIN_TINTS = ((0.55, 0.40, 0.25), (0.30, 0.30, 0.35), (0.95, 0.80, 0.35), (0.45, 0.55, 0.30))

Box = tuple[float, float, float, float]


def _draw_alpha(size: int, draw: Callable[[ImageDraw.ImageDraw, float], None]) -> np.ndarray:
    """Rasterise shapes drawn at SUPERSAMPLE x resolution into an anti-aliased alpha (S, S)."""
    canvas = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    draw(ImageDraw.Draw(canvas), SUPERSAMPLE)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _point_in(roi: Box, size: int, rng: np.random.Generator) -> np.ndarray:
    y0, x0, y1, x1 = roi
    return np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)]) * size  # (x, y)


def _blob_points(center: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Star-shaped irregular polygon (K, 2) around center: radius * (1 + smooth noise)."""
    k = 16
    theta = np.sort(rng.uniform(0, 2 * np.pi, k))
    wobble = ndimage.gaussian_filter1d(rng.normal(0, 0.45, k), 1.2, mode="wrap")
    stretch = rng.uniform(0.6, 1.0)
    r = radius * np.clip(1 + wobble, 0.45, 1.6)
    pts = np.stack([r * np.cos(theta), stretch * r * np.sin(theta)], 1)
    phi = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    return center + pts @ rot.T


def _blob_alpha(size: int, center: np.ndarray, radius: float, rng, blur: float) -> np.ndarray:
    pts = _blob_points(center, radius, rng)
    alpha = _draw_alpha(size, lambda d, s: d.polygon([tuple(p * s) for p in pts], fill=255))
    return ndimage.gaussian_filter(alpha, blur) if blur > 0 else alpha


def _line_alpha(size: int, points: np.ndarray, width: float) -> np.ndarray:
    def draw(d: ImageDraw.ImageDraw, s: float) -> None:
        d.line([tuple(p * s) for p in points], fill=255, width=max(1, round(width * s)),
               joint="curve")

    return _draw_alpha(size, draw)


def scratch(x, rng, roi, size, donor=None, background=None):
    """A thin curved scratch (quadratic Bezier), bright (polished) or dark.

    All defect functions take (x (S, S, 3) in [0, 1], rng, roi, size, donor, background) and
    return (alpha (S, S), content (S, S, 3)) for eq. (1).
    """
    p0 = _point_in(roi, size, rng)
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(0.15, 0.35) * size
    p2 = p0 + length * np.array([np.cos(angle), np.sin(angle)])
    p1 = (p0 + p2) / 2 + rng.normal(0, 0.15 * length, 2)
    t = np.linspace(0, 1, 40)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    alpha = _line_alpha(size, curve, rng.uniform(1.0, 2.2) * max(1.0, size / 256))
    content = x * 0.35 + 0.65 if rng.random() < 0.7 else x * 0.25
    return alpha * rng.uniform(0.85, 1.0), content


def crack(x, rng, roi, size, donor=None, background=None):
    """A jagged dark crack (random walk with one branch); returns (alpha, content)."""
    def walk(start, heading, steps):
        pts = [start]
        for _ in range(steps):
            heading += rng.normal(0, 0.45)
            pts.append(pts[-1] + rng.uniform(0.015, 0.03) * size * np.array(
                [np.cos(heading), np.sin(heading)]))
        return np.array(pts)

    heading = rng.uniform(0, 2 * np.pi)
    trunk = walk(_point_in(roi, size, rng), heading, int(rng.integers(7, 13)))
    branch = walk(trunk[len(trunk) // 2], heading + rng.choice([-1, 1]) * 0.8,
                  int(rng.integers(3, 6)))
    width = rng.uniform(1.0, 2.0) * max(1.0, size / 256)
    alpha = np.maximum(_line_alpha(size, trunk, width), _line_alpha(size, branch, width * 0.7))
    return alpha, x * 0.12


def hole(x, rng, roi, size, donor=None, background=None):
    """A dark hole with radial shading (darkest at the centre); returns (alpha, content)."""
    center = _point_in(roi, size, rng)
    radius = rng.uniform(0.035, 0.07) * size
    alpha = _blob_alpha(size, center, radius, rng, blur=0.6 * max(1.0, size / 256))
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - center[0], yy - center[1]) / radius
    shade = (0.06 + 0.3 * np.clip(r, 0, 1))[..., None]
    return alpha, x * shade


def stain(x, rng, roi, size, donor=None, background=None):
    """A soft-edged tinted stain (oil, rust, dirt); returns (alpha, content)."""
    center = _point_in(roi, size, rng)
    alpha = _blob_alpha(size, center, rng.uniform(0.06, 0.11) * size, rng,
                        blur=2.0 * max(0.5, size / 256))
    tint = np.array(STAIN_TINTS[int(rng.integers(len(STAIN_TINTS)))])
    return alpha * rng.uniform(0.75, 0.95), x * tint


def missing_part(x, rng, roi, size, donor=None, background=None):
    """A piece of the object is gone: the background from elsewhere in the image shows through.

    Needs ``background`` (a box of fractions of S that shows only background).
    """
    if background is None:
        raise ValueError("missing_part needs a background box (y0, x0, y1, x1)")
    center = _point_in(roi, size, rng)
    source = _point_in(background, size, rng)
    shift = np.round(center - source).astype(int)
    content = np.roll(x, (shift[1], shift[0]), axis=(0, 1))
    alpha = _blob_alpha(size, center, rng.uniform(0.07, 0.12) * size, rng,
                        blur=0.8 * max(1.0, size / 256))
    return alpha, content


def foreign_object(x, rng, roi, size, donor=None, background=None):
    """A foreign particle: an irregular piece cut from another photograph (``donor``)."""
    if donor is None:
        raise ValueError("foreign_object needs a donor image (S, S, 3)")
    center = _point_in(roi, size, rng)
    shift = rng.integers(0, size, 2)
    content = np.roll(donor, (int(shift[0]), int(shift[1])), axis=(0, 1))
    alpha = _blob_alpha(size, center, rng.uniform(0.05, 0.09) * size, rng,
                        blur=0.6 * max(1.0, size / 256))
    return alpha, content


DEFECTS = {
    "scratch": scratch,
    "crack": crack,
    "hole": hole,
    "stain": stain,
    "missing_part": missing_part,
    "foreign_object": foreign_object,
}


def composite(x: np.ndarray, alpha: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Alpha-composite a defect over an image and quantise.

    Args:
        x: clean image (S, S, 3) uint8; alpha: (S, S) in [0, 1]; content: (S, S, 3) in [0, 1].

    Returns:
        defective image (S, S, 3) uint8.

    Implements: eq. (1).
    """
    xf = x.astype(np.float64) / 255.0
    out = (1 - alpha[..., None]) * xf + alpha[..., None] * np.clip(content, 0, 1)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def changed_mask(clean: np.ndarray, defective: np.ndarray, tau: int = TAU) -> np.ndarray:
    """Ground-truth mask: pixels whose value changed noticeably, holes filled.

    Args:
        clean, defective: (S, S, 3) uint8 images.
        tau: threshold on the largest channel change, in uint8 levels.

    Returns:
        bool mask (S, S).

    Implements: eq. (2).
    """
    if clean.shape != defective.shape:
        raise ValueError(f"clean {clean.shape} and defective {defective.shape} differ in shape")
    diff = np.abs(clean.astype(np.int16) - defective.astype(np.int16)).max(axis=-1)
    return ndimage.binary_fill_holes(diff > tau)


def make_defect(
    x: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    roi: Box = (0.1, 0.1, 0.9, 0.9),
    donor: np.ndarray | None = None,
    background: Box | None = None,
    max_tries: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of a given kind on a clean image, with its exact mask.

    Args:
        x: clean image (S, S, 3) uint8.
        kind: one of DEFECT_KINDS.
        rng: numpy Generator (the only source of randomness: deterministic for a seed).
        roi: where defect centres go, (y0, x0, y1, x1) fractions of S.
        donor: (S, S, 3) uint8 photo for foreign_object.
        background: background box (fractions) for missing_part.
        max_tries: redraws allowed when a defect changes too few pixels.

    Returns:
        (defective image (S, S, 3) uint8, mask (S, S) bool), mask area >= 0.08% of the image.
    """
    if kind not in DEFECTS:
        raise ValueError(f"kind must be one of {DEFECT_KINDS}, got {kind!r}")
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[0] != x.shape[1] or x.dtype != np.uint8:
        raise ValueError(f"x must be a square uint8 image (S, S, 3), got {x.shape} {x.dtype}")
    size = x.shape[0]
    min_area = max(3, round(0.0008 * size * size))
    xf = x.astype(np.float64) / 255.0
    donor_f = None if donor is None else donor.astype(np.float64) / 255.0
    for _ in range(max_tries):
        alpha, content = DEFECTS[kind](xf, rng, roi, size, donor=donor_f, background=background)
        defective = composite(x, alpha, content)
        mask = changed_mask(x, defective)
        if mask.sum() >= min_area:
            return defective, mask
    raise RuntimeError(f"could not draw a visible {kind} in {max_tries} tries (roi {roi})")
