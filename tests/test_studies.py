"""Studies (chapters 12-13): ablation table, speed grid and resolution scaling run end to end on
tiny sizes on the CPU; their files hold what the book reads. No timing is asserted."""

import json

import pytest
import torch

from mambaadv2_ref.data import make_tiny_dataset
from mambaadv2_ref.evaluate import METRIC_KEYS
from mambaadv2_ref.model.factory import build_model
from mambaadv2_ref.studies import ablations, patchcore_options, scaling, speed
from mambaadv2_ref.timing import saved_for_backward_bytes, seconds_per_call

TINY_MODEL = ["--set", "image_size=64", "--set", "batch_size=2", "--set", "pretrained=False"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), image_size=64, num_train=4)


def test_ablation_table_and_resume(data, tmp_path, monkeypatch):
    # a small model keeps this fast: the profile's widths are overridden for every ablation
    small = {"dims": (16, 8, 8, 8), "headdim": 8, "d_state": 4}
    for name in ("recurrence_only", "no_position"):
        monkeypatch.setitem(ablations.ABLATIONS, name, (
            "mambaadv2", {**ablations.ABLATIONS[name][1], **small}, ablations.ABLATIONS[name][2]))
    out = tmp_path / "abl"
    argv = ["--out", str(out), "--data", str(data), "--profile", "tiny", "--steps", "2",
            "--device", "cpu", "--only", "recurrence_only,no_position", *TINY_MODEL]
    assert ablations.main(argv) == 0
    table = json.loads((out / "ablations.json").read_text())
    assert [r["ablation"] for r in table["rows"]] == ["recurrence_only", "no_position"]
    for row in table["rows"]:
        assert row["steps"] == 2
        assert all(0.0 <= row[k] <= 1.0 for k in METRIC_KEYS)
    assert "| recurrence_only |" in (out / "ablations.md").read_text()
    # a second call finds both rows done and trains nothing
    mtime = (out / "recurrence_only" / "checkpoint.json").stat().st_mtime
    assert ablations.main(argv) == 0
    assert (out / "recurrence_only" / "checkpoint.json").stat().st_mtime == mtime
    assert [(r["seed"], r["statistics_holdout"]) for r in table["rows"]] == [(42, 0), (42, 0)]
    # a table of an earlier version (no run settings, no z readout) is completed from the run
    # folders by --z-readout, without training
    for row in table["rows"]:
        for key in ablations.RUN_SETTINGS:
            del row[key]
    (out / "ablations.json").write_text(json.dumps(table))
    assert ablations.main([*argv, "--z-readout", "--notes", "two cores, shared"]) == 0
    assert (out / "recurrence_only" / "checkpoint.json").stat().st_mtime == mtime
    table = json.loads((out / "ablations.json").read_text())
    for row in table["rows"]:
        assert row["seed"] == 42 and row["num_train_images"] == 8  # 2 classes x 4
        assert all(0.0 <= row["metrics_z"][k] <= 1.0 for k in METRIC_KEYS)
        z_file = json.loads((out / row["ablation"] / "metrics_z.json").read_text())
        assert row["metrics_z"]["mAD"] == z_file["mean"]["mAD"]
    assert "z mAD" in (out / "ablations.md").read_text()
    assert table["notes"] == "two cores, shared"


def test_unknown_ablation_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablations.main(["--out", str(tmp_path), "--steps", "1", "--only", "v2,nope"])
    assert "nope" in capsys.readouterr().err


def test_speed_grid_records_every_combination(tmp_path):
    rows = speed.speed_grid("tiny", device="cpu", iters=1, batch_size=1)
    assert len(rows) == len(speed.MODELS) * 2 * len(speed.GRID_PRECISIONS)
    for row in rows:
        if row["backend"] == "mamba_ssm":  # no GPU here: recorded with its reason
            assert row["skipped"]
        else:
            assert row["train_images_per_s"] > 0 and row["infer_images_per_s"] > 0
    speed.plot_speed(rows, tmp_path / "speed.png")
    assert (tmp_path / "speed.png").stat().st_size > 0


