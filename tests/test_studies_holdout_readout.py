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
    result = holdout_readout.study(str(data), runs, holdout=2, profile="tiny", steps=2,
                                   seeds=[0], train_overrides=FAST, model_overrides=SMALL)
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
    again = holdout_readout.study(str(data), runs, holdout=2, profile="tiny", steps=2,
                                  seeds=[0], train_overrides=FAST, model_overrides=SMALL)
    assert [w.stat().st_mtime_ns for w in weights] == before  # reused, not retrained
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in rows]


def test_a_holdout_below_two_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--holdout must be >= 2"):
        holdout_readout.study(str(tmp_path), tmp_path / "runs", holdout=1, profile="tiny",
                              steps=2, seeds=[0])
    with pytest.raises(ValueError, match="each once"):
        holdout_readout.study(str(tmp_path), tmp_path / "runs", holdout=2, profile="tiny",
                              steps=2, seeds=[0, 0])
    with pytest.raises(SystemExit):
        holdout_readout.main(["--data", str(tmp_path), "--runs", str(tmp_path / "runs"),
                              "--json", str(tmp_path / "r.json"), "--seeds", "1,x"])
    assert not (tmp_path / "runs").exists()


def test_the_summary_is_mean_and_sample_std_over_seeds_and_z_minus_raw_seed_by_seed():
    def row(seed, k, readout, mad):
        metrics = dict.fromkeys(holdout_readout.METRIC_KEYS, 50.0) | {"mAD": mad}
        return {"seed": seed, "statistics_holdout": k, "readout": readout, "metrics": metrics}

    rows = [row(0, 0, "raw", 60.0), row(0, 0, "z", 63.0), row(0, 16, "raw", 60.0),
            row(0, 16, "z", 66.0), row(1, 0, "raw", 62.0), row(1, 0, "z", 63.0),
            row(1, 16, "raw", 61.0), row(1, 16, "z", 69.0)]
    summary = holdout_readout.summarise(rows)
    assert summary["seeds"] == [0, 1]
    raw0 = next(m for m in summary["metrics"] if (m["statistics_holdout"], m["readout"])
                == (0, "raw"))
    assert raw0["mAD"] == {"mean": 61.0, "std": pytest.approx(2 ** 0.5), "n": 2}
    lift = {d["statistics_holdout"]: d["mAD"] for d in summary["z_minus_raw"]}
    assert lift[0]["mean"] == 2.0 and lift[16]["mean"] == 7.0  # (3 + 1) / 2, (6 + 8) / 2
    assert lift[16]["std"] == pytest.approx(2 ** 0.5)
    assert holdout_readout.mean_std([4.0]) == {"mean": 4.0, "std": 0.0, "n": 1}
