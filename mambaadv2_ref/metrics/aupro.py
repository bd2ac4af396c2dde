"""AUPRO: area under the per-region-overlap curve up to a false positive rate of 0.3.

MambaAD / ADer definition (after CFlow-AD), for the maps a and masks g of one class:

    t_k   = min(a) + k (max(a) - min(a)) / T,   k = 0 .. T-1                     (1)
    PRO_k = mean over all connected GT regions r of all images of |r ∩ {a > t_k}| / |r|   (2)
    FPR_k = |{a > t_k} ∩ {g = 0}| / |{g = 0}|   (over all normal pixels)          (3)
    AUPRO = trapezoid of PRO over FPR, keeping FPR_k < 0.3 and rescaling those FPRs
            min-max to [0, 1]                                                        (4)

Regions are 8-connected (skimage.measure.label's default). Two ways to get (FPR_k, PRO_k):
`pro_curve_loop` thresholds every map at every t_k (the obviously correct version, O(T N H W)
work and an N x H x W boolean per threshold), and `pro_curve` bins every pixel once per image with
searchsorted and counts with bincount (O(N H W log T) work, memory of one image plus T per
region). They agree exactly for the same thresholds (tested).

Glossary: maps a (N, H, W), masks g (N, H, W) bool, thresholds t (T,), num_thresholds T.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
NUM_THRESHOLDS = 100  # T: MambaAD's configs (max_step=100); ADer's own default is 200


def pro_thresholds(maps: np.ndarray, num_thresholds: int) -> np.ndarray:
    """Thresholds t_k of eq. (1): T equally spaced values from min(a), excluding max(a).

    Args:
        maps: (N, H, W) anomaly maps. num_thresholds: T.

    Returns:
        float64 (T,).
    """
    if num_thresholds < 2:
        raise ValueError(f"num_thresholds must be >= 2, got {num_thresholds}")
    lo, hi = float(np.min(maps)), float(np.max(maps))
    return lo + np.arange(num_thresholds) * ((hi - lo) / num_thresholds)


def pro_curve_loop(
    maps: np.ndarray, masks: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(FPR_k, PRO_k) by thresholding everything at every t_k (slow reference).

    Args:
        maps: (N, H, W) floats. masks: (N, H, W) bool. thresholds: (T,).

    Returns:
        fpr, pro: float64 (T,).

    Implements: eqs. (2)-(3), literally as ADer's loop.
    """
    from skimage import measure  # the reference only: the fast path needs scipy alone

    regions = [measure.regionprops(measure.label(m)) for m in masks]
    normal = ~masks
    fpr, pro = [], []
    for t in thresholds:
        on = maps.astype(np.float64) > t
        overlaps = [on[i][r.coords[:, 0], r.coords[:, 1]].sum() / r.area
                    for i, rs in enumerate(regions) for r in rs]
        pro.append(np.mean(overlaps))
        fpr.append(np.logical_and(on, normal).sum() / normal.sum())
    return np.array(fpr), np.array(pro)


def _above_counts(index: np.ndarray, groups: np.ndarray, num_groups: int, num_t: int) -> np.ndarray:
    """Per group g and threshold k, how many pixels have index > k, i.e. a > t_k. (G, T)."""
    hist = np.bincount(groups * (num_t + 1) + index, minlength=num_groups * (num_t + 1))
    tail = np.cumsum(hist.reshape(num_groups, num_t + 1)[:, ::-1], axis=1)[:, ::-1]
    return tail[:, 1:]


def pro_curve(
    maps: np.ndarray, masks: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(FPR_k, PRO_k) with one pass over the pixels, memory-bounded (one image at a time).

    Args:
        maps: (N, H, W) floats. masks: (N, H, W) bool. thresholds: (T,) ascending.

    Returns:
        fpr, pro: float64 (T,), equal to pro_curve_loop's.

    Implements: eqs. (2)-(3) with histograms: a pixel with searchsorted index j (the number of
    thresholds below its value) is above t_k exactly for k < j.
    """
    num_t = len(thresholds)
    false_pos = np.zeros(num_t, np.int64)
    overlap_sum = np.zeros(num_t, np.float64)
    num_normal, num_regions = 0, 0
    for a, g in zip(maps, masks, strict=True):
        index = np.searchsorted(thresholds, a.astype(np.float64).ravel(), side="left")
        g = g.ravel()
        false_pos += _above_counts(index[~g], np.zeros((~g).sum(), np.int64), 1, num_t)[0]
        num_normal += int((~g).sum())
        labelled, count = ndimage.label(g.reshape(a.shape), structure=EIGHT_CONNECTED)
        if count:
            region = labelled.ravel()[g] - 1
            hits = _above_counts(index[g], region, count, num_t)  # (R, T)
            overlap_sum += (hits / np.bincount(region)[:, None]).sum(axis=0)
            num_regions += count
    return false_pos / num_normal, overlap_sum / num_regions


def aupro_from_curve(fpr: np.ndarray, pro: np.ndarray, max_fpr: float = 0.3) -> float:
    """Normalised area under the PRO curve for FPR < max_fpr.

    Args:
        fpr, pro: (T,) curve points. max_fpr: integration limit (0.3).

    Returns:
        AUPRO in [0, 1]. Conventions where ADer divides by zero: no point below max_fpr -> 0.0;
        all kept points at one FPR (a vertical curve, e.g. perfect separation) -> their max PRO.

    Implements: eq. (4).
    """
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    keep = fpr < max_fpr
    if not keep.any():
        return 0.0
    f, p = fpr[keep], pro[keep]
    order = np.lexsort((p, f))
    f, p = f[order], p[order]
    span = f[-1] - f[0]
    if span == 0:
        return float(p.max())
    area = float(np.trapezoid(p, (f - f[0]) / span))
    if not -1e-9 <= area <= 1 + 1e-9:
        raise RuntimeError(f"AUPRO {area} outside [0, 1]: PRO values must lie in [0, 1]")
    return min(max(area, 0.0), 1.0)


def aupro(
    maps: np.ndarray,
    masks: np.ndarray,
    num_thresholds: int = NUM_THRESHOLDS,
    max_fpr: float = 0.3,
    method: str = "binned",
) -> float:
    """AUPRO of one class (MambaAD/ADer definition; T = num_thresholds, 100 as MambaAD).

    Args:
        maps: (N, H, W) finite floats. masks: (N, H, W) bool with at least one anomalous and
            one normal pixel. num_thresholds: T. max_fpr: 0.3.
        method: "binned" (pro_curve, memory-bounded) or "loop" (pro_curve_loop, reference).

    Returns:
        AUPRO in [0, 1].

    Implements: eqs. (1)-(4).
    """
    curves = {"binned": pro_curve, "loop": pro_curve_loop}
    if method not in curves:
        raise ValueError(f"method must be one of {sorted(curves)}, got {method!r}")
    masks = np.asarray(masks, dtype=bool)
    if not masks.any() or masks.all():
        raise ValueError("masks must contain both anomalous and normal pixels for AUPRO")
    thresholds = pro_thresholds(maps, num_thresholds)
    fpr, pro = curves[method](np.asarray(maps), masks, thresholds)
    return aupro_from_curve(fpr, pro, max_fpr)
