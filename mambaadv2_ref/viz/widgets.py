"""Thin ipywidgets wrappers: sliders that redraw a figure from `plots.py`.

All the computing lives in pure, tested functions (`plots.ssm_explorer_figure`,
`heatmaps.heatmap_explorer_figure`); a widget here only holds the controls and an Output area.
Every book cell that shows a widget also draws the same figure statically, so the HTML page
shows something without a running kernel.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable

import ipywidgets as widgets
from matplotlib.figure import Figure

from mambaadv2_ref.viz.heatmaps import heatmap_explorer_figure, per_scale_maps
from mambaadv2_ref.viz.plots import ssm_explorer_figure


def figure_output(figure: Figure, dpi: int = 80) -> dict:
    """A Figure as one notebook display_data output (PNG), for an Output widget's `outputs`.

    Setting `outputs` directly, instead of capturing `display()` inside the widget, keeps the
    widget's state self-contained: it is saved with the notebook and needs no output capture
    while a notebook is executed non-interactively.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                     "text/plain": repr(figure)}}


def figure_explorer(draw: Callable[..., Figure], controls: dict[str, widgets.ValueWidget],
                    columns: int = 4) -> widgets.VBox:
    """Controls above an Output area that shows `draw(**values)` and redraws on every change.

    Args:
        draw: function of the controls' values (by keyword) returning a Figure.
        controls: keyword -> widget with a `.value`.
        columns: number of controls per row.

    Returns:
        VBox(rows of controls..., Output). The Output holds the current figure.
    """
    if not controls:
        raise ValueError("controls must hold at least one keyword -> widget pair")
    output = widgets.Output()

    def redraw(_change=None) -> None:
        figure = draw(**{name: c.value for name, c in controls.items()})
        output.outputs = (figure_output(figure),)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    items = list(controls.values())
    rows = [widgets.HBox(items[i:i + columns]) for i in range(0, len(items), columns)]
    return widgets.VBox([*rows, output])


def ssm_explorer(dt: float = 0.1, A: float = -0.5, trap: float = 0.5, angle: float = 2.0,
                 length: int = 32) -> widgets.VBox:
    """SSM explorer: dt, A, trapezoid factor and rotary angle -> `plots.ssm_explorer_figure`.

    Args:
        dt, A, trap, angle: initial slider values (see `scans.lti.impulse_response`).
        length: number of steps shown.

    Returns:
        The widget (sliders and the figure).
    """
    style = {"description_width": "initial"}
    controls = {
        "dt": widgets.FloatLogSlider(value=dt, base=10, min=-2, max=0, step=0.05,
                                     description="dt", style=style),
        "A": widgets.FloatSlider(value=A, min=-5.0, max=0.0, step=0.05, description="A",
                                 style=style),
        "trap": widgets.FloatSlider(value=trap, min=0.0, max=1.0, step=0.05,
                                    description="trapezoid λ", style=style),
        "angle": widgets.FloatSlider(value=angle, min=0.0, max=2 * math.pi, step=0.1,
                                     description="angle θ", style=style),
    }

    def draw(dt, A, trap, angle):
        return ssm_explorer_figure(dt=dt, A=A, trap=trap, angle=angle, length=length)

    return figure_explorer(draw, controls)


def heatmap_explorer(model, dataset, indices, sigma: float = 4.0) -> widgets.VBox:
    """Heatmap explorer: test image, scale, threshold, opacity -> `heatmap_explorer_figure`.

    The model runs once per image shown (cached), through `heatmaps.per_scale_maps`.

    Args:
        model: an ADModel.
        dataset: an MVTecDataset (items with image, mask, cls, kind).
        indices: dataset indices offered in the image menu.
        sigma: Gaussian smoothing of the final map.

    Returns:
        The widget (controls and the figure).
    """
    indices = list(indices)
    if not indices:
        raise ValueError("indices must name at least one dataset item")
    cache: dict[int, tuple] = {}

    def result(i: int):
        if i not in cache:
            item = dataset[i]
            cache[i] = (item, per_scale_maps(model, item["image"][None], sigma))
        return cache[i]

    first_item, first = result(indices[0])
    top = float(first.maps.max())
    style = {"description_width": "initial"}
    options = [(f"{i}: {dataset.samples[i].cls} / {dataset.samples[i].kind}", i) for i in indices]
    controls = {
        "index": widgets.Dropdown(options=options, value=indices[0], description="image",
                                  style=style),
        "scale": widgets.Dropdown(options=[("final map", "all")] + [
            (f"scale {k}", k) for k in range(len(first.scales))], value="all",
            description="scale", style=style),
        "threshold": widgets.FloatSlider(value=0.6 * top, min=0.0, max=1.5 * top,
                                         step=top / 100 or 0.01, description="threshold",
                                         style=style, readout_format=".3f"),
        "alpha": widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05,
                                     description="opacity", style=style),
    }

    def draw(index, scale, threshold, alpha):
        item, res = result(index)
        return heatmap_explorer_figure(item["image"], item["mask"], res, scale=scale,
                                       threshold=threshold, alpha=alpha)

    return figure_explorer(draw, controls)
