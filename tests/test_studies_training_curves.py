"""Training curves of GPU sittings: snapshots merged over commands, mean +- std over seeds, the
converged rows only for runs that finished their schedule (CPU, synthetic records)."""

from __future__ import annotations

import json
import statistics

import pytest

from mambaadv2_ref.evaluate import METRIC_KEYS
from mambaadv2_ref.studies import training_curves


def _record(name, model, seed, step, num_steps, curve, final=None):
    args = ["--model", model, "--data", "/d", "--profile", "paper"]
    mean = lambda v: {k: v for k in METRIC_KEYS}  # noqa: E731
    return {"name": name, "args": args, "step": step, "train_seconds": 12.5,
            "environment": {"gpu": "NVIDIA H200", "date": "2026-12-02T06:00:00+00:00"},
            "train": {"seed": seed, "num_steps": num_steps, "batch_size": 16,
                      "num_train_images": 128},
            "model_config": {"profile": "paper", "encoder": "efficientnet_lite0"},
            "curve": [{"step": s, "mean": mean(v)} for s, v in curve],
            **({"metrics": {"mean": mean(final)}} if final is not None else {})}


def _write(folder, records):
    folder.mkdir()
    for r in records:
        (folder / f"train_{r['name']}.json").write_text(json.dumps(r))


def test_curves_merge_commands_average_seeds_and_keep_only_finished_runs(tmp_path):
    _write(tmp_path / "c1", [
        _record("v2_s0", "mambaadv2", 0, 210, 400, [(200, 0.60)], final=0.61),
        _record("v2_s1", "mambaadv2", 1, 205, 400, [(200, 0.64)]),
        {**_record("pc", "patchcore", 42, 0, 0, [], final=0.5),
         "model_config": {"encoder": "efficientnet_lite0"}}])
    _write(tmp_path / "c2", [  # the next command: s0 finished, s1 did not
        _record("v2_s0", "mambaadv2", 0, 400, 400, [(400, 0.70)], final=0.70),
        _record("v2_s1", "mambaadv2", 1, 390, 400, [(200, 0.64)])])
    written = training_curves.collect([tmp_path / "c1", tmp_path / "c2"], tmp_path)
    curves = json.loads((tmp_path / "training_curves_bsdata_paper_gpu.json").read_text())
    steps = sorted((r["run"], r["step"]) for r in curves["rows"])
    assert steps == [("pc", 0), ("v2_s0", 200), ("v2_s0", 400), ("v2_s1", 200)]
    at200 = next(s for s in curves["summary"] if s["model"] == "mambaadv2" and s["step"] == 200)
    assert at200["n"] == 2 and at200["seeds"] == [0, 1]
    assert at200["mAD"]["mean"] == pytest.approx(62.0)
    assert at200["mAD"]["std"] == pytest.approx(statistics.stdev([60.0, 64.0]))
    at400 = next(s for s in curves["summary"] if s["model"] == "mambaadv2" and s["step"] == 400)
    assert at400["n"] == 1 and at400["mAD"]["std"] == 0.0
    assert (tmp_path / "training_curves_bsdata_paper_gpu.png").stat().st_size > 0
    converged = json.loads((tmp_path / "converged_bsdata_paper_gpu.json").read_text())
    assert [r["run"] for r in converged["rows"]] == ["v2_s0"]  # finished; s1 and PatchCore not
    row = converged["rows"][0]
    assert row["steps"] == 400 and row["epochs"] == 50.0 and row["metrics"]["mAD"] == 70.0
    assert row["device_name"] == "NVIDIA H200" and row["train_s"] == 12.5
    assert row["command"] == ("python -m mambaadv2_ref train --out runs/v2_s0 --model mambaadv2 "
                              "--data /d --profile paper")
    assert tmp_path / "converged_bsdata_paper_gpu.json" in written


def test_no_converged_file_without_a_finished_run(tmp_path):
    _write(tmp_path / "c1", [_record("v2_s0", "mambaadv2", 0, 210, 400, [(200, 0.6)], 0.6)])
    training_curves.collect([tmp_path / "c1"], tmp_path)
    assert (tmp_path / "training_curves_bsdata_paper_gpu.json").is_file()
    assert not (tmp_path / "converged_bsdata_paper_gpu.json").exists()


