"""The GPU-sitting collector: printed speed lines, training rows and loaders (CPU, no GPU)."""

from __future__ import annotations

import json

import pytest

from mambaadv2_ref.studies import collect_sitting, speed


def test_printed_speed_lines_become_rows_and_training_records_become_rows(tmp_path):
    s1, s2, results = tmp_path / "s1", tmp_path / "s2", tmp_path / "results"
    for d in (s1, s2, results):
        d.mkdir()
    env = {"gpu": "NVIDIA H200", "date": "2026-12-01T00:00:00+00:00"}
    (s1 / "speed_v1.json").write_text(json.dumps({"environment": env, "rows": [
        {"label": "v1 mamba_ssm fp32", "model": "mambaad", "backend": "mamba_ssm",
         "precision": "fp32", "profile": "paper", "batch_size": 16, "device_name": "NVIDIA H200",
         "train_images_per_s": 100.0, "infer_images_per_s": 300.0,
         "train_peak_memory_bytes": 2**30, "first_step_s": 1.0}]}))
    (s1 / "speed_warm0.json").write_text(json.dumps({"environment": env, "rows": [
        {"label": "v1 mamba_ssm bf16", "train_images_per_s": 1.0}]}))  # a warm-up: left out
    (s1 / "speed_v2.log").write_text(
        "noise\nv2 scans decay_deep torch fp32: train 47.0 img/s, infer 147.1 img/s, peak 22.3"
        " GiB, first step 0.4 s\nnot a row: train 1 img/s\n")
    (s2 / "train_v2_x.json").write_text(json.dumps({
        "name": "v2_x", "args": ["--data", "d", "--model", "mambaadv2"], "environment": env,
        "step": 300, "train": {"seed": 0, "num_steps": 800, "batch_size": 16,
                               "num_train_images": 122}, "train_seconds": 100.0,
        "model_config": {"profile": "paper", "encoder": "efficientnet_lite0"},
        "metrics": {"mean": {"I-AUROC": 0.9, "mAD": 0.65}}}))
    collect_sitting.main(["--speed", str(s1), "--train", str(s2), "--results", str(results)])
    rows = speed.load_table(results / "speed_paper_gpu.json")
    assert [r["label"] for r in rows] == ["v2 scans decay_deep torch fp32", "v1 mamba_ssm fp32"]
    assert rows[0]["train_img_s"] == 47.0 and rows[0]["model"] == "mambaadv2"
    stored = json.loads((results / "speed_paper_gpu.json").read_text())["rows"]
    assert stored[0]["source"].startswith("printed log") and "source" not in stored[1]
    (train,) = collect_sitting.load_table(results / "training_snapshots_gpu.json")
    assert train["steps"] == 300 and train["schedule_steps"] == 800 and train["dataset"] == "bsdata"
    assert train["I-AUROC"] == 90.0 and train["AUPRO"] is None and train["epochs"] == 39.3


