"""The seven anomaly detection metrics of one class, their mean over classes, and mAD.

    I-AUROC, I-AP, I-F1max   image level, on the image scores (max of the map)
    P-AUROC, P-AP, P-F1max   pixel level, over all pixels of all test images of the class
    AUPRO                    per-region overlap up to FPR 0.3 (metrics.aupro), by default
                             the "mambaad" definition; aupro_definition="mvtec" for the MVTec AD
                             one (AUPRO_DEFINITIONS says what each is)
    mAD                      mean of the seven                                        (1)

Each is computed per class; the reported number is the mean over classes (MambaAD's "m"
prefix), see `aggregate`. A class where a metric is undefined (only good test images, no
defect pixel) either raises (the default) or, with `undefined="mark"`, gets NaN for those metrics
(`undefined_metrics` says why); the mean then covers the classes where the metric is defined
(`covered_classes` lists them). Curves and F1max: metrics.curves (F1max is exact, over the whole PR
curve, for images and pixels).

Glossary: scores (N,), labels (N,) in {0, 1}, maps (N, H, W), masks (N, H, W) in {0, 1}.
"""

from __future__ import annotations

import numpy as np

from mambaadv2_ref.metrics.aupro import AUPRO_DEFINITIONS, NUM_THRESHOLDS, aupro, aupro_mvtec
from mambaadv2_ref.metrics.curves import (
    ap_from_counts,
    auroc_from_counts,
    binned_counts,
    exact_counts,
    f1max_from_counts,
)

IMAGE_METRICS = ("I-AUROC", "I-AP", "I-F1max")
PIXEL_METRICS = ("P-AUROC", "P-AP", "P-F1max", "AUPRO")
METRIC_NAMES = IMAGE_METRICS + PIXEL_METRICS
ALL_KEYS = METRIC_NAMES + ("mAD",)


def _as_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    return x


def _check_finite(x: np.ndarray, name: str, where: str) -> None:
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"{where}{name} has {bad} NaN/inf values")


def _check_binary(x: np.ndarray, name: str, where: str) -> np.ndarray:
    if x.dtype != bool and not np.isin(x, (0, 1)).all():
        raise ValueError(f"{where}{name} must hold only 0/1 values, got {np.unique(x)[:5]}...")
    return x.astype(bool)


def _squeeze_channel(x: np.ndarray) -> np.ndarray:
    return x[:, 0] if x.ndim == 4 and x.shape[1] == 1 else x


def image_metrics(scores, labels, *, cls: str | None = None) -> dict[str, float]:
    """I-AUROC, I-AP and I-F1max of one class.

    Args:
        scores: (N,) finite image scores. labels: (N,) 0 = good, 1 = anomalous (both present).
        cls: class name, only for error messages.

    Returns:
        dict with the three image metrics, each in [0, 1].
    """
    where = f"class {cls!r}: " if cls is not None else ""
    scores = _as_numpy(scores, "scores").astype(np.float64)
    labels = _as_numpy(labels, "labels")
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"{where}scores and labels must both be (N,), got "
                         f"{scores.shape} and {labels.shape}")
    _check_finite(scores, "scores", where)
    labels = _check_binary(labels, "labels", where)
    if labels.all() or not labels.any():
        missing = "normal (label 0)" if labels.all() else "anomalous (label 1)"
        raise ValueError(f"{where}labels has no {missing} images; image metrics need both")
    tps, fps = exact_counts(scores, labels)
    return {"I-AUROC": auroc_from_counts(tps, fps), "I-AP": ap_from_counts(tps, fps),
            "I-F1max": f1max_from_counts(tps, fps)[0]}


def pixel_metrics(
    maps,
    masks,
    *,
    cls: str | None = None,
    method: str = "exact",
    num_bins: int = 4096,
    aupro_thresholds: int = NUM_THRESHOLDS,
    max_fpr: float = 0.3,
    aupro_definition: str = "mambaad",
) -> dict[str, float]:
    """P-AUROC, P-AP, P-F1max and AUPRO of one class.

    Args:
        maps: (N, H, W) finite anomaly maps (or (N, 1, H, W)).
        masks: same shape, 0/1 ground truth with anomalous and normal pixels.
        cls: class name, only for error messages.
        method: "exact" (sort all pixels) or "binned" (histograms of num_bins bins, one image at
            a time: memory-bounded, approximate).
            Peak memory beyond the inputs, measured on 2.6 M pixels of distinct values: exact
            ~53 bytes per pixel (~74 with aupro_definition="mvtec"), binned ~2.
        num_bins: bins of the "binned" method. aupro_thresholds: T of metrics.aupro.
        max_fpr: AUPRO's FPR limit.
        aupro_definition: "mambaad" (metrics.aupro with aupro_thresholds) or "mvtec"
            (metrics.aupro_mvtec: every threshold with method "exact", num_bins thresholds with
            "binned").

    Returns:
        dict with the four pixel metrics, each in [0, 1].
    """
    where = f"class {cls!r}: " if cls is not None else ""
    maps = _squeeze_channel(_as_numpy(maps, "maps"))
    masks = _squeeze_channel(_as_numpy(masks, "masks"))
    if maps.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(f"{where}maps and masks must both be (N, H, W), got "
                         f"{maps.shape} and {masks.shape}")
    _check_finite(maps, "maps", where)
    masks = _check_binary(masks, "masks", where)
    if not masks.any():
        raise ValueError(f"{where}masks has no anomalous pixel; pixel metrics need some")
    if masks.all():
        raise ValueError(f"{where}masks has no normal pixel; pixel metrics need some")
    if aupro_definition not in AUPRO_DEFINITIONS:
        raise ValueError(f"aupro_definition must be one of {sorted(AUPRO_DEFINITIONS)}, got "
                         f"{aupro_definition!r}")
    if method == "exact":
        tps, fps = exact_counts(maps, masks)
    elif method == "binned":
        tps, fps = binned_counts(zip(maps, masks, strict=True), float(maps.min()),
                                 float(maps.max()), num_bins)
    else:
        raise ValueError(f"method must be 'exact' or 'binned', got {method!r}")
    if aupro_definition == "mambaad":
        region = aupro(maps, masks, aupro_thresholds, max_fpr)
    else:
        region = aupro_mvtec(maps, masks, max_fpr, None if method == "exact" else num_bins)
    return {"P-AUROC": auroc_from_counts(tps, fps), "P-AP": ap_from_counts(tps, fps),
            "P-F1max": f1max_from_counts(tps, fps)[0], "AUPRO": region}


def mad(metrics: dict[str, float]) -> float:
    """mAD, the mean of the seven metrics.

    Args:
        metrics: dict holding every name of METRIC_NAMES.

    Returns:
        their mean. Implements: eq. (1).
    """
    missing = [k for k in METRIC_NAMES if k not in metrics]
    if missing:
        raise ValueError(f"mAD needs all seven metrics; missing {missing}")
    return float(np.mean([metrics[k] for k in METRIC_NAMES]))


def undefined_metrics(labels, masks=None) -> dict[str, str]:
    """The metrics that cannot be computed for one class, each with the reason.

    Args:
        labels: (N,) 0/1 image labels. masks: (N, H, W) 0/1 masks, or None (image metrics only).

    Returns:
        {metric: reason}, empty when every metric is defined; mAD is undefined with any other.
    """
    labels = _as_numpy(labels, "labels").astype(bool)
    reasons = {}
    if labels.all() or not labels.any():
        why = "only anomalous test images" if labels.all() else "no anomalous test image"
        reasons.update(dict.fromkeys(IMAGE_METRICS, why))
    if masks is not None:
        masks = _as_numpy(masks, "masks").astype(bool)
        if masks.all() or not masks.any():
            why = "no normal pixel in the masks" if masks.all() else "no defect pixel in the masks"
            reasons.update(dict.fromkeys(PIXEL_METRICS, why))
        if reasons:
            reasons["mAD"] = "undefined: " + ", ".join(k for k in METRIC_NAMES if k in reasons)
    return reasons


