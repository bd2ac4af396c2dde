"""Metrics: image and pixel AUROC / AP / F1max, AUPRO, mAD; per class and mean over classes.

    curves    exact and binned threshold sweeps; AUROC, AP, F1max from counts
    aupro     AUPRO (FPR <= 0.3), histogram version and loop reference
    summary   compute_metrics (one class), aggregate (mean over classes), mad
"""

from mambaadv2_ref.metrics.aupro import aupro
from mambaadv2_ref.metrics.curves import f1max_threshold
from mambaadv2_ref.metrics.summary import (
    ALL_KEYS,
    METRIC_NAMES,
    aggregate,
    compute_metrics,
    image_metrics,
    mad,
    pixel_metrics,
)

__all__ = [
    "ALL_KEYS",
    "METRIC_NAMES",
    "aggregate",
    "aupro",
    "compute_metrics",
    "f1max_threshold",
    "image_metrics",
    "mad",
    "pixel_metrics",
]
