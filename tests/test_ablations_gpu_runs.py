"""Ablations as GPU-sitting runs: the emitted `train` arguments and the table collected back."""

from __future__ import annotations

import json

import pytest

from mambaadv2_ref.cli import build_parser
from mambaadv2_ref.config_tools import parse_sets
from mambaadv2_ref.model.detectors import model_config_fields
from mambaadv2_ref.studies import ablations
from mambaadv2_ref.train_config import TrainConfig, config_from_sets


def as_config(args: list[str]) -> TrainConfig:
    """The TrainConfig that `train --out x ARGS` would run (the CLI's parser and --set rules)."""
    ns = build_parser().parse_args(["train", "--out", "x", *args])
    cfg = TrainConfig(out=ns.out, data=ns.data, model=ns.model, profile=ns.profile,
                      steps=ns.steps)
    return config_from_sets(cfg, parse_sets(ns.sets), model_config_fields(ns.model))


def test_gpu_runs_carry_each_ablation_and_the_settings_of_its_model():
    runs = ablations.gpu_runs(["recurrence_only", "causal_matrix", "mambaad_v1"], "d", "paper",
                              1000, ["seed=1"], ["compile_mixer=reduce-overhead"],
                              ["backend=mamba_ssm"])
    assert [r["name"] for r in runs] == ["ablation_recurrence_only", "ablation_causal_matrix",
                                         "ablation_mambaad_v1"]
    rec, causal, v1 = (as_config(r["args"]) for r in runs)
    assert rec.model == "mambaadv2" and rec.steps == 1000 and rec.data == "d"
    assert rec.seed == 1 and v1.seed == 1
    assert rec.model_overrides == {"path_mode": "recurrence", "compile_mixer": "reduce-overhead"}
    assert causal.model_overrides["matrix_causal"] is True
    assert v1.model == "mambaad" and v1.model_overrides == {"backend": "mamba_ssm"}
    with pytest.raises(ValueError, match="nope"):
        ablations.gpu_runs(["v2", "nope"], None, "tiny", 1)


def record(name: str, step: int, num_steps: int, evaluated_at: int | None) -> dict:
    rec = {"name": name, "args": ["--steps", str(num_steps)], "step": step,
           "environment": {"date": "2026-12-07T00:00:00+00:00", "gpu": "G"},
           "train": {"num_steps": num_steps, "data": "d"}, "train_seconds": 10.0,
           "model_config": {"profile": "paper"},
           "history": [{"loss": 9.0, "images_per_s": 1.0}, {"loss": 4.0, "images_per_s": 3.0}]}
    if evaluated_at is not None:
        rec["metrics"] = {"run": {"step": evaluated_at, "images_per_s": 7.0},
                          "mean": dict.fromkeys(ablations.METRIC_KEYS, 0.5)}
    return rec


def test_collected_table_keeps_finished_runs_and_names_the_others(tmp_path):
    one, two = tmp_path / "c1", tmp_path / "c2"
    for folder in (one, two):
        folder.mkdir()
    (one / "train_ablation_v2.json").write_text(json.dumps(record("ablation_v2", 5, 10, 5)))
    (two / "train_ablation_v2.json").write_text(json.dumps(record("ablation_v2", 10, 10, 10)))
    (two / "train_ablation_no_fft.json").write_text(json.dumps(
        record("ablation_no_fft", 10, 10, 5)))  # its metrics are of an older step: stale
    (two / "train_other.json").write_text("{}")  # not an ablation run: ignored
    out = tmp_path / "results" / "abl.json"
    assert ablations.main(["--collect", str(one), str(two), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["ablation"] == "v2" and row["steps"] == 10 and row["final_loss"] == 4.0
    assert row["train_images_per_s"] == 3.0 and row["infer_images_per_s"] == 7.0
    assert result["not_finished"] == ["no_fft"] and result["steps"] == 10
    assert out.with_suffix(".md").read_text().startswith("| ablation")
    assert ablations.load_table(out)[0]["mAD"] == 50.0


def test_collect_and_training_refuse_what_they_cannot_do(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablations.main(["--collect", str(tmp_path), "--out", str(tmp_path / "t.json")])
    assert "no train_ablation_" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablations.main(["--collect", str(tmp_path), "--out", str(tmp_path)])
    assert "--out FILE.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablations.main(["--out", str(tmp_path)])
    assert "--steps" in capsys.readouterr().err
    assert ablations.main(["--gpu-runs", str(tmp_path / "r.json"), "--steps", "3",
                           "--only", "v2"]) == 0
    (run,) = json.loads((tmp_path / "r.json").read_text())
    assert run["name"] == "ablation_v2" and "--data" not in run["args"]


def test_z_readout_of_a_record_is_kept_and_a_raw_file_is_refused_as_z(tmp_path):
    rec = record("ablation_v2", 10, 10, 10)
    rec["metrics_z"] = {"readout": {"name": "z"},
                        "mean": dict.fromkeys(ablations.METRIC_KEYS, 0.75)}
    (tmp_path / "train_ablation_v2.json").write_text(json.dumps(rec))
    out = tmp_path / "abl.json"
    (row,) = ablations.collect_records([tmp_path], out)["rows"]
    assert row["metrics_z"]["mAD"] == 0.75 and row["mAD"] == 0.5
    (table_row,) = ablations.load_table(out)
    assert table_row["z mAD"] == 75.0 and table_row["mAD"] == 50.0
    assert "z mAD" in out.with_suffix(".md").read_text()
    raw = {"readout": {"name": "raw"}, "mean": dict.fromkeys(ablations.METRIC_KEYS, 0.5)}
    with pytest.raises(ValueError, match="readout 'z', got 'raw'"):
        ablations.z_means(raw)


def test_seed_spread_screen_averages_seeds_and_flags_what_leaves_the_band():
    def row(name, seed, mad, z_mad=None):
        r = {"ablation": name, "seed": seed, "mAD": mad}
        if z_mad is not None:
            r["metrics_z"] = {"mAD": z_mad}
        return r
    rows = [row("v2", 42, 0.60, 0.66), row("no_fft", 42, 0.61, 0.60),
            row("no_fft", 0, 0.63, 0.62), row("plan_uniform", 42, 0.602)]
    spread = {"raw": {"mean": 60.0, "std": 0.5, "n": 3}, "z": {"mean": 66.0, "std": 1.0, "n": 3}}
    v2, no_fft, uniform = ablations.against_seed_spread(rows, spread)
    assert v2["raw d"] == pytest.approx(0.0) and v2["raw beyond"] is False
    assert no_fft["seeds"] == [42, 0] and no_fft["raw mAD"] == pytest.approx(62.0)
    assert no_fft["raw beyond"] is True  # +2.0 > 2 x 0.5
    assert no_fft["z d"] == pytest.approx(-5.0) and no_fft["z beyond"] is True
    assert uniform["raw beyond"] is False and uniform["z mAD"] is None
    assert uniform["z beyond"] is None  # no z readout for that run: no verdict
    with pytest.raises(ValueError, match="raw readout"):
        ablations.against_seed_spread(rows, {"z": spread["z"]})