def test_earlier_rows_join_the_curves_of_a_tagged_file(tmp_path):
    _write(tmp_path / "old", [_record("v2_s0", "mambaadv2", 0, 400, 400, [(200, 0.60)], 0.6)])
    training_curves.collect([tmp_path / "old"], tmp_path / "a")
    earlier = training_curves.earlier_rows(
        tmp_path / "a" / "training_curves_bsdata_paper_gpu.json", ["v2_s0"])
    _write(tmp_path / "new", [_record("v2_s1", "mambaadv2", 1, 300, 400, [(200, 0.64)])])
    training_curves.collect([tmp_path / "new"], tmp_path / "b", tag="seeds", earlier=earlier)
    curves = json.loads((tmp_path / "b" / "training_curves_bsdata_paper_seeds_gpu.json")
                        .read_text())
    assert sorted(r["run"] for r in curves["rows"]) == ["v2_s0", "v2_s1"]
    at200 = next(s for s in curves["summary"] if s["step"] == 200)
    assert at200["n"] == 2 and at200["mAD"]["mean"] == pytest.approx(62.0)
    with pytest.raises(ValueError, match="no rows of run"):
        training_curves.earlier_rows(
            tmp_path / "a" / "training_curves_bsdata_paper_gpu.json", ["v2_s9"])
    with pytest.raises(ValueError, match="both hold run"):
        training_curves.collect([tmp_path / "old"], tmp_path / "c", earlier=earlier)


def test_earlier_converged_rows_stay_in_the_rewritten_converged_file(tmp_path):
    _write(tmp_path / "old", [_record("v2_s0", "mambaadv2", 0, 400, 400, [(400, 0.60)], 0.6),
                              _record("v2_s1", "mambaadv2", 1, 300, 400, [(200, 0.62)])])
    training_curves.collect([tmp_path / "old"], tmp_path / "a")
    names = ["v2_s0", "v2_s1"]
    earlier = training_curves.earlier_rows(
        tmp_path / "a" / "training_curves_bsdata_paper_gpu.json", names)
    done = training_curves.earlier_converged(tmp_path / "a" / "converged_bsdata_paper_gpu.json",
                                             names)
    assert [r["run"] for r in done] == ["v2_s0"]  # v2_s1 did not finish: no row, no error
    _write(tmp_path / "new", [_record("v2_s2", "mambaadv2", 2, 400, 400, [(400, 0.66)], 0.66)])
    training_curves.collect([tmp_path / "new"], tmp_path / "b", earlier=earlier,
                            earlier_done=done)
    converged = json.loads((tmp_path / "b" / "converged_bsdata_paper_gpu.json").read_text())
    assert [(r["run"], r["metrics"]["mAD"]) for r in converged["rows"]] == [
        ("v2_s0", 60.0), ("v2_s2", 66.0)]
    with pytest.raises(ValueError, match="both hold run"):
        training_curves.collect([tmp_path / "old"], tmp_path / "c", earlier_done=done)


def test_converged_rows_carry_the_z_readout_of_the_same_checkpoint(tmp_path):
    """A finished run whose command recorded `evaluate --readout z` (metrics_z) at its last
    step gets metrics_z in percent beside the raw metrics; a z evaluation of an earlier step
    is stale and left out."""
    mean = lambda v: {k: v for k in METRIC_KEYS}  # noqa: E731
    fresh = {**_record("v2_s0", "mambaadv2", 0, 400, 400, [(400, 0.70)], final=0.70),
             "metrics_z": {"mean": mean(0.75), "run": {"step": 400}, "readout": {"name": "z"},
                           "map_range": {"c": [0.5, 9.0]}, "image_thresholds": {"c": 4.0}}}
    stale = {**_record("v2_s1", "mambaadv2", 1, 400, 400, [(400, 0.60)], final=0.60),
             "metrics_z": {"mean": mean(0.65), "run": {"step": 200}}}
    _write(tmp_path / "c1", [fresh, stale])
    training_curves.collect([tmp_path / "c1"], tmp_path)
    rows = json.loads((tmp_path / "converged_bsdata_paper_gpu.json").read_text())["rows"]
    by_run = {r["run"]: r for r in rows}
    assert by_run["v2_s0"]["metrics_z"]["mAD"] == pytest.approx(75.0)
    assert by_run["v2_s0"]["metrics"]["mAD"] == pytest.approx(70.0)
    assert by_run["v2_s0"]["z_readout"] == {"name": "z", "map_range": {"c": [0.5, 9.0]},
                                            "image_thresholds": {"c": 4.0}}
    assert "metrics_z" not in by_run["v2_s1"]


def test_loss_at_averages_the_logged_losses_up_to_each_step():
    history = [{"step": s, "loss": float(s)} for s in range(10, 410, 10)]
    assert training_curves.loss_at([100, 400], history, window=30) == [
        {"step": 100, "loss": 90.0}, {"step": 400, "loss": 390.0}]
    assert training_curves.loss_at([5], history) == []  # nothing logged yet