def test_sitting_trains_resumes_and_scores_the_snapshots_along_the_way(tmp_path, monkeypatch):
    """`gpu_sitting train` on the CPU: two commands of one run (the second resumes it), each
    snapshot evaluated into the run record's metric-vs-steps curve."""
    from mambaadv2_ref.data import make_tiny_dataset
    from mambaadv2_ref.studies.gpu_sitting import train_runs

    data = make_tiny_dataset(tmp_path / "data", image_size=64, num_train=4)
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(data), "--profile", "tiny", "--device", "cpu", "--set",
            "image_size=64", "--set", "batch_size=2", "--set", "pretrained=false", "--set",
            "dims=(16, 8, 8, 8)", "--set", "headdim=8", "--set", "d_state=4", "--set",
            "num_directions=2", "--set", "snapshot_every=2", "--steps", "4"]
    first = [{"name": "r", "args": [*args, "--set", "stop_at=2"]}]
    train_runs(tmp_path / "out1", 300, first)
    rec = json.loads((tmp_path / "out1" / "train_r.json").read_text())
    assert rec["step"] == 2 and [p["step"] for p in rec["curve"]] == [2]
    train_runs(tmp_path / "out2", 300, [{"name": "r", "args": args}], score_scales=("1",))
    rec = json.loads((tmp_path / "out2" / "train_r.json").read_text())
    assert rec["step"] == 4 and rec["metrics"]["run"]["step"] == 4  # resumed (else refused)
    assert [p["step"] for p in rec["curve"]] == [2, 4]
    assert set(rec["curve"][1]["mean"]) >= {"I-AUROC", "P-AUROC", "AUPRO"}
    assert "image_scores" not in json.loads((tmp_path / "out1" / "train_r.json").read_text())
    scores = json.loads((tmp_path / "out2" / rec["image_scores"]).read_text())  # finished
    detector, middle = scores["detectors"]  # all scales, then the subset asked for
    assert detector["detector"]["step"] == 4
    assert detector["detector"]["scales"] == "all" and middle["detector"]["scales"] == [1]
    assert detector["detector"]["encoder"] == rec["model_config"]["encoder"] is not None
    assert detector["detector"]["profile"] == "tiny"
    assert [p["scales_b"] for p in scores["paired"]] == [[1]]
    by_rule = {r["rule"]: r for r in detector["rows"]}
    assert by_rule["max"]["metrics"]["I-AUROC"] == pytest.approx(
        100 * rec["metrics"]["mean"]["I-AUROC"], abs=1e-6)