def test_scaling_rows_and_growth_exponent(tmp_path):
    assert scaling.main(["--out", str(tmp_path), "--profile", "tiny", "--sizes", "64,96",
                         "--batch-size", "1", "--iters", "1", "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert {r["decoder"] for r in result["rows"]} == set(scaling.DECODERS)
    assert all(r["train_s"] > 0 for r in result["rows"])
    assert set(result["growth_exponent_train"]) == set(scaling.DECODERS)
    assert (tmp_path / "scaling.png").exists()


def test_growth_exponent_recovers_known_powers():
    rows = [{"tokens": n, "train_s": 3e-6 * n**2} for n in (100, 400, 1600)]
    assert scaling.growth_exponent(rows) == pytest.approx(2.0)
    rows = [{"tokens": n, "train_s": 5e-4 * n} for n in (100, 400, 1600)]
    assert scaling.growth_exponent(rows) == pytest.approx(1.0)
    # a flat overhead at small sizes, then quadratic: only the largest sizes show the power
    rows = [{"tokens": t, "train_s": max(1.0, (t / 1e4) ** 2)} for t in (1e3, 2e3, 1e4, 2e4, 4e4)]
    assert scaling.growth_exponent(rows) < 1.5
    assert scaling.growth_exponent(rows, largest=3) == pytest.approx(2.0)


def test_seconds_per_call_counts_calls():
    calls = []
    seconds_per_call(lambda: calls.append(1), torch.device("cpu"), warmup=2, iters=3, repeats=2)
    assert len(calls) == 2 + 3 * 2


def test_saved_for_backward_bytes_counts_each_storage_once():
    a = torch.randn(1000, requires_grad=True)
    assert saved_for_backward_bytes(lambda: torch.exp(a)) == 4000       # exp keeps its output
    assert saved_for_backward_bytes(lambda: a * a) == 4000              # one storage, twice
    with torch.no_grad():
        assert saved_for_backward_bytes(lambda: torch.exp(a)) == 0


def test_block_checkpointing_keeps_less_for_backward():
    images = torch.randn(1, 3, 64, 64)
    kept = {}
    for name, flags in (("none", dict(checkpoint_matrix=False)), ("matrix", {}),
                        ("stages", dict(checkpoint_stages=(1, 2, 3))),
                        ("block", dict(checkpoint_block=True))):
        torch.manual_seed(0)
        net = build_model("mambaadv2", "tiny", pretrained=False, image_size=64, **flags)
        kept[name] = saved_for_backward_bytes(lambda net=net: net(images))
    assert kept["block"] < kept["stages"] < kept["matrix"] < kept["none"]


def test_bench_model_times_the_training_step(monkeypatch):
    from mambaadv2_ref import train as train_module

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs or args[3:])
        return train_module.train_step(*args, **kwargs)

    monkeypatch.setattr(speed, "train_step", spy)
    result = speed.bench_model("mambaadv2", "tiny", device="cpu", batch_size=1, iters=1,
                               overrides={"image_size": 64, "dims": (16, 8, 8, 8),
                                          "headdim": 8, "d_state": 4})
    assert len(calls) == 3 and result["train_images_per_s"] > 0  # 2 warm-up calls + 1 timed


def test_comparison_grid_times_both_values_interleaved(tmp_path):
    out = tmp_path / "stack_scans_cpu.json"
    result = speed.comparison_grid("stack_scans", [("tiny", 1)], device="cpu", repeats=3,
                                   out_json=out, overrides={"image_size": 64, "dims": (16, 8, 8, 8),
                                                            "headdim": 8, "d_state": 4})
    row = result["rows"][0]
    assert row["values"] == [True, False] and row["image_size"] == 64 and row["ratio"] > 0
    assert all(len(t) == 3 for t in row["step_s"].values())
    assert row["hss_scan_calls"]["True"] < row["hss_scan_calls"]["False"]
    table = speed.load_comparison_table(out)
    assert table[0]["profile"] == "tiny" and "stack_scans=False ms" in table[0]
    with pytest.raises(ValueError, match="COMPUTE_SETTINGS|one of"):
        speed.compare_setting("d_state", (8, 16))


@pytest.mark.parametrize("loader, name, key", [
    (speed.load_table, "speed_paper_gpu.json", "backend"),
    (speed.load_comparison_table, "stack_scans_cpu.json", "ratio"),
    (scaling.load_table, "scaling_paper_gpu.json", "tokens"),
    (ablations.load_table, "ablations_embedded_tiny_cpu.json", "mAD"),
    (patchcore_options.load_table, "patchcore_options_bsdata_cpu.json", "AUPRO"),
    ("scan_bench", "scan_bench_cpu.json", "method"),
    ("pipeline_results", "pipeline_results.json", "AUPRO"),
    ("collect_gpu", "gpu_training.json", "world_size"),
])
def test_every_study_reads_its_committed_table(loader, name, key):
    from mambaadv2_ref.studies import collect_gpu, pipeline_results, scan_bench
    from mambaadv2_ref.studies.results import RESULTS_DIR
    from mambaadv2_ref.tables import markdown_table

    loader = {"scan_bench": scan_bench.load_table, "pipeline_results":
              pipeline_results.load_table, "collect_gpu": collect_gpu.load_training_table
              }.get(loader, loader)
    rows = loader(RESULTS_DIR / name)
    assert rows and any(key in r for r in rows)
    assert markdown_table(rows).count("\n") == len(rows) + 1


def test_pipeline_runs_drives_the_command_line(tmp_path, monkeypatch):
    from mambaadv2_ref.studies import pipeline_runs

    calls = []

    def fake_cli(*args):
        calls.append(args)
        if args[:2] == ("bench", "model"):
            out = args[args.index("--out") + 1]
            rate = 40.0 if "mambaad" in args else 80.0
            with open(out, "w") as f:
                json.dump({"train_images_per_s": rate, "batch_size": 8}, f)
        return 1 if args[:2] == ("evaluate", "--run") and args[2].endswith("mambaad") else 0

    monkeypatch.setattr(pipeline_runs, "cli", fake_cli)
    failed = pipeline_runs.run_dataset("emb", "-", "tiny", "auto", tmp_path, "cpu", budget_s=20,
                                       models=("mambaadv2", "mambaad"))
    assert failed == ["mambaad"]                      # its evaluate failed, the other still ran
    train = [c for c in calls if c[0] == "train"]
    assert [c[c.index("--steps") + 1] for c in train] == ["100", "100"]  # 20 s x 40 / 8 = 100
    assert "--data" not in train[0] and (tmp_path / "emb" / "hardware.txt").exists()
    with pytest.raises(ValueError, match="steps"):
        pipeline_runs.run_dataset("emb", "-", "tiny", "many", tmp_path)
    with pytest.raises(ValueError, match="nope"):
        pipeline_runs.run_dataset("emb", "-", "tiny", "5", tmp_path, models=("nope",))


def test_compare_values_parse_as_json_and_bad_ones_are_named(capsys):
    assert speed.parse_values("true,false") == (True, False)
    assert speed.parse_values("64,32") == (64, 32)
    assert speed.parse_values('"scan","materialised"') == ("scan", "materialised")
    with pytest.raises(ValueError, match="--values takes two values"):
        speed.parse_values("64,32,16")
    with pytest.raises(ValueError, match="must be a JSON value"):
        speed.parse_values("64,scan")
    with pytest.raises(SystemExit):
        speed.main(["--out", "unused", "--compare", "chunk_size", "--values", "64"])
    assert "--values takes two values" in capsys.readouterr().err
