"""viz: the pure plotting functions build the expected axes and artists; widgets build headless."""

import ipywidgets
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from mambaadv2_ref.scans.lti import impulse_response, kernel_matrix
from mambaadv2_ref.viz import plots, widgets
from mambaadv2_ref.viz.chapter import ChapterEnv, setup_chapter


def test_setup_chapter_seeds_and_prints(capsys, monkeypatch):
    monkeypatch.setenv("MAMBAADV2_PROFILE", "tiny")
    env = setup_chapter(seed=3, device="cpu")
    first = torch.rand(2)
    setup_chapter(seed=3, device="cpu")
    torch.testing.assert_close(torch.rand(2), first)
    assert isinstance(env, ChapterEnv) and env.profile.name == "tiny"
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("device=cpu, profile=tiny, scan backend=torch")
    with pytest.raises(ValueError, match="seed"):
        setup_chapter(seed=-1)


def test_plot_curves_one_line_per_curve():
    fig = plots.plot_curves({"a": ([1, 2, 3], [1, 4, 9]), "b": ([1, 2], [0, 1])}, logy=True)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 2 and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="same length"):
        plots.plot_curves({"a": ([1, 2], [1])})


def test_plot_kernels_scales_by_dt():
    kernel = impulse_response(0.1, -1.0, length=10)
    fig = plots.plot_kernels({"k": kernel}, dt=0.1)
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "k"]
    np.testing.assert_allclose(line.get_ydata(), kernel.numpy() / 0.1)
    np.testing.assert_allclose(line.get_xdata(), 0.1 * np.arange(10))


def test_plot_matrices_one_image_and_colorbar_each():
    m = kernel_matrix(impulse_response(0.1, -1.0, length=8))
    fig = plots.plot_matrices({"M": m, "mask": (m != 0).float()})
    images = [ax for ax in fig.axes if ax.get_images() and ax.get_title()]
    assert [ax.get_title() for ax in images] == ["M", "mask"]
    np.testing.assert_allclose(images[0].get_images()[0].get_array(), m.numpy())
    assert len(fig.axes) == 4  # two panels + two colour bars
    with pytest.raises(ValueError, match="2 dimensions"):
        plots.plot_matrices({"v": torch.ones(3)})


def test_ssm_explorer_figure_recurrence_matches_matrix():
    fig = plots.ssm_explorer_figure(dt=0.2, A=-0.3, trap=0.5, angle=1.0, length=16)
    ax_k, ax_m, ax_y = fig.axes[:3]  # then the colour bar
    rec, mat = ax_y.get_lines()
    np.testing.assert_allclose(rec.get_ydata(), mat.get_ydata(), atol=1e-12)
    assert ax_m.get_images()[0].get_array().shape == (16, 16)
    assert len(ax_k.get_lines()) == 2


def test_heatmap_overlay_panels_and_checks():
    image, maps = np.random.rand(8, 8, 3), np.random.rand(8, 8)
    masks = np.zeros((8, 8))
    masks[2:4, 2:4] = 1
    fig = plots.plot_heatmap_overlay(image, maps, masks, alpha=0.3, threshold=0.5)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["image", "anomaly map", "ground-truth mask"]
    assert panels[1].get_images()[1].get_alpha() == 0.3
    assert len(plots.plot_heatmap_overlay(image, maps).axes) == 3  # 2 panels + colour bar
    with pytest.raises(ValueError, match="alpha"):
        plots.plot_heatmap_overlay(image, maps, alpha=2)
    with pytest.raises(ValueError, match="share H, W"):
        plots.plot_heatmap_overlay(image, np.zeros((4, 4)))


def test_image_grid_hides_empty_cells():
    fig = plots.plot_image_grid([np.zeros((4, 4))] * 5, titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 6 and sum(bool(ax.get_images()) for ax in fig.axes) == 5
    with pytest.raises(ValueError, match="one entry per image"):
        plots.plot_image_grid([np.zeros((4, 4))], titles=["a", "b"])


def test_ssm_explorer_widget_builds_and_redraws(monkeypatch):
    drawn = []
    monkeypatch.setattr(widgets, "ssm_explorer_figure",
                        lambda **kw: drawn.append(kw) or Figure())
    box = widgets.ssm_explorer(length=8)
    assert isinstance(box, ipywidgets.VBox) and isinstance(box.children[-1], ipywidgets.Output)
    sliders = box.children[0].children
    assert [s.description for s in sliders] == ["dt", "A", "trapezoid λ", "angle θ"]
    sliders[1].value = -2.0
    assert len(drawn) == 2 and drawn[-1]["A"] == -2.0 and drawn[-1]["length"] == 8
