"""Metrics: image and pixel AUROC / AP / F1max, AUPRO, mAD; per class and mean over classes.

    curves    exact and binned threshold sweeps; AUROC, AP, F1max from counts
    aupro     AUPRO (FPR <= 0.3): "mambaad" (aupro) and "mvtec" (aupro_mvtec) definitions
    summary   compute_metrics (one class), aggregate (mean over classes), mad,
              undefined_metrics / covered_classes (classes where a metric is undefined)
"""

from mambaadv2_ref.metrics.aupro import AUPRO_DEFINITIONS, aupro, aupro_mvtec
from mambaadv2_ref.metrics.curves import f1max_threshold
from mambaadv2_ref.metrics.summary import (
    ALL_KEYS,
    METRIC_NAMES,
    aggregate,
    compute_metrics,
    covered_classes,
    image_metrics,
    mad,
    pixel_metrics,
    undefined_metrics,
)

__all__ = [
    "ALL_KEYS",
    "AUPRO_DEFINITIONS",
    "METRIC_NAMES",
    "aggregate",
    "aupro",
    "aupro_mvtec",
    "compute_metrics",
    "covered_classes",
    "f1max_threshold",
    "image_metrics",
    "mad",
    "pixel_metrics",
    "undefined_metrics",
]