def test_score_scales_are_checked_before_any_run_starts(tmp_path, capsys):
    from mambaadv2_ref.studies.gpu_sitting import main

    runs = tmp_path / "runs.json"
    runs.write_text("[]")
    for bad, expected in (("3", "0..2"), ("a", "comma-separated"), ("1,1", "distinct")):
        with pytest.raises(SystemExit):
            main(["train", "--out", str(tmp_path / "out"), "--seconds", "1", "--runs",
                  str(runs), "--score-scales", bad])
        err = capsys.readouterr().err
        assert "--score-scales" in err and expected in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_score_normalise_is_passed_to_the_image_scores_of_finished_runs(tmp_path, monkeypatch):
    """`train --score-normalise` reaches `train_runs`, and `score_finished` hands
    image_scores --normalise to finished runs only; given to `speed` it is refused before
    anything starts."""
    from mambaadv2_ref.checkpoint import MANIFEST
    from mambaadv2_ref.studies import gpu_sitting

    calls = []
    monkeypatch.setattr(gpu_sitting, "train_runs", lambda *a: calls.append(a))
    runs = tmp_path / "runs.json"
    runs.write_text("[]")
    for flag, expected in (([], False), (["--score-normalise"], True)):
        gpu_sitting.main(["train", "--out", str(tmp_path / "o"), "--seconds", "1", "--runs",
                          str(runs), "--score-scales", "2", *flag])
        assert calls.pop()[-4:] == (("2",), expected, False, 60.0)  # the defaults
    with pytest.raises(SystemExit):
        gpu_sitting.main(["speed", "--out", str(tmp_path / "s"), "--seconds", "1",
                          "--score-normalise"])
    assert not (tmp_path / "s").exists()
    commands = []
    monkeypatch.setattr(gpu_sitting.subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    root, out = tmp_path / "root", tmp_path / "out"
    for name, step in (("done", 4), ("half", 2)):
        (root / name).mkdir(parents=True)
        (root / name / MANIFEST).write_text(json.dumps({"step": step,
                                                        "train": {"num_steps": 4}}))
    out.mkdir()
    for normalise in (False, True):
        gpu_sitting.score_finished(root, ["done", "half"], out, 1e12, ("1",), normalise)
    assert [("--normalise" in c, c[c.index("--run") + 1]) for c in commands] == [
        (False, str(root / "done")), (True, str(root / "done")), (False, str(root / "done"))]
    assert commands[1][-3:] == ["--scales", "1", "--normalise"]
    assert commands[2][2:4] == ["mambaadv2_ref", "evaluate"]  # evaluate --readout z
    assert commands[2][-2:] == ["--readout", "z"]
    (root / "done" / "metrics_z.json").write_text("{}")  # evaluated once: not again
    gpu_sitting.score_finished(root, ["done"], out, 1e12, (), True)
    assert len(commands) == 4 and "--normalise" in commands[3]


def test_speed_rows_are_selected_by_prefixes_in_their_order():
    """`gpu_sitting speed --prefix A,B` benches A's rows, then B's; every row names a
    buildable config; an unknown prefix is an error naming the rows."""
    import pytest

    from mambaadv2_ref.config import preset
    from mambaadv2_ref.studies.gpu_sitting import SPEED_ROWS, select_rows

    labels = select_rows("v2 compiled decay_deep torch fp32,v1 mamba_ssm fp32")
    assert labels[0] == "v2 compiled decay_deep torch fp32" and labels[-1] == "v1 mamba_ssm fp32"
    assert select_rows("") == list(SPEED_ROWS)
    for model, backend, _, overrides in SPEED_ROWS.values():
        preset("paper", model=model, backend=backend, **overrides)
    with pytest.raises(ValueError, match="selects no row"):
        select_rows("v3")
    budget_rows = select_rows("v2 compiled reduce-overhead budget")
    assert budget_rows == [f"v2 compiled reduce-overhead budget {b} decay_deep torch {p}"
                           for b, p in (("0.5", "fp32"), ("0.2", "fp32"), ("0.5", "bf16"))]
    assert [SPEED_ROWS[label][3]["compile_memory_budget"] for label in budget_rows] == [
        0.5, 0.2, 0.5]
    assert select_rows("v2 compiled reduce-overhead decay_deep") == [
        "v2 compiled reduce-overhead decay_deep torch fp32",
        "v2 compiled reduce-overhead decay_deep torch bf16"]


def test_speed_rows_under_other_memory_budgets_reset_the_compiled_graphs(monkeypatch):
    """One memory budget holds per process (`blocks.compiled`), so before a row whose mixers
    compile under another budget than the process holds, the earlier rows' graphs are dropped;
    rows under the same budget, and eager rows, keep them."""
    from mambaadv2_ref.blocks import compiled
    from mambaadv2_ref.studies.gpu_sitting import make_room_for_budget

    resets = []
    monkeypatch.setattr(compiled, "reset_compiled_mixers", lambda: resets.append(1))
    monkeypatch.setattr(compiled, "_claimed_budget", None)
    make_room_for_budget({"compile_mixer": "reduce-overhead", "compile_memory_budget": 0.5})
    monkeypatch.setattr(compiled, "_claimed_budget", 1.0)  # a row under torch's default ran
    make_room_for_budget({"compile_mixer": "default"})
    make_room_for_budget({"compile_memory_budget": None})
    assert resets == []
    make_room_for_budget({"compile_mixer": "reduce-overhead", "compile_memory_budget": 0.5})
    assert resets == [1]


def test_warm_up_compiles_the_compiling_rows_in_parallel_and_hands_back_cold_times(
        tmp_path, monkeypatch):
    """`speed --warm K`: the rows whose first step compiles (torch.compile, v2's Triton
    kernels) are run as one `speed --iters 1 --exact` subprocess each, K at a time; each
    warm-up's first-step seconds come back as that row's cold compile time, with how many
    compiles were in flight; a warm-up that wrote nothing is an error, not a number."""
    import subprocess
    import time

    from mambaadv2_ref.studies import gpu_sitting

    labels = ["v2 scans decay_deep torch fp32", "v2 compiled decay_deep torch fp32",
              "v2 scans decay_deep mamba_ssm fp32", "v1 mamba_ssm fp32",
              "v2 compiled chunk 16 decay_deep torch bf16"]
    compiling = gpu_sitting.compiling_rows(labels)
    assert compiling == ["v2 compiled decay_deep torch fp32",
                         "v2 scans decay_deep mamba_ssm fp32",
                         "v2 compiled chunk 16 decay_deep torch bf16"]
    started = []

    class FakeProcess:
        returncode = 0

        def __init__(self, cmd, stdout, stderr):
            args = dict(zip(cmd, cmd[1:], strict=False))  # each word -> the next
            label, tag = args["--prefix"], args["--tag"]
            assert "--exact" in cmd and "--no-profile" in cmd and args["--iters"] == "1"
            started.append((label, len(started)))
            if label != "v2 scans decay_deep mamba_ssm fp32":  # that one "crashes"
                (tmp_path / f"speed_{tag}.json").write_text(json.dumps(
                    {"rows": [{"label": label, "first_step_s": 100.0 + len(started),
                               "first_infer_s": 40.0}]}))
            else:
                self.returncode = 1

        def wait(self, timeout=None):
            return self.returncode

    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    cold = gpu_sitting.warm_rows(tmp_path, compiling, at_once=2,
                                 deadline=time.monotonic() + 600)
    assert [label for label, _ in started] == compiling
    assert cold["v2 compiled decay_deep torch fp32"] == {
        "label": "v2 compiled decay_deep torch fp32", "first_step_s": 101.0,
        "first_infer_s": 40.0, "parallel": 2}
    assert cold["v2 compiled chunk 16 decay_deep torch bf16"]["parallel"] == 1
    assert cold["v2 scans decay_deep mamba_ssm fp32"] == {"error": "warm-up exited with 1"}


def test_training_processes_share_the_usable_cpus_unless_told():
    """Each of N parallel runs gets OMP_NUM_THREADS = usable CPUs // N (at least 1); a value the
    caller set is kept."""
    from mambaadv2_ref.studies.gpu_sitting import run_environment
    from mambaadv2_ref.studies.results import usable_cpus

    cpus = usable_cpus()
    assert run_environment(2, {"PATH": "/bin"}) == {
        "PATH": "/bin", "OMP_NUM_THREADS": str(max(1, cpus // 2))}
    assert run_environment(10 * cpus, {})["OMP_NUM_THREADS"] == "1"
    assert run_environment(3, {"OMP_NUM_THREADS": "7"})["OMP_NUM_THREADS"] == "7"


def test_a_time_boxed_speed_row_is_written_as_skipped(tmp_path, monkeypatch):
    """A row the deadline leaves out is in speed_TAG.json as skipped (with its model and its
    warm-up's cold compile seconds), never silently missing; the collector keeps each file's
    environment beside the rows that name it."""
    from mambaadv2_ref.studies import gpu_sitting

    first, second = "v2 scans decay_deep torch fp32", "v2 compiled decay_deep torch fp32"
    clock = iter([0.0, 0.0, 1000.0, 1000.0, 1000.0])  # the deadline passes after row one
    monkeypatch.setattr(gpu_sitting.time, "monotonic", lambda: next(clock, 1000.0))
    monkeypatch.setattr(gpu_sitting, "environment", lambda device=None: {"gpu": "G"})
    monkeypatch.setattr(gpu_sitting, "bench_row", lambda label, iters: {
        "label": label, "device_name": "G", "profile": "paper", "batch_size": 16,
        "train_images_per_s": 2.0, "infer_images_per_s": 3.0,
        "train_peak_memory_bytes": 2**30, "first_step_s": 1.0})
    monkeypatch.setattr(gpu_sitting, "warm_rows", lambda out, labels, k, deadline: {
        second: {"first_step_s": 200.0, "first_infer_s": 30.0, "parallel": 2}})
    gpu_sitting.speed(tmp_path, 100.0, 1, f"{first},{second}", "t", warm=2, profile=False)
    rows = json.loads((tmp_path / "speed_t.json").read_text())["rows"]
    assert [r["label"] for r in rows] == [first, second]
    assert rows[1]["skipped"] == "time box" and rows[1]["model"] == "mambaadv2"
    assert rows[1]["cold_first_step_s"] == 200.0
    results = tmp_path / "results"
    results.mkdir()
    collect_sitting.collect_speed(tmp_path, results, "s", "notes")
    stored = json.loads((results / "s.json").read_text())
    assert stored["environments"] == {"speed_t.json": {"gpu": "G"}}
    assert {r["speed_file"] for r in stored["rows"]} == {"speed_t.json"}
    assert [r.get("note") for r in speed.load_table(results / "s.json")] == [None, "time box"]


def test_deferred_snapshots_wait_until_the_runs_stop(tmp_path, monkeypatch):
    """`train --defer-snapshots`: no snapshot evaluation starts while a run trains (it would
    share the GPU); without it the evaluator is polled all along."""
    from mambaadv2_ref.studies import gpu_sitting

    procs = []

    class FakeRun:  # a training process that runs for two polls, then exits
        pid, returncode = 0, 0

        def __init__(self, cmd, **kwargs):
            self.polls = 0
            procs.append(self)

        def poll(self):
            self.polls += 1
            return None if self.polls < 3 else 0

        def wait(self, timeout=None):
            return 0

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gpu_sitting.subprocess, "Popen", FakeRun)
    monkeypatch.setattr(gpu_sitting.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(gpu_sitting, "environment", lambda device=None: {})
    for defer in (True, False):
        polled_while_training: list[bool] = []
        monkeypatch.setattr(gpu_sitting.SnapshotEvaluator, "poll",
                            lambda self, seen=polled_while_training: seen.append(
                                any(p.polls < 3 for p in procs)))
        procs.clear()
        gpu_sitting.train_runs(tmp_path / "out", 1000.0, [{"name": "r", "args": []}],
                               defer_snapshots=defer)
        assert any(polled_while_training) is not defer
    with pytest.raises(SystemExit):
        gpu_sitting.main(["speed", "--out", str(tmp_path / "s"), "--seconds", "1",
                          "--defer-snapshots"])
    for stage, reserve in (("train", "-1"), ("train", "600"), ("speed", "10")):
        with pytest.raises(SystemExit):  # negative, no time left to train, not a train stage
            gpu_sitting.main([stage, "--out", str(tmp_path / "s"), "--seconds", "600",
                              "--runs", "r.json", "--eval-reserve", reserve])


def test_warm_only_compiles_and_times_nothing(tmp_path, monkeypatch, capsys):
    from mambaadv2_ref.studies import gpu_sitting

    label = "v2 compiled decay_deep torch fp32"
    monkeypatch.setattr(gpu_sitting, "environment", lambda device=None: {"gpu": "G"})
    monkeypatch.setattr(gpu_sitting, "warm_rows", lambda out, labels, k, deadline: {
        label: {"first_step_s": 150.0, "parallel": 1}})
    monkeypatch.setattr(gpu_sitting, "bench_row", lambda *a: pytest.fail("timed a row"))
    gpu_sitting.speed(tmp_path, 100.0, 1, label, "w", warm=1, exact=True, warm_only=True)
    result = json.loads((tmp_path / "speed_w.json").read_text())
    assert result["warm_only"] and result["rows"] == []
    assert result["cold"][label]["first_step_s"] == 150.0
    assert f"{label}: compiled in 150 s" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # nothing to compile without --warm
        gpu_sitting.main(["speed", "--out", str(tmp_path / "s"), "--seconds", "1",
                          "--warm-only"])
    assert "--warm K >= 1" in capsys.readouterr().err


def test_an_eval_reserve_reaches_the_runs(tmp_path, monkeypatch):
    from mambaadv2_ref.studies import gpu_sitting

    calls = []
    monkeypatch.setattr(gpu_sitting, "train_runs", lambda *a: calls.append(a))
    runs = tmp_path / "runs.json"
    runs.write_text("[]")
    gpu_sitting.main(["train", "--out", str(tmp_path / "o"), "--seconds", "600", "--runs",
                      str(runs), "--defer-snapshots", "--eval-reserve", "150"])
    assert calls.pop()[-2:] == (True, 150.0)
