"""AUPRO: area under the per-region-overlap curve up to a false positive rate of 0.3.

Two definitions are in use, and their numbers differ (by up to ~0.015 on real maps, as much as
many published model differences), so every AUPRO here is named by its definition:

    AUPRO_DEFINITIONS["mambaad"]  MambaAD / ADer (after CFlow-AD): T fixed thresholds, FPR
                                  rescaled below 0.3; `aupro`. Comparable with MambaAD's tables.
    AUPRO_DEFINITIONS["mvtec"]    MVTec AD evaluation code (also anomalib): every threshold,
                                  PRO interpolated at FPR 0.3, area divided by 0.3; `aupro_mvtec`.

MambaAD / ADer definition, for the maps a and masks g of one class:

    t_k   = min(a) + k (max(a) - min(a)) / T,   k = 0 .. T-1                     (1)
    PRO_k = mean over all connected GT regions r of all images of |r ∩ {a > t_k}| / |r|   (2)
    FPR_k = |{a > t_k} ∩ {g = 0}| / |{g = 0}|   (over all normal pixels)          (3)
    AUPRO = trapezoid of PRO over FPR, keeping FPR_k < 0.3 and rescaling those FPRs
            min-max to [0, 1]                                                        (4)

MVTec AD definition: the curve through every distinct threshold (a pixel is positive when
a >= t), from (0, 0) to (1, 1), with PRO and FPR as in (2)-(3):

    AUPRO = (1 / 0.3) * integral_0^0.3 PRO d FPR    (trapezoids; the last point linearly
            interpolated at FPR = 0.3)                                               (5)

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
AUPRO_DEFINITIONS = {
    "mambaad": "MambaAD/ADer: 100 fixed thresholds, FPR < 0.3 rescaled to [0, 1]",
    "mvtec": "MVTec AD evaluation (anomalib): every threshold, PRO interpolated at FPR 0.3, "
             "area / 0.3",
}


def check_maps_masks(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate AUPRO input: same (N, H, W) shape, finite maps, both kinds of mask pixel.

    Returns:
        maps as an array, masks as bool.

    Raises:
        ValueError: naming what is wrong (a NaN map gives an error, never a number).
    """
    maps, masks = np.asarray(maps), np.asarray(masks, dtype=bool)
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both be (N, H, W), got {maps.shape} and "
                         f"{masks.shape}")
    if not np.isfinite(maps).all():
        raise ValueError(f"maps has {int((~np.isfinite(maps)).sum())} NaN/inf values: AUPRO "
                         "needs finite anomaly maps")
    if not masks.any() or masks.all():
        raise ValueError("masks must contain both anomalous and normal pixels for AUPRO")
    return maps, masks


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
    """AUPRO of one class, MambaAD/ADer definition ("mambaad"; T = num_thresholds, 100).

    Args:
        maps: (N, H, W) finite floats. masks: (N, H, W) bool with at least one anomalous and
            one normal pixel. num_thresholds: T. max_fpr: 0.3.
        method: "binned" (pro_curve, memory-bounded) or "loop" (pro_curve_loop, reference).

    Returns:
        AUPRO in [0, 1].

    Raises:
        ValueError: NaN/inf in maps, shapes differ, or masks without both kinds of pixel.

    Implements: eqs. (1)-(4).
    """
    curves = {"binned": pro_curve, "loop": pro_curve_loop}
    if method not in curves:
        raise ValueError(f"method must be one of {sorted(curves)}, got {method!r}")
    maps, masks = check_maps_masks(maps, masks)
    thresholds = pro_thresholds(maps, num_thresholds)
    fpr, pro = curves[method](maps, masks, thresholds)
    return aupro_from_curve(fpr, pro, max_fpr)


def pro_curve_every_threshold(maps: np.ndarray, masks: np.ndarray
                              ) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct map value t (positive: a >= t), from (0, 0) to (1, 1).

    Args:
        maps: (N, H, W) finite floats. masks: (N, H, W) bool.

    Returns:
        fpr, pro: float64, FPR ascending. Memory: a sort of all N H W pixels (~32 bytes each).

    Implements: eqs. (2)-(3) at every threshold, as the MVTec AD evaluation's compute_pro: a
    normal pixel adds 1 / |{g = 0}| to FPR, a pixel of region r adds 1 / (R |r|) to PRO.
    """
    weight = np.zeros(masks.shape, np.float64)
    num_regions = 0
    for i, g in enumerate(masks):
        labelled, count = ndimage.label(g, structure=EIGHT_CONNECTED)
        if count:
            sizes = np.bincount(labelled.ravel())[1:]
            weight[i][g] = 1.0 / sizes[labelled[g] - 1]
            num_regions += count
    order = np.argsort(-maps.astype(np.float64).ravel(), kind="stable")
    sorted_scores = maps.ravel()[order]
    normal = ~masks.ravel()[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    fpr = np.cumsum(normal)[last_of_run] / normal.sum()
    pro = np.minimum(np.cumsum(weight.ravel()[order])[last_of_run] / num_regions, 1.0)
    return np.r_[0.0, fpr, 1.0], np.r_[0.0, pro, 1.0]


def area_until(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> float:
    """Trapezoid area under PRO(FPR) from FPR 0 to max_fpr, interpolating PRO at max_fpr.

    Args:
        fpr: (K,) ascending, from 0 to 1. pro: (K,) matching.

    Returns:
        the area (not normalised). Implements: the integral of eq. (5), as the MVTec AD code.
    """
    keep = fpr <= max_fpr
    area = float(np.trapezoid(pro[keep], fpr[keep]))
    nxt = int(np.searchsorted(fpr, max_fpr, side="right"))
    if fpr[nxt - 1] < max_fpr and nxt < len(fpr):  # partial segment up to max_fpr
        x0, x1, y0, y1 = fpr[nxt - 1], fpr[nxt], pro[nxt - 1], pro[nxt]
        y_at = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_at) * (max_fpr - x0)
    return area


def aupro_mvtec(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3,
                num_thresholds: int | None = None) -> float:
    """AUPRO of one class, MVTec AD evaluation definition ("mvtec", as anomalib).

    Args:
        maps: (N, H, W) finite floats. masks: (N, H, W) bool with both kinds of pixel.
        max_fpr: integration limit (0.3).
        num_thresholds: None = every distinct value (exact; sorts all pixels); an int T = the
            curve at T equally spaced thresholds (eq. (1), memory-bounded `pro_curve`, approaches
            the exact value as T grows).

    Returns:
        AUPRO in [0, 1].

    Raises:
        ValueError: NaN/inf in maps, shapes differ, masks without both kinds of pixel.

    Implements: eq. (5).
    """
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    maps, masks = check_maps_masks(maps, masks)
    if num_thresholds is None:
        fpr, pro = pro_curve_every_threshold(maps, masks)
    else:
        fpr, pro = pro_curve(maps, masks, pro_thresholds(maps, num_thresholds))
        fpr, pro = np.r_[0.0, fpr[::-1], 1.0], np.r_[0.0, pro[::-1], 1.0]
    return min(max(area_until(fpr, pro, max_fpr) / max_fpr, 0.0), 1.0)
