"""The heatmap overlay that `predict` writes for every image (and the book shows): the image,
its anomaly map over it, and the ground-truth mask when there is one.

A plain `matplotlib.figure.Figure` (not pyplot's), so no display is needed. `to_numpy` is the
array check shared with the book's plots (`viz.plots`).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure


def to_numpy(x, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """x as a float NumPy array with `ndim` dimensions, or a ValueError naming `name`."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, "
                         f"got shape {arr.shape}")
    return arr.astype(np.float64)


def plot_heatmap_overlay(image, maps, masks=None, alpha: float = 0.5,
                         threshold: float | None = None, title: str = "",
                         size: float = 3.0) -> Figure:
    """An image, its anomaly map overlaid, and the ground-truth mask.

    Args:
        image: (H, W, 3) RGB in [0, 1] or (H, W) grey.
        maps: (H, W) anomaly map (any range; drawn with its own colour limits).
        masks: optional (H, W) ground-truth mask in {0, 1}, drawn as a contour and its own panel.
        alpha: opacity of the map over the image, in [0, 1].
        threshold: optional map value; pixels above it are outlined as the predicted region.
        title: title of the overlay panel.
        size: width of each panel in inches.

    Returns:
        Figure with 2 Axes (image, overlay) or 3 (plus the mask).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    image = np.clip(to_numpy(image, "image", (2, 3)), 0, 1)
    maps = to_numpy(maps, "maps", 2)
    if image.shape[:2] != maps.shape:
        raise ValueError(f"image (H, W, 3) and maps (H, W) must share H, W, got {image.shape} "
                         f"and {maps.shape}")
    panels = 2 if masks is None else 3
    fig = Figure(figsize=(size * panels, size), layout="constrained")
    axes = fig.subplots(1, panels)
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(image, cmap="gray")
    overlay = axes[1].imshow(maps, cmap="jet", alpha=alpha)
    fig.colorbar(overlay, ax=axes[1], shrink=0.8)
    axes[1].set_title(title or "anomaly map")
    if threshold is not None:
        axes[1].contour(maps > threshold, levels=[0.5], colors="white", linewidths=1)
    if masks is not None:
        masks = to_numpy(masks, "masks", 2)
        if masks.shape != maps.shape:
            raise ValueError(f"masks must have the shape of maps {maps.shape}, got {masks.shape}")
        if masks.any():
            axes[1].contour(masks, levels=[0.5], colors="red", linewidths=1)
        axes[2].imshow(masks, cmap="gray", vmin=0, vmax=1)
        axes[2].set_title("ground-truth mask")
    for ax in axes:
        ax.set_axis_off()
    return fig
