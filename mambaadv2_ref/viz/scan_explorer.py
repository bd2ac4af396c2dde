"""Pictures of scan orders and scan plans, and the scan-explorer widget (chapters 6 and 9).

Pure plotting functions draw on a given Axes or return a `matplotlib.figure.Figure` (not pyplot's),
so tests build them without a display; `scan_explorer()` is a thin ipywidgets wrapper that redraws
`explorer_figure` when a control moves.

Glossary: curve -> scan curve name (scanning.curves), direction -> index k into the 8 directions
of `build_orders(curve, H, W, 8)`, upto -> number of visited pixels drawn, table -> the dict of
`locality_table`, costs -> {plan name: plan_cost rows}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from mambaadv2_ref.scanning import CURVES, build_orders, direction_names, locality_stats

LOCALITY_LABELS = {
    "mean_step": "mean step length",
    "max_step": "max step length",
    "frac_adjacent": "share of 4-adjacent steps",
    "neighbour_distance": "mean neighbour gap N",
    "neighbour_distance_geo": "geometric mean gap",
    "neighbour_distance_k": "mean gap, best of K",
    "neighbour_distance_geo_k": "geometric gap, best of K",
}


def plot_scan_path(ax: Axes, curve: str, H: int, W: int, direction: int = 0,
                   upto: int | None = None, cmap: str = "viridis") -> LineCollection:
    """Draw one scan order over its H x W grid, coloured by time.

    Args:
        ax: the Axes to draw on (rows go down, as in an image).
        curve: scan curve name.
        H, W: grid height and width.
        direction: k in 0..7, index into the 8 directions of build_orders (see direction_names).
        upto: draw only the first `upto` visited pixels (None: all H*W), for animation.
        cmap: colormap of the time axis.
    Returns:
        the LineCollection of the path (one segment per step, coloured by its time step).
    """
    if not 0 <= direction < 8:
        raise ValueError(f"direction must be in 0..7, got {direction!r}")
    L = H * W
    upto = L if upto is None else upto
    if not 1 <= upto <= L:
        raise ValueError(f"upto must be in 1..H*W={L}, got {upto!r}")
    order = build_orders(curve, H, W, 8)[direction, :upto].numpy()
    cols, rows = order % W, order // W  # x = column, y = row
    points = np.stack([cols, rows], axis=1).astype(float)  # (upto, 2)
    segments = np.stack([points[:-1], points[1:]], axis=1)  # (upto - 1, 2, 2)
    path = LineCollection(segments, cmap=cmap, linewidths=2.0)
    path.set_array(np.arange(len(segments), dtype=float))
    path.set_clim(0, max(L - 2, 1))
    ax.add_collection(path)
    ax.scatter(np.arange(L) % W, np.arange(L) // W, s=6, c="0.8", zorder=0)  # the grid
    ax.plot(cols[0], rows[0], "o", color="tab:green", markersize=7, label="start")
    ax.plot(cols[-1], rows[-1], "s", color="tab:red", markersize=7, label=f"t={upto - 1}")
    ax.set_xlim(-0.6, W - 0.4)
    ax.set_ylim(H - 0.4, -0.6)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{curve}, {direction_names(8)[direction]}", fontsize=9)
    return path


def scan_paths_figure(H: int, W: int, curves: Sequence[str] = CURVES,
                      directions: Sequence[int] = (0,), upto: int | None = None,
                      ncols: int = 5, panel_size: float = 2.2) -> Figure:
    """A grid of scan paths: every curve in `curves` for every direction in `directions`.

    Returns:
        Figure with len(curves) * len(directions) path panels, `ncols` per row.
    """
    panels = [(curve, k) for k in directions for curve in curves]
    if not panels:
        raise ValueError("curves and directions must each hold at least one entry")
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows * H / W + 0.3),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (curve, k) in zip(axes, panels, strict=False):
        plot_scan_path(ax, curve, H, W, k, upto)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    return fig


def plot_locality(ax: Axes, table: Mapping[str, Mapping[str, float]], key: str):
    """Bar chart of one locality statistic for every curve of a `locality_table`.

    Returns:
        the BarContainer (one bar per curve).
    """
    if key not in LOCALITY_LABELS:
        raise ValueError(f"key must be one of {list(LOCALITY_LABELS)}, got {key!r}")
    names = list(table)
    bars = ax.bar(names, [table[name][key] for name in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_title(LOCALITY_LABELS[key], fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return bars


def locality_figure(table: Mapping[str, Mapping[str, float]],
                    keys: Sequence[str] = ("mean_step", "frac_adjacent", "neighbour_distance_geo",
                                           "neighbour_distance_geo_k")) -> Figure:
    """One bar chart per locality statistic, side by side.

    Returns:
        Figure with len(keys) Axes.
    """
    fig = Figure(figsize=(3.0 * len(keys), 2.8), layout="constrained")
    for ax, key in zip(np.atleast_1d(fig.subplots(1, len(keys))), keys, strict=True):
        plot_locality(ax, table, key)
    return fig


def explorer_figure(curve: str, H: int, W: int, direction: int = 0,
                    progress: float = 100.0) -> Figure:
    """The scan explorer's picture: the path so far, and the locality statistics of the order.

    Args:
        curve, H, W, direction: as in plot_scan_path.
        progress: percentage of the H*W pixels drawn (0..100; at least one pixel).
    Returns:
        Figure with two Axes: the path and a text panel of locality_stats.
    """
    if not 0 <= progress <= 100:
        raise ValueError(f"progress must be in [0, 100], got {progress!r}")
    upto = max(1, round(progress / 100 * H * W))
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    path_ax, text_ax = fig.subplots(1, 2, width_ratios=[1.4, 1])
    plot_scan_path(path_ax, curve, H, W, direction, upto)
    stats = locality_stats(build_orders(curve, H, W, 8)[direction], H, W)
    lines = [f"{H} x {W} grid, L = {H * W}", f"drawn: {upto} pixels", ""]
    lines += [f"{LOCALITY_LABELS[key]}: {value:.3g}" for key, value in stats.items()]
    text_ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace",
                 fontsize=9, transform=text_ax.transAxes)
    text_ax.set_axis_off()
    return fig


def plot_plan_costs(ax: Axes, costs: Mapping[str, list[dict]]):
    """Grouped bars: scanned tokens (H_s W_s K_s) per stage for each plan of `costs`.

    Args:
        ax: the Axes to draw on.
        costs: {plan name: plan_cost rows (the per-stage rows, then the "total" row)}.
    Returns:
        list of BarContainers, one per plan.
    """
    if not costs:
        raise ValueError("costs must hold at least one plan name -> plan_cost rows")
    names = list(costs)
    stages = [row for row in costs[names[0]] if row["stage"] != "total"]
    x = np.arange(len(stages))
    width = 0.8 / len(names)
    containers = []
    for i, name in enumerate(names):
        rows = [row for row in costs[name] if row["stage"] != "total"]
        if len(rows) != len(stages):
            raise ValueError(f"plan {name!r} has {len(rows)} stages, expected {len(stages)}")
        containers.append(ax.bar(x + (i - (len(names) - 1) / 2) * width,
                                 [row["scanned_tokens"] for row in rows], width, label=name))
    ax.set_xticks(x, [f"stage {row['stage']}\n{row['size']}" for row in stages])
    ax.set_ylabel("scanned tokens (H W K)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return containers


def plan_costs_figure(costs: Mapping[str, list[dict]], title: str = "") -> Figure:
    """plot_plan_costs on its own Figure (one Axes)."""
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    plot_plan_costs(ax, costs)
    ax.set_title(title, fontsize=10)
    return fig


def scan_explorer(curve: str = "hilbert", H: int = 8, W: int = 8, direction: int = 0):
    """Interactive scan explorer: curve, direction, grid size and a progress slider with Play.

    Args:
        curve, H, W, direction: initial values of the controls.
    Returns:
        ipywidgets VBox: a Play button (animates the progress slider) above
        `viz.widgets.figure_explorer(explorer_figure, ...)` (controls and the figure).
    """
    import ipywidgets as widgets

    from mambaadv2_ref.viz.widgets import figure_explorer

    names = direction_names(8)
    controls = {
        "curve": widgets.Dropdown(options=list(CURVES), value=curve, description="curve"),
        "direction": widgets.Dropdown(options=[(name, k) for k, name in enumerate(names)],
                                      value=direction, description="direction"),
        "H": widgets.IntSlider(value=H, min=1, max=32, description="H"),
        "W": widgets.IntSlider(value=W, min=1, max=32, description="W"),
        "progress": widgets.IntSlider(value=100, min=0, max=100, step=2,
                                      description="progress %"),
    }
    play = widgets.Play(value=100, min=0, max=100, step=2, interval=200, description="play")
    widgets.jslink((play, "value"), (controls["progress"], "value"))
    return widgets.VBox([play, figure_explorer(explorer_figure, controls, columns=3)])
