"""viz: the pure plotting functions build the expected axes and artists; widgets build headless."""

import ipywidgets
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from mambaadv2_ref import overlay
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


def test_plot_against_band_fills_only_the_dots_outside_the_band():
    entries = [{"ablation": "a", "seeds": [42], "raw mAD": 61.0, "raw beyond": True,
                "z mAD": 66.0, "z beyond": False},
               {"ablation": "b", "seeds": [42, 0], "raw mAD": 60.1, "raw beyond": False,
                "z mAD": None, "z beyond": None}]
    spread = {"raw": {"mean": 60.0, "std": 0.2, "n": 3}, "z": {"mean": 66.5, "std": 1.0, "n": 3}}
    fig = plots.plot_against_band(entries, spread)
    raw, z = fig.axes
    filled = [line.get_markerfacecolor() for line in raw.get_lines() if line.get_marker() == "o"]
    assert filled[0] != "none" and filled[1] == "none"
    assert len([line for line in z.get_lines() if line.get_marker() == "o"]) == 1  # b has no z
    assert [t.get_text() for t in raw.get_yticklabels()] == ["a (1)", "b (2)"]
    (band,) = raw.patches
    assert band.get_x() == pytest.approx(59.6) and band.get_width() == pytest.approx(0.8)


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
    fig = overlay.plot_heatmap_overlay(image, maps, masks, alpha=0.3, threshold=0.5)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["image", "anomaly map", "ground-truth mask"]
    assert panels[1].get_images()[1].get_alpha() == 0.3
    assert len(overlay.plot_heatmap_overlay(image, maps).axes) == 3  # 2 panels + colour bar
    with pytest.raises(ValueError, match="alpha"):
        overlay.plot_heatmap_overlay(image, maps, alpha=2)
    with pytest.raises(ValueError, match="share H, W"):
        overlay.plot_heatmap_overlay(image, np.zeros((4, 4)))


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
    (shown,) = box.children[-1].outputs            # the current figure only, as a PNG
    assert shown["output_type"] == "display_data" and shown["data"]["image/png"]


class _TwoScaleModel(torch.nn.Module):
    """A stand-in ADModel: enc = two pooled copies of the image, dec = enc flipped at one pixel."""

    def forward(self, images):
        enc = [torch.nn.functional.avg_pool2d(images, k) for k in (4, 8)]
        dec = [e.clone() for e in enc]
        dec[0][:, :, 1, 1] *= -1.0                     # opposite direction: distance 2
        return enc, dec


def test_per_scale_maps_uses_the_model_map_code():
    from mambaadv2_ref.model.anomaly_map import anomaly_maps
    from mambaadv2_ref.viz.heatmaps import per_scale_maps

    model, images = _TwoScaleModel(), torch.rand(2, 3, 32, 32)
    result = per_scale_maps(model, images)
    enc, dec = model(images)
    maps, scores = anomaly_maps(enc, dec, (32, 32))
    torch.testing.assert_close(result.maps, maps)
    torch.testing.assert_close(result.scores, scores)
    assert len(result.scales) == 2 and result.scales[1].abs().max() < 1e-5
    assert result.scales[0][0, 4:8, 4:8].max() > 0.1                       # the bump at (1, 1)
    with pytest.raises(ValueError, match="images must be"):
        per_scale_maps(model, torch.rand(3, 32, 32))


def test_heatmap_explorer_figure_panels():
    from mambaadv2_ref.viz.heatmaps import per_scale_maps

    images = torch.rand(2, 3, 32, 32)
    result = per_scale_maps(_TwoScaleModel(), images)
    masks = torch.zeros(32, 32)
    masks[4:8, 4:8] = 1
    fig = widgets.heatmap_explorer_figure(images[1], masks, result, index=1, scale=0,
                                          threshold=0.1, alpha=0.4)
    titles = [ax.get_title() for ax in fig.get_axes() if ax.get_title()]
    assert titles[0] == "image" and titles[1].startswith("scale 0, score")
    assert titles[-3:] == ["scale 0 (stride 4)", "scale 1 (stride 8)", "final (smoothed)"]
    assert isinstance(fig, Figure)
    with pytest.raises(ValueError, match="scale must be"):
        widgets.heatmap_explorer_figure(images[0], None, result, scale=5)


def test_heatmap_explorer_widget_builds_and_caches(monkeypatch):
    calls = []
    real = widgets.per_scale_maps
    monkeypatch.setattr(widgets, "per_scale_maps",
                        lambda m, x, s: calls.append(1) or real(m, x, s))

    class _Data:
        samples = [type("S", (), {"cls": "a", "kind": k})() for k in ("good", "scratch")]

        def __getitem__(self, i):
            return {"image": torch.rand(3, 32, 32), "mask": torch.zeros(1, 32, 32)}

    box = widgets.heatmap_explorer(_TwoScaleModel(), _Data(), [0, 1])
    index, scale, threshold, alpha = box.children[0].children
    scale.value = 0
    index.value = 1
    index.value = 0
    assert len(calls) == 2  # one model run per image, cached afterwards
    assert [o[1] for o in scale.options] == ["all", 0, 1]
