"""The readouts normalised by the good training images (`model.readout`, used by
`image_scores --normalise`): eq. (Z1) per pixel, eq. (Z2) per scale, the z and scale-balanced
detectors in the study's output with their training-image counts, and named errors (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mambaadv2_ref.model.readout import (
    EPS_FRACTION,
    pixel_statistics,
    scale_means,
    z_maps,
)
from mambaadv2_ref.studies import image_scores
from mambaadv2_ref.studies.image_scores import RULES, ScaleSubset, score_rules


def _small_model():
    from mambaadv2_ref.model import build_model

    torch.manual_seed(0)
    return build_model("mambaadv2", profile="tiny", pretrained=False,
                       dims=(16, 8, 8, 8), headdim=8, d_state=4, num_directions=2).eval()


def test_z_of_the_training_mean_is_zero_and_eps_is_a_fraction_of_the_mean_sigma():
    rng = np.random.default_rng(0)
    train = rng.random((6, 8, 8))
    stats = pixel_statistics(train, "a")
    assert stats["images"] == 6
    np.testing.assert_allclose(stats["sigma"], train.std(axis=0, ddof=1))
    assert stats["eps"] == pytest.approx(EPS_FRACTION * train.std(axis=0, ddof=1).mean())
    np.testing.assert_array_equal(z_maps(stats["mu"][None], stats, "a"), 0.0)
    one_sigma = z_maps((stats["mu"] + stats["sigma"])[None], stats, "a")[0]
    np.testing.assert_allclose(one_sigma, stats["sigma"] / (stats["sigma"] + stats["eps"]))


def _z_rows(train, test, labels):
    stats = pixel_statistics(train, "c")
    rows = score_rules({"c": {"maps": z_maps(test, stats, "c"), "labels": labels}})
    return {r["rule"]: r for r in rows}


def test_z_rules_ignore_a_per_pixel_offset_and_scale_of_train_and_test_maps():
    """A(u) -> a(u) A(u) + b(u) in both splits: Z (and so every z rule) stays; the raw rules
    do not (the test would fail for a readout that ignored the training statistics)."""
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(8), np.ones(8)].astype(int)
    train, test = rng.random((12, 16, 16)), rng.random((16, 16, 16))
    test[8:, 4:8, 4:8] += 0.8 * rng.random((8, 1, 1))  # anomalies: a spot of varying strength
    offset, scale = 5 * rng.random((16, 16)), 0.2 + 3 * rng.random((16, 16))
    before = _z_rows(train, test, labels)
    exact = _z_rows(3.0 * train + offset, 3.0 * test + offset, labels)  # a global scale
    after = _z_rows(scale * train + offset, scale * test + offset, labels)  # per pixel
    for rule in RULES:
        np.testing.assert_allclose(exact[rule]["scores"]["c"], before[rule]["scores"]["c"],
                                   rtol=1e-9)
        np.testing.assert_allclose(after[rule]["scores"]["c"], before[rule]["scores"]["c"],
                                   rtol=2e-2, atol=1e-3)  # eps: not scaled per pixel
        assert after[rule]["metrics"] == pytest.approx(before[rule]["metrics"])
    raw = {r["rule"]: r["metrics"]["I-AUROC"]
           for r in score_rules({"c": {"maps": test, "labels": labels}})}
    raw_after = {r["rule"]: r["metrics"]["I-AUROC"]
                 for r in score_rules({"c": {"maps": scale * test + offset, "labels": labels}})}
    assert raw != raw_after


def test_bad_inputs_raise_errors_naming_the_argument_or_class():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="class 'screw'.*at least 2 good training images"):
        pixel_statistics(rng.random((1, 4, 4)), "screw")
    with pytest.raises(ValueError, match="class 'screw'.*sigma = 0"):
        pixel_statistics(np.ones((3, 4, 4)), "screw")
    with pytest.raises(ValueError, match="train_maps of class 'screw' must be"):
        pixel_statistics(rng.random((3, 4)), "screw")
    with pytest.raises(ValueError, match="NaN"):
        pixel_statistics(np.full((3, 4, 4), np.nan), "screw")
    stats = pixel_statistics(rng.random((3, 4, 4)), "screw")
    with pytest.raises(ValueError, match="maps of class 'screw'.*got \\(2, 5, 5\\)"):
        z_maps(rng.random((2, 5, 5)), stats, "screw")
    model = _small_model()
    for weights in ((1.0, 1.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0)):
        with pytest.raises(ValueError, match="weights must be one finite value > 0"):
            ScaleSubset(model, (0, 1, 2), weights)
    with pytest.raises(ValueError, match="class 'screw': no good training images"):
        scale_means(model, [], "cpu", 2, "screw")


def test_scale_balanced_map_is_eq_2_with_weights_one_over_the_training_scale_means():
    """Weights 1 give the model's map; weights w_k give sum_k w_k (G * Up(a_k)) (the blur is
    linear); m_k is the mean of the unsmoothed single-scale maps over the training images."""
    model = _small_model()
    images = torch.randn(4, 3, 64, 64)
    maps, scores = model.anomaly_map(images)
    ones, ones_scores = ScaleSubset(model, (0, 1, 2), (1.0, 1.0, 1.0)).anomaly_map(images)
    torch.testing.assert_close(ones, maps)
    torch.testing.assert_close(ones_scores, scores)
    weights = (0.5, 2.0, 3.0)
    weighted, _ = ScaleSubset(model, (0, 1, 2), weights).anomaly_map(images)
    single = [ScaleSubset(model, (k,)).anomaly_map(images)[0] for k in range(3)]
    torch.testing.assert_close(weighted, sum(w * m for w, m in zip(weights, single, strict=True)))
    dataset = [{"image": im} for im in images]
    expected = [ScaleSubset(model, (k,)).anomaly_map(images, sigma=0)[0].double().mean().item()
                for k in range(3)]
    np.testing.assert_allclose(scale_means(model, dataset, "cpu", 3, "c"), expected, rtol=1e-6)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mambaadv2_ref.data import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.mktemp("data"), image_size=64, num_train=4)


def test_normalise_adds_z_and_balanced_detectors_with_their_training_counts(data, tmp_path,
                                                                           monkeypatch):
    """`--normalise`: raw, z, balanced, balanced z; the z maps use the training maps' mu and
    sigma (recomputed here from the train split); the counts are recorded; `paired` compares
    the raw max with the z max of the same run."""
    from mambaadv2_ref.data import MVTecDataset
    from mambaadv2_ref.evaluate import predict_split

    model = _small_model()
    meta = {"model": "mambaadv2", "step": 0, "profile": "tiny", "encoder": "x",
            "train": {"classes": ["alpha", "beta"], "image_size": 64, "data": str(data)}}
    monkeypatch.setattr(image_scores, "load_detector", lambda run, device: (model, meta))
    image_scores.main(["--run", "fake", "--normalise", "--device", "cpu",
                       "--out", str(tmp_path / "n.json")])
    result = json.loads((tmp_path / "n.json").read_text())
    dets = [d["detector"] for d in result["detectors"]]
    assert [image_scores._label(d) for d in dets] == [
        "mambaadv2", "mambaadv2 z", "mambaadv2 balanced", "mambaadv2 balanced z"]
    assert [(d["readout"], d["scale_weights"]) for d in dets] == [
        ("raw", "equal"), ("z", "equal"), ("raw", "1/m_k"), ("z", "1/m_k")]
    for d in (dets[1], dets[3]):
        assert d["normalisation"]["split"] == "train"
        assert d["normalisation"]["train_images"] == {"alpha": 4, "beta": 4}
        assert "training images" in d["normalisation"]["statistics_from"]
    assert dets[2]["scale_means_from"]["train_images"] == {"alpha": 4, "beta": 4}
    assert all(len(m) == 3 and min(m) > 0 for m in dets[2]["scale_means"].values())
    for det in result["detectors"]:
        assert [r["rule"] for r in det["rows"]] == list(RULES)
    cpu = torch.device("cpu")
    split = {s: predict_split(model, MVTecDataset(data, "alpha", s, 64), cpu)["maps"]
             for s in ("train", "test")}
    z_max = next(r for r in result["detectors"][1]["rows"] if r["rule"] == "max")
    expected = z_maps(split["test"], pixel_statistics(split["train"], "alpha"), "alpha")
    np.testing.assert_allclose(z_max["scores"]["alpha"], expected.reshape(4, -1).max(1),
                               rtol=1e-5)
    raw_z = next(p for p in result["paired"] if p["run_a"] == p["run_b"]
                 and (p["readout_a"], p["readout_b"]) == ("raw", "z")
                 and p["weights_a"] == p["weights_b"] == "equal")
    rows = [{r["rule"]: r for r in d["rows"]}["max"] for d in result["detectors"][:2]]
    for cls in ("alpha", "beta"):
        assert raw_z["classes"][cls]["D"] == pytest.approx(
            rows[0]["classes"][cls]["I-AUROC"] - rows[1]["classes"][cls]["I-AUROC"])
    image_scores.main(["--run", "fake", "--device", "cpu", "--out", str(tmp_path / "r.json")])
    (plain,) = json.loads((tmp_path / "r.json").read_text())["detectors"]
    assert plain["detector"]["readout"] == "raw" and "normalisation" not in plain["detector"]


def test_evaluate_readout_z_reads_every_metric_from_z_and_keeps_the_raw_metrics(data, tmp_path,
                                                                                 monkeypatch):
    """`evaluate --readout z`: the same Z as the study's z detector (its I-AUROC per class equal),
    written to metrics_z.json with its training counts, beside an untouched metrics.json; an
    unknown readout is refused before any work."""
    from mambaadv2_ref import evaluate as evaluate_module
    from mambaadv2_ref.cli import main as cli_main

    model = _small_model()
    meta = {"model": "mambaadv2", "step": 0, "profile": "tiny", "encoder": "x",
            "train": {"classes": ["alpha", "beta"], "image_size": 64, "data": str(data)}}
    monkeypatch.setattr(image_scores, "load_detector", lambda run, device: (model, meta))
    monkeypatch.setattr(evaluate_module, "load_detector", lambda run, device: (model, meta))
    image_scores.main(["--run", "fake", "--normalise", "--device", "cpu",
                       "--out", str(tmp_path / "n.json")])
    study_z = json.loads((tmp_path / "n.json").read_text())["detectors"][1]
    assert study_z["detector"]["readout"] == "z"
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ValueError, match="readout"):
        evaluate_module.evaluate(run, device="cpu", readout="zz")
    assert not any(run.iterdir())
    raw = evaluate_module.evaluate(run, device="cpu")
    before = (run / "metrics.json").read_text()
    cli_main(["evaluate", "--run", str(run), "--device", "cpu", "--readout", "z",
              "--save-maps"])
    z = json.loads((run / "metrics_z.json").read_text())
    assert (run / "metrics.json").read_text() == before  # the raw metrics are kept
    assert raw["readout"]["name"] == "raw" and z["readout"]["name"] == "z"
    assert z["readout"]["train_images"] == {"alpha": 4, "beta": 4}
    assert z["readout"]["split"] == "train"
    z_max = {r["rule"]: r for r in study_z["rows"]}["max"]
    for cls in ("alpha", "beta"):
        assert 100 * z["classes"][cls]["I-AUROC"] == pytest.approx(
            z_max["classes"][cls]["I-AUROC"])
    saved = np.load(run / "maps_z" / "alpha.npz")
    np.testing.assert_allclose(saved["scores"], saved["maps"].reshape(4, -1).max(1))
    np.testing.assert_allclose(saved["scores"], z_max["scores"]["alpha"], rtol=1e-5)


def test_predict_readout_z_scores_images_as_evaluate_read_them(data, tmp_path, monkeypatch):
    """`predict --readout z` reads each map with the statistics `evaluate --readout z` saved:
    the scores of the test images equal evaluate's z scores; without those statistics, without
    a class, or with statistics of another step it refuses before scoring anything."""
    from mambaadv2_ref import evaluate as evaluate_module
    from mambaadv2_ref import predict as predict_module

    model = _small_model()
    meta = {"model": "mambaadv2", "step": 3, "profile": "tiny", "encoder": "x",
            "train": {"classes": ["alpha", "beta"], "image_size": 64, "data": str(data)}}
    for module in (evaluate_module, predict_module):
        monkeypatch.setattr(module, "load_detector", lambda run, device: (model, meta))
    run = tmp_path / "run"
    run.mkdir()
    images = data / "alpha" / "test" / "good"
    with pytest.raises(ValueError, match="readout z"):  # nothing evaluated with z yet
        predict_module.predict(run, images, tmp_path / "p0", cls="alpha", device="cpu",
                               readout="z")
    evaluate_module.evaluate(run, device="cpu", readout="z", save_maps=True)
    assert sorted(p.name for p in (run / "readout_z").iterdir()) == ["alpha.npz", "beta.npz"]
    with pytest.raises(ValueError, match="--class"):  # two classes: which statistics?
        predict_module.predict(run, images, tmp_path / "p1", device="cpu", readout="z")
    rows = predict_module.predict(run, images, tmp_path / "p2", cls="alpha", device="cpu",
                                  readout="z")
    saved = np.load(run / "maps_z" / "alpha.npz")
    by_path = dict(zip(map(str, saved["paths"]), saved["scores"], strict=True))
    assert len(rows) == 2 and all(row["path"] in by_path for row in rows)
    for row in rows:
        assert row["score"] == pytest.approx(float(by_path[row["path"]]), rel=1e-5)
    thresholds = json.loads((run / "metrics_z.json").read_text())["image_thresholds"]
    assert rows[0]["threshold"] == thresholds["alpha"]
    assert json.loads((tmp_path / "p2" / "predict.json").read_text())["readout"] == "z"
    meta["step"] = 4  # a later checkpoint: the saved statistics are stale
    with pytest.raises(ValueError, match="step"):
        predict_module.predict(run, images, tmp_path / "p3", cls="alpha", device="cpu",
                               readout="z")


def test_z_readout_figure_shows_the_image_a_mu_sigma_and_z():
    """Five panels, Z computed by eq. (Z1) from the statistics given (its maximum marked)."""
    from mambaadv2_ref.viz.heatmaps import z_readout_figure

    rng = np.random.default_rng(0)
    train = rng.random((5, 16, 16))
    stats = pixel_statistics(train, "c")
    amap = rng.random((16, 16))
    mask = np.zeros((16, 16))
    mask[4:8, 4:8] = 1
    fig = z_readout_figure(torch.zeros(3, 16, 16), torch.as_tensor(mask), amap, stats, "t")
    panels = [ax for ax in fig.get_axes() if ax.get_images()]
    assert len(panels) == 5
    np.testing.assert_allclose(panels[4].get_images()[0].get_array(),
                               z_maps(amap[None], stats, "c")[0])
    assert "5 good training maps" in panels[2].get_title()
