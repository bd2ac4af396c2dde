"""studies.holdout_readout: two runs identical but for statistics_holdout, each read raw and z
(CPU; a tiny dataset of 10 training images per class, a minuscule model, 2 steps)."""

from __future__ import annotations

import json

import pytest
from conftest import FAST_RUN, SMALL_MODEL

from mambaadv2_ref.data import make_tiny_dataset
from mambaadv2_ref.model.readout import HOLDOUT_SPLIT, STATISTICS_FROM
from mambaadv2_ref.studies import holdout_readout

SMALL = SMALL_MODEL
FAST = {k: v for k, v in FAST_RUN.items() if k not in ("steps", "device", "profile")}


def test_the_pair_differs_only_in_the_holdout_and_a_finished_run_is_reused(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", image_size=64, num_train=10)
    runs = tmp_path / "runs"
    result = holdout_readout.study(str(data), runs, holdout=2, profile="tiny", steps=2, seed=0,
                                   train_overrides=FAST, model_overrides=SMALL)
    rows = result["rows"]
    assert [(r["statistics_holdout"], r["readout"]) for r in rows] == [
        (0, "raw"), (0, "z"), (2, "raw"), (2, "z")]
    classes = sorted(rows[1]["statistics_images"])
    assert len(classes) == 2
    assert rows[0]["num_train_images"] == 20 and rows[2]["num_train_images"] == 16
    assert rows[1]["statistics_from"] == STATISTICS_FROM
    assert rows[1]["statistics_images"] == dict.fromkeys(classes, 10)
    assert rows[3]["statistics_from"] != STATISTICS_FROM
    assert rows[3]["statistics_images"] == dict.fromkeys(classes, 2)
    assert rows[0]["statistics_from"] is None  # the raw readout has no statistics
    assert all(0 <= r["metrics"]["mAD"] <= 100 for r in rows)
    z_run = runs / rows[3]["run"]
    assert json.loads((z_run / "metrics_z.json").read_text())["readout"]["split"] == HOLDOUT_SPLIT
    weights = sorted((runs / rows[0]["run"]).glob("weights-*.safetensors"))
    before = [w.stat().st_mtime_ns for w in weights]
    again = holdout_readout.study(str(data), runs, holdout=2, profile="tiny", steps=2, seed=0,
                                  train_overrides=FAST, model_overrides=SMALL)
    assert [w.stat().st_mtime_ns for w in weights] == before  # reused, not retrained
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in rows]


def test_a_holdout_below_two_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--holdout must be >= 2"):
        holdout_readout.study(str(tmp_path), tmp_path / "runs", holdout=1, profile="tiny",
                              steps=2, seed=0)
    assert not (tmp_path / "runs").exists()
