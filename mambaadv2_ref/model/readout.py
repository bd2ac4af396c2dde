"""Readouts normalised by a class's good training images (never by a test image).

`evaluate --readout z` (every metric read from Z) and `studies.image_scores --normalise` (every
image-score rule) use them; the statistics come from the train split only, so no rule or weight
is chosen by looking at the test set. For a run trained with `--set statistics_holdout=K`,
`evaluate --readout z` takes them from its K held-out good training images per class
(`data.holdout`), which the model never trained on.

    z readout        Z(u) = (A(u) - mu(u)) / (sigma(u) + eps)                            (Z1)
                     mu(u), sigma(u): per-pixel mean and standard deviation (ddof = 1) of the
                     smoothed maps A of the N >= 2 good training images,
                     eps = EPS_FRACTION * mean_u sigma(u) (flat regions do not blow up)
    scale-balanced   m_k = mean over training images n and pixels u of Up(a_k)(u)         (Z2)
                     A_bal = G_sigma * sum_k Up(a_k) / m_k     (eq. 2 of `model.anomaly_map`
                     with weights w_k = 1 / m_k; `image_scores.ScaleSubset` with `weights`)

Every rule of `image_scores.RULES` then scores Z (or A_bal) as it scores A.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from mambaadv2_ref.model.anomaly_map import cosine_distance_maps

EPS_FRACTION = 1e-3  # eps of eq. (Z1) as a fraction of the mean per-pixel sigma
STATISTICS_FROM = ("the class's good training images (train split) only; no test image enters "
                   "a statistic")
STATISTICS_FROM_HOLDOUT = ("held-out good training images ({n} per class), never trained on "
                           "(setting statistics_holdout); no test image enters a statistic")
HOLDOUT_SPLIT = "train (held out)"


def pixel_statistics(train_maps: np.ndarray, cls: str) -> dict:
    """Per-pixel statistics of one class's training maps, for eq. (Z1).

    Args:
        train_maps: (N, H, W) smoothed anomaly maps A of the class's good training images.
        cls: the class (named in errors).
    Returns:
        {"mu": (H, W) mean_n A_n(u), "sigma": (H, W) sqrt(sum_n (A_n(u) - mu(u))^2 / (N - 1)),
         "eps": EPS_FRACTION * mean_u sigma(u), "images": N}.
    Raises:
        ValueError: not (N, H, W), N < 2, non-finite maps, or sigma = 0 at every pixel.
    """
    maps = np.asarray(train_maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"train_maps of class {cls!r} must be (N, H, W), got {maps.shape}")
    if len(maps) < 2:
        raise ValueError(f"class {cls!r}: the per-pixel sigma needs at least 2 good training "
                         f"images, got {len(maps)}")
    if not np.isfinite(maps).all():
        raise ValueError(f"train_maps of class {cls!r} hold NaN/inf values")
    sigma = maps.std(axis=0, ddof=1)
    eps = EPS_FRACTION * float(sigma.mean())
    if not eps > 0:
        raise ValueError(f"class {cls!r}: its {len(maps)} training maps are identical at every "
                         "pixel (sigma = 0), so Z is undefined")
    return {"mu": maps.mean(axis=0), "sigma": sigma, "eps": eps, "images": len(maps)}


def readout_record(stats: dict, holdout: dict | None = None) -> dict:
    """What a z readout was computed from, for a results file: {statistics_from, split,
    train_images: {class: N}, eps_fraction, eps: {class: eps}}; `stats`: {class:
    `pixel_statistics`}. With `holdout` ({class: [held-out files]}, a run trained with
    `statistics_holdout`), statistics_from and split say the images were held out of training
    and "held_out" lists them; without, the record is the one earlier versions wrote.

    Implements: no equation.
    """
    return {**statistics_source(list(stats), holdout),
            "train_images": {c: st["images"] for c, st in stats.items()},
            "eps_fraction": EPS_FRACTION, "eps": {c: st["eps"] for c, st in stats.items()}}


def statistics_source(classes: list[str], holdout: dict | None = None) -> dict:
    """Which images a readout's statistics of `classes` came from: {statistics_from, split}
    (the train split), or with `holdout` ({class: [held-out files]}) the held-out images, with
    "held_out": {class: [files]} for `classes`.

    Implements: no equation.
    """
    if not holdout:
        return {"statistics_from": STATISTICS_FROM, "split": "train"}
    counts = sorted({len(holdout[c]) for c in classes})
    return {"statistics_from": STATISTICS_FROM_HOLDOUT.format(n=" or ".join(map(str, counts))),
            "split": HOLDOUT_SPLIT, "held_out": {c: holdout[c] for c in classes}}


def z_maps(maps: np.ndarray, stats: dict, cls: str) -> np.ndarray:
    """Normalised maps Z(u) = (A(u) - mu(u)) / (sigma(u) + eps), eq. (Z1).

    Args:
        maps: (N, H, W) anomaly maps A (e.g. of the test split).
        stats: `pixel_statistics` of the same class's training maps.
        cls: the class (named in errors).
    Returns:
        (N, H, W) float64 Z.
    Raises:
        ValueError: maps not (N, H, W) of the statistics' H x W.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[1:] != stats["mu"].shape:
        raise ValueError(f"maps of class {cls!r} must be (N, H, W) with H, W = "
                         f"{stats['mu'].shape} as its training statistics, got {maps.shape}")
    return (maps - stats["mu"]) / (stats["sigma"] + stats["eps"])


@torch.no_grad()
def scale_means(model, dataset, device, batch_size: int, cls: str) -> np.ndarray:
    """Mean per-scale cosine distance over the good training pixels, m_k of eq. (Z2).

    Args:
        model: an ADModel (forward(images) -> (enc, dec), one entry per scale, finest first).
        dataset: the class's train split (items with image (3, S, S)).
        cls: the class (named in errors).
    Returns:
        (K,) float64 m_k = mean_{n, u} Up(a_k)(u), a_k of eq. (1) of `model.anomaly_map`
        upsampled to S x S (unsmoothed).
    Raises:
        ValueError: no training image, or an m_k not finite and > 0.
    """
    if len(dataset) == 0:
        raise ValueError(f"class {cls!r}: no good training images for the scale means")
    total, pixels = None, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images = batch["image"].to(device)
        enc, dec = model(images)
        size = tuple(images.shape[-2:])
        sums = torch.stack([cosine_distance_maps([f], [g], size).double().sum()
                            for f, g in zip(enc, dec, strict=True)])
        total = sums if total is None else total + sums
        pixels += images.shape[0] * size[0] * size[1]
    means = (total / pixels).cpu().numpy()
    if not (np.isfinite(means) & (means > 0)).all():
        raise ValueError(f"class {cls!r}: the scale means m_k of its training maps must be "
                         f"finite and > 0, got {means.tolist()}")
    return means
