"""Tests of mambaadv2_ref.viz.scan_explorer: figures of scan paths, locality, plan costs; widget."""

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from mambaadv2_ref.scanning import PLAN_NAMES, build_orders, get_plan, locality_table, plan_cost
from mambaadv2_ref.tables import markdown_table
from mambaadv2_ref.viz.scan_explorer import (
    explorer_figure,
    locality_figure,
    plan_costs_figure,
    plot_scan_path,
    scan_explorer,
    scan_paths_figure,
)


def test_plot_scan_path_draws_the_order():
    ax = Figure().subplots()
    path = plot_scan_path(ax, "hilbert", 5, 7, direction=2, upto=20)
    assert isinstance(path, LineCollection) and len(path.get_segments()) == 19
    order = build_orders("hilbert", 5, 7, 8)[2, :20].numpy()
    first = path.get_segments()[0]
    np.testing.assert_array_equal(first[0], [order[0] % 7, order[0] // 7])  # (x, y) = (col, row)
    np.testing.assert_array_equal(path.get_array(), np.arange(19))  # coloured by time
    assert ax.get_title() == "hilbert, rot90"
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # row 0 at the top, as in an image


def test_figures_have_one_panel_per_item():
    fig = scan_paths_figure(8, 8, directions=(0, 5))
    paths = [ax for ax in fig.axes if any(isinstance(c, LineCollection) for c in ax.collections)]
    assert isinstance(fig, Figure) and len(paths) == 10
    fig = locality_figure(locality_table(4, 4, num_directions=2))
    assert len(fig.axes) == 4 and all(len(ax.patches) == 5 for ax in fig.axes)
    sizes = [(8, 8), (16, 16), (32, 32), (64, 64)]
    fig = plan_costs_figure({name: plan_cost(get_plan(name), sizes) for name in PLAN_NAMES})
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    assert len(heights) == 16 and heights[0] == 128 and heights[-1] == 32768


def test_explorer_figure_shows_path_and_statistics():
    fig = explorer_figure("snake", 4, 6, direction=1, progress=50)
    path_ax, text_ax = fig.axes
    assert len(path_ax.collections[0].get_segments()) == 11  # 12 of 24 pixels drawn
    text = text_ax.texts[0].get_text()
    assert "4 x 6 grid" in text and "max step length: 1" in text


def test_markdown_table():
    table = markdown_table([{"a": 1, "b": 0.123456}], ["a", "b"])
    assert table == "| a | b |\n|---|---|\n| 1 | 0.123 |"


def test_bad_input():
    ax = Figure().subplots()
    with pytest.raises(ValueError, match="direction"):
        plot_scan_path(ax, "hilbert", 4, 4, direction=8)
    with pytest.raises(ValueError, match="upto"):
        plot_scan_path(ax, "hilbert", 4, 4, upto=17)
    with pytest.raises(ValueError, match="progress"):
        explorer_figure("hilbert", 4, 4, progress=101)


def test_scan_explorer_widget_builds_and_redraws():
    pytest.importorskip("ipywidgets")
    box = scan_explorer(curve="zorder", H=4, W=4)
    play, explorer = box.children
    assert play.value == 100
    controls = [w for row in explorer.children[:-1] for w in row.children]
    assert [c.description for c in controls] == ["curve", "direction", "H", "W", "progress %"]
    controls[3].value = 5  # redraws without error
