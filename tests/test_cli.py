"""Command line: --help everywhere, train -> evaluate -> predict end to end on tiny generated
data (mambaadv2 and patchcore), clear errors for bad input."""

import csv
import json
import runpy
import sys

import numpy as np
import pytest

from mambaadv2_ref.cli import main
from mambaadv2_ref.config_tools import parse_sets
from mambaadv2_ref.data import make_tiny_dataset
from mambaadv2_ref.evaluate import METRIC_KEYS

FAST = ["--set", "image_size=64", "--set", "batch_size=2", "--set", "pretrained=False",
        "--device", "cpu", "--profile", "tiny"]
SMALL_MODEL = ["--set", "dims=(16, 8, 8, 8)", "--set", "headdim=8", "--set", "d_state=4",
               "--set", "num_directions=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), image_size=64, num_train=4)


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["export"],
                                     ["bench"], ["bench", "scan"], ["bench", "model"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: mambaadv2-ref" in capsys.readouterr().out


def test_python_dash_m_entry_point(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["mambaadv2_ref", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("mambaadv2_ref", run_name="__main__")
    assert exit_info.value.code == 0
    assert "{train,evaluate,predict,export,bench}" in capsys.readouterr().out


def _check_metrics(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["classes"]) == {"alpha", "beta"}
    for block in [*metrics["classes"].values(), metrics["mean"]]:
        assert set(block) == set(METRIC_KEYS)
        assert all(0.0 <= v <= 1.0 for v in block.values())
    return metrics


@pytest.mark.parametrize("model", ["mambaadv2", "patchcore"])
def test_train_evaluate_predict(model, data, tmp_path, capsys):
    run = tmp_path / "run"
    extra = SMALL_MODEL if model == "mambaadv2" else ["--set", "coreset_ratio=0.5"]
    assert main(["train", "--data", str(data), "--model", model, "--steps", "2",
                 "--out", str(run), *FAST, *extra]) == 0
    assert main(["evaluate", "--run", str(run), "--save-maps", "--device", "cpu"]) == 0
    assert "mean" in capsys.readouterr().out
    metrics = _check_metrics(run)
    maps = np.load(run / "maps" / "alpha.npz")
    n = len(maps["scores"])
    assert n == 4 and maps["labels"].tolist() == [0, 0, 1, 1]
    assert maps["maps"].shape == maps["masks"].shape == (n, 64, 64)
    assert set(np.unique(maps["masks"])) <= {0, 1} and maps["masks"][2:].any()
    np.testing.assert_allclose(maps["scores"], maps["maps"].reshape(n, -1).max(1), rtol=1e-6)
    assert [p.split("/")[-3:-1] for p in maps["paths"]][-1] == ["test", "stain"]

    out = tmp_path / "pred"
    assert main(["predict", "--run", str(run), "--images", str(data / "alpha" / "test" / "stain"),
                 "--out", str(out), "--class", "alpha", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 1 and set(rows[0]) == {"path", "score", "threshold", "is_anomalous"}
    assert float(rows[0]["threshold"]) == metrics["image_thresholds"]["alpha"]
    np.testing.assert_allclose(float(rows[0]["score"]), maps["scores"][-1], rtol=1e-5)
    assert (out / "000.png_overlay.png").stat().st_size > 0


def test_bad_inputs_give_clear_errors(tmp_path, data, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"),
                 *FAST]) == 2
    assert "expected the MVTec AD layout" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), *FAST,
                 "--set", "bogus=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path / "nothing")]) == 2
    assert "checkpoint.json is missing" in capsys.readouterr().err
    assert main(["predict", "--run", str(tmp_path), "--images", str(tmp_path / "none.png"),
                 "--out", str(tmp_path / "p")]) == 2
    assert "neither a file nor a folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="key=value"):
        parse_sets(["lr"])
    assert parse_sets(["lr=0.1", "dims=(8, 8)", "curve=hilbert"]) == {
        "lr": 0.1, "dims": (8, 8), "curve": "hilbert"}