def compute_metrics(scores, labels, maps=None, masks=None, *, cls: str | None = None,
                    undefined: str = "raise", **pixel_options) -> dict[str, float]:
    """All metrics of one class: the seven and mAD (or the three image metrics alone).

    Args:
        scores: (N,) image scores. labels: (N,) 0/1.
        maps: (N, H, W) anomaly maps, or None for image metrics only.
        masks: (N, H, W) 0/1 masks; required with maps. An image labelled 0 must have an empty
            mask.
        cls: class name, only for error messages.
        undefined: "raise" (a class with one label, or no defect pixel, is an error) or "mark"
            (its undefined metrics are NaN; `undefined_metrics` gives the reasons).
        **pixel_options: method, num_bins, aupro_thresholds, max_fpr, aupro_definition of
            `pixel_metrics`.

    Returns:
        dict I-AUROC, I-AP, I-F1max, P-AUROC, P-AP, P-F1max, AUPRO, mAD (floats in [0, 1]);
        only the first three when maps is None.
    Implements: the evaluation protocol of chapter 1 (book appendix A.5.2), mAD = their mean.
    """
    if undefined not in ("raise", "mark"):
        raise ValueError(f"undefined must be 'raise' or 'mark', got {undefined!r}")
    where = f"class {cls!r}: " if cls is not None else ""
    if (maps is None) != (masks is None):
        missing = "masks" if masks is None else "maps"
        raise ValueError(f"{where}{missing} is None: pixel metrics need both maps and masks")
    skip = undefined_metrics(labels, masks) if undefined == "mark" else {}
    result = dict.fromkeys(skip, float("nan"))
    if not any(k in skip for k in IMAGE_METRICS):
        result.update(image_metrics(scores, labels, cls=cls))
    if maps is None:
        return {k: result[k] for k in IMAGE_METRICS}
    mask_arr = _squeeze_channel(_as_numpy(masks, "masks"))
    labels_arr = _as_numpy(labels, "labels").astype(bool)
    if mask_arr.shape[:1] != labels_arr.shape:
        raise ValueError(f"{where}masks has {mask_arr.shape[0]} images, labels {len(labels_arr)}")
    marked = mask_arr.reshape(len(mask_arr), -1).any(axis=1)
    if (marked & ~labels_arr).any():
        bad = np.flatnonzero(marked & ~labels_arr)[:5].tolist()
        raise ValueError(f"{where}images {bad} are labelled good but have anomalous mask pixels")
    if not any(k in skip for k in PIXEL_METRICS):
        result.update(pixel_metrics(maps, mask_arr, cls=cls, **pixel_options))
    if "mAD" not in skip:
        result["mAD"] = mad(result)
    return {k: result[k] for k in ALL_KEYS}


def covered_classes(per_class: dict[str, dict[str, float]]) -> dict[str, list[str]]:
    """For each metric, the classes where it is defined (finite): what its mean covers."""
    keys = next(iter(per_class.values()), {})
    return {k: [c for c, m in per_class.items() if np.isfinite(m[k])] for k in keys}


def aggregate(per_class: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the classes where it is defined (the multi-class numbers).

    Args:
        per_class: {class name: metrics dict}, all with the same keys; NaN marks a metric
            undefined for a class (compute_metrics(undefined="mark")).

    Returns:
        {metric: mean over the classes where it is finite (NaN when none)}. With every metric
        defined everywhere, mAD of the means equals the mean of the mADs; `covered_classes`
        says which classes each mean covers.
    """
    if not per_class:
        raise ValueError("per_class is empty: nothing to aggregate")
    keys = [set(m) for m in per_class.values()]
    if any(k != keys[0] for k in keys):
        raise ValueError(f"per_class dicts have different keys: {[sorted(k) for k in keys]}")
    ordered = [k for k in ALL_KEYS if k in keys[0]] + sorted(keys[0] - set(ALL_KEYS))
    covered = covered_classes(per_class)
    return {k: float(np.mean([per_class[c][k] for c in covered[k]])) if covered[k]
            else float("nan") for k in ordered}
