"""Per-scale anomaly maps of one model and the heatmap explorer's figure.

`per_scale_maps` runs the model once and returns, besides the final map and score, the
upsampled cosine distance of every scale, computed by the model package's own anomaly-map code
(`model.anomaly_map.cosine_distance_maps` / `anomaly_maps`), so the explorer shows exactly what
the model scores. `heatmap_explorer_figure` draws one image's result.

Glossary: enc -> f_k, dec -> g_k, scales -> Up(a_k) of eq. (1) of model.anomaly_map, maps -> A,
scores -> max A, masks -> ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from mambaadv2_ref.data.transforms import denormalise
from mambaadv2_ref.model.anomaly_map import anomaly_maps, cosine_distance_maps


@dataclass(frozen=True)
class ScaleMaps:
    """A model's maps for a batch of images.

    Attributes:
        scales: list of (B, H, W) upsampled per-scale cosine distances Up(a_k), finest first.
        maps: (B, H, W) final anomaly maps (sum of the scales, Gaussian-smoothed).
        scores: (B,) image scores (max of maps).
    """

    scales: list[torch.Tensor]
    maps: torch.Tensor
    scores: torch.Tensor


@torch.no_grad()
def per_scale_maps(model: torch.nn.Module, images: torch.Tensor, sigma: float = 4.0) -> ScaleMaps:
    """Per-scale and final anomaly maps of `model` for `images`.

    Args:
        model: an ADModel (forward(images) -> (enc, dec) lists of (B, C_k, H_k, W_k)).
        images: (B, 3, H, W) ImageNet-normalised.
        sigma: Gaussian smoothing of the final map (MambaAD: 4).

    Returns:
        ScaleMaps on the CPU; `maps` and `scores` equal `model.anomaly_map(images, sigma)`.

    Implements: eqs. (1)-(3) of model.anomaly_map, keeping eq. (1) per scale.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images))}")
    was_training = model.training
    model.eval()
    try:
        enc, dec = model(images)
    finally:
        model.train(was_training)
    size = tuple(images.shape[-2:])
    scales = [cosine_distance_maps([f], [g], size).cpu() for f, g in zip(enc, dec, strict=True)]
    maps, scores = anomaly_maps(enc, dec, size, sigma)
    return ScaleMaps(scales, maps.cpu(), scores.cpu())


def heatmap_explorer_figure(image: torch.Tensor, masks: torch.Tensor | None, result: ScaleMaps,
                            index: int = 0, scale: str | int = "all",
                            threshold: float | None = None, alpha: float = 0.5,
                            title: str = "") -> Figure:
    """One image: the image, the chosen map over it, the ground truth, and every scale's map.

    Args:
        image: (3, H, W) ImageNet-normalised image.
        masks: (H, W) or (1, H, W) ground truth in {0, 1}, or None.
        result: ScaleMaps of a batch that contains the image at `index`.
        index: position of the image in the batch of `result`.
        scale: "all" (the final map) or k, the index of one scale (0 = finest).
        threshold: map value outlined in white on the overlay (None: no outline).
        alpha: overlay opacity in [0, 1].
        title: overlay title (default: the score).

    Returns:
        Figure: a top row (image, overlay, ground truth) and a bottom row with one panel per
        scale plus the final map, all on their own colour scale.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    num_scales = len(result.scales)
    if scale != "all" and scale not in range(num_scales):
        raise ValueError(f"scale must be 'all' or an int in [0, {num_scales}), got {scale!r}")
    if not 0 <= index < result.maps.shape[0]:
        raise ValueError(f"index must be in [0, {result.maps.shape[0]}), got {index}")
    rgb = denormalise(image.cpu()).clamp(0, 1).permute(1, 2, 0).numpy()
    chosen = (result.maps if scale == "all" else result.scales[scale])[index].numpy()
    fig = Figure(figsize=(3.0 * max(3, num_scales + 1), 6.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    ax_img, ax_over, ax_gt = top.subplots(1, 3)
    ax_img.imshow(rgb)
    ax_img.set_title("image")
    ax_over.imshow(rgb)
    overlay = ax_over.imshow(chosen, cmap="jet", alpha=alpha)
    top.colorbar(overlay, ax=ax_over, shrink=0.8)
    name = "final map" if scale == "all" else f"scale {scale}"
    ax_over.set_title(title or f"{name}, score {float(result.scores[index]):.3f}")
    if threshold is not None:
        ax_over.contour(chosen > threshold, levels=[0.5], colors="white", linewidths=1)
    if masks is not None:
        gt = masks.reshape(rgb.shape[:2]).cpu().numpy()
        ax_gt.imshow(gt, cmap="gray", vmin=0, vmax=1)
        if gt.any():
            ax_over.contour(gt, levels=[0.5], colors="red", linewidths=1)
    ax_gt.set_title("ground truth" if masks is not None else "no ground truth")
    panels = [*(s[index].numpy() for s in result.scales), result.maps[index].numpy()]
    names = [f"scale {k} (stride {4 * 2 ** k})" for k in range(num_scales)] + ["final (smoothed)"]
    for ax, panel, panel_name in zip(np.atleast_1d(bottom.subplots(1, len(panels))), panels,
                                     names, strict=True):
        ax.imshow(panel, cmap="jet")
        ax.set_title(panel_name, fontsize="small")
    for ax in fig.get_axes():
        if ax.get_images():
            ax.set_axis_off()
    return fig


def z_readout_figure(image: torch.Tensor, mask: torch.Tensor | None, amap: np.ndarray,
                     stats: dict, title: str = "") -> Figure:
    """One image read both ways: its map A, the class's training mu and sigma, and Z.

    Args:
        image: (3, H, W) ImageNet-normalised image.
        mask: (H, W) or (1, H, W) ground truth in {0, 1} (outlined in white), or None.
        amap: (H, W) anomaly map A of the image (eq. (2) of `model.anomaly_map`).
        stats: the class's `model.readout.pixel_statistics` (mu, sigma (H, W), eps, images).
        title: figure title.

    Returns:
        Figure with five panels: the image, A, mu, sigma and Z = (A - mu) / (sigma + eps)
        (eq. (Z1) of `model.readout`), each map on its own colour scale with its maximum marked.
    """
    from mambaadv2_ref.model.readout import z_maps

    amap = np.asarray(amap, dtype=np.float64)
    z = z_maps(amap[None], stats, "this image's class")[0]
    outline = None if mask is None else np.asarray(mask).reshape(amap.shape) > 0.5
    fig = Figure(figsize=(15, 3.4), layout="constrained")
    axes = fig.subplots(1, 5)
    axes[0].imshow(denormalise(image.cpu()).clamp(0, 1).permute(1, 2, 0).numpy())
    axes[0].set_title("image")
    n = stats["images"]
    panels = ((amap, "map A"), (stats["mu"], f"mu: mean of {n} good training maps"),
              (stats["sigma"], "sigma: their std"), (z, "Z = (A - mu) / (sigma + eps)"))
    for ax, (values, name) in zip(axes[1:], panels, strict=True):
        shown = ax.imshow(values, cmap="jet")
        fig.colorbar(shown, ax=ax, shrink=0.8)
        row, col = np.unravel_index(np.argmax(values), values.shape)
        ax.plot(col, row, marker="x", color="white", markersize=9, mew=2)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        if outline is not None and outline.any():
            ax.contour(outline, levels=[0.5], colors="white", linewidths=1)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig
