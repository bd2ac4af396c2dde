"""One GPU sitting, as Python: the speed grid with profiler tables, the scaling study, and
time-boxed, resumable training runs (the GPU machine is lent 10 minutes a command).

    python -m mambaadv2_ref.studies.gpu_sitting speed --out OUT --seconds 420 --prefix v2 --tag v2
    python -m mambaadv2_ref.studies.gpu_sitting train --out OUT --seconds 540 --runs RUNS.json

`speed` benches the rows of SPEED_ROWS whose labels start with one of the (comma-separated)
prefixes, in that order, in one process (the pure-PyTorch rows
first, then the mamba-ssm kernel rows, whose first step compiles the Triton kernels: its seconds
are recorded as `first_step_s`), profiles the rows of PROFILED among them, and with tag "v1"
(run after mamba-ssm's CUDA scan is built) the decoder scaling study while time is left;
everything lands in OUT/speed_TAG.json, OUT/profile_*.txt and OUT/scaling.json as measured.
`speed --warm K` first compiles the rows that compile (torch.compile, Triton) K at a time in
parallel subprocesses, then times every row alone on the warm disk caches (measured on an H200,
2026-12-02: six compiled rows in 277 s for the whole command, against ~150 s each one by one).
`speed --warm K --warm-only` compiles and stops, for a later command on the same machine to
time from the caches. `train` starts every run of a JSON list at once (one subprocess each,
`--resume`, a checkpoint every `checkpoint_every` steps), evaluates their snapshots while they
train (the metric-vs-steps curve; `--defer-snapshots`: only once the runs have stopped), stops
them at the deadline with SIGINT and then SIGKILL, and evaluates each run's latest checkpoint
into RUN/metrics.json and OUT/train_RUNNAME.json (step, metrics, history), so that the next
command resumes where this one stopped; a run that finished its schedule also gets its
per-image scores, OUT/image_scores_RUNNAME.json (`studies.image_scores`), for paired
comparisons later.

Measured (H200, 2026-12-02): runs sharing the GPU add no throughput. Eleven at once (four
paper-profile MambaADv2, three MambaAD v1, two tiny, two PatchCore fits) trained at 6.6 and 13
img/s per v2 and v1 run against ~47 and ~102 alone: the fractions of solo speed sum to ~0.94.
Each run's process gets OMP_NUM_THREADS = its share of the usable CPUs (`run_environment`)
unless the caller set it: without it, parallel runs on a machine with few CPUs starve each
other. A machine keeps nothing once it goes cold, and a paper-profile checkpoint with its optimizer
(180-220 MB) cannot come back from it, so size a run to finish inside the commands of one warm
machine: one paper-profile v2 run of ~1200 steps, alone, fits one command.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from mambaadv2_ref.checkpoint import MANIFEST, list_snapshots, write_json
from mambaadv2_ref.model.encoder import ENCODERS
from mambaadv2_ref.studies.image_scores import parse_scales
from mambaadv2_ref.studies.results import environment, usable_cpus

# label -> (model, backend, precision, overrides); "paper" profile, batch 16, 256 px
SPEED_ROWS: dict[str, tuple[str, str, str, dict]] = {}
for _precision in ("fp32", "bf16"):
    SPEED_ROWS.update({
        f"v2 before (materialised, uniform) torch {_precision}": (
            "mambaadv2", "torch", _precision, {"matrix_impl": "materialised",
                                               "scan_plan": "uniform"}),
        f"v2 scans decay_deep torch {_precision}": (
            "mambaadv2", "torch", _precision, {"scan_plan": "decay_deep"}),
    })
for _precision in ("fp32", "bf16"):
    SPEED_ROWS.update({
        f"v2 scans decay_deep mamba_ssm {_precision}": (
            "mambaadv2", "mamba_ssm", _precision, {"scan_plan": "decay_deep"}),
        f"v2 scans uniform mamba_ssm {_precision}": (
            "mambaadv2", "mamba_ssm", _precision, {"scan_plan": "uniform"}),
    })
SPEED_ROWS.update({
    "v2 scans decay_deep mamba_ssm fp32 no checkpoint": (
        "mambaadv2", "mamba_ssm", "fp32", {"scan_plan": "decay_deep", "checkpoint_matrix": False}),
    "v2 scans decay_deep mamba_ssm fp32 checkpoint_block": (
        "mambaadv2", "mamba_ssm", "fp32", {"scan_plan": "decay_deep", "checkpoint_block": True}),
    "v2 stacked decay_deep torch fp32": (
        "mambaadv2", "torch", "fp32", {"scan_plan": "decay_deep", "stack_scans": True}),
})
for _precision in ("fp32", "bf16", "tf32"):  # torch.compile of the HSS mixers (blocks.compiled)
    SPEED_ROWS[f"v2 compiled decay_deep torch {_precision}"] = (
        "mambaadv2", "torch", _precision, {"scan_plan": "decay_deep", "compile_mixer": "default"})
SPEED_ROWS.update({
    "v2 compiled no-checkpoint decay_deep torch fp32": (
        "mambaadv2", "torch", "fp32", {"scan_plan": "decay_deep", "compile_mixer": "default",
                                       "checkpoint_matrix": False}),
    "v2 compiled checkpoint_block decay_deep torch fp32": (
        "mambaadv2", "torch", "fp32", {"scan_plan": "decay_deep", "compile_mixer": "default",
                                       "checkpoint_block": True}),
    **{f"v2 compiled checkpoint stages {'+'.join(map(str, st))} decay_deep torch fp32": (
        "mambaadv2", "torch", "fp32", {"scan_plan": "decay_deep", "compile_mixer": "default",
                                       "checkpoint_stages": st}) for st in ((2,), (1, 2), (2, 3))},
    "v2 compiled chunk 32 decay_deep torch fp32": (
        "mambaadv2", "torch", "fp32", {"scan_plan": "decay_deep", "compile_mixer": "default",
                                       "chunk_size": 32}),
    "v2 compiled chunk 16 decay_deep torch fp32": (
        "mambaadv2", "torch", "fp32", {"scan_plan": "decay_deep", "compile_mixer": "default",
                                       "chunk_size": 16}),
    "v2 compiled chunk 16 decay_deep torch bf16": (
        "mambaadv2", "torch", "bf16", {"scan_plan": "decay_deep", "compile_mixer": "default",
                                       "chunk_size": 16}),
    "v2 compiled scan_float32 decay_deep torch bf16": (
        "mambaadv2", "torch", "bf16", {"scan_plan": "decay_deep", "compile_mixer": "default",
                                       "scan_float32": True}),
    "v2 compiled chunk 16 scan_float32 decay_deep torch bf16": (
        "mambaadv2", "torch", "bf16", {"scan_plan": "decay_deep", "compile_mixer": "default",
                                       "chunk_size": 16, "scan_float32": True}),
    "v2 compiled reduce-overhead decay_deep torch fp32": (
        "mambaadv2", "torch", "fp32", {"scan_plan": "decay_deep",
                                       "compile_mixer": "reduce-overhead"}),
    "v2 compiled reduce-overhead decay_deep torch bf16": (
        "mambaadv2", "torch", "bf16", {"scan_plan": "decay_deep",
                                       "compile_mixer": "reduce-overhead"}),
    **{f"v2 compiled reduce-overhead chunk 16 decay_deep torch {p}": (  # memory without
        "mambaadv2", "torch", p, {"scan_plan": "decay_deep",  # recomputing: smaller chunks
                                  "compile_mixer": "reduce-overhead", "chunk_size": 16})
       for p in ("fp32", "bf16")},
    **{f"v2 compiled reduce-overhead budget {b} decay_deep torch {p}": (  # memory by recomputing
        "mambaadv2", "torch", p, {"scan_plan": "decay_deep",  # inside the compiled graphs
                                  "compile_mixer": "reduce-overhead", "compile_memory_budget": b})
       for b, p in ((0.5, "fp32"), (0.2, "fp32"), (0.5, "bf16"))},
    "v2 compiled reduce-overhead chunk 16 budget 0.5 decay_deep torch fp32": (  # both levers:
        "mambaadv2", "torch", "fp32", {"scan_plan": "decay_deep",  # chunk 16 alone: 13.3 GiB
                                       "compile_mixer": "reduce-overhead", "chunk_size": 16,
                                       "compile_memory_budget": 0.5}),
    "v2 compiled decay_deep mamba_ssm fp32": (
        "mambaadv2", "mamba_ssm", "fp32", {"scan_plan": "decay_deep", "compile_mixer": "default"}),
    "v2 compiled decay_deep mamba_ssm bf16": (
        "mambaadv2", "mamba_ssm", "bf16", {"scan_plan": "decay_deep", "compile_mixer": "default"}),
    "v1 mamba_ssm fp32": ("mambaad", "mamba_ssm", "fp32", {}),
    "v1 mamba_ssm bf16": ("mambaad", "mamba_ssm", "bf16", {}),
    "v1 mamba_ssm tf32": ("mambaad", "mamba_ssm", "tf32", {}),
})
PROFILED = ("v2 before (materialised, uniform) torch fp32", "v2 scans decay_deep torch fp32",
            "v2 scans decay_deep mamba_ssm fp32", "v2 compiled decay_deep torch fp32")


def select_rows(prefixes: str) -> list[str]:
    """The SPEED_ROWS labels that start with one of the comma-separated `prefixes`, in the
    order of the prefixes (then of SPEED_ROWS); "" selects every row."""
    chosen: list[str] = []
    for prefix in prefixes.split(","):
        chosen += [label for label in SPEED_ROWS if label.startswith(prefix.strip())
                   and label not in chosen]
    if not chosen:
        raise ValueError(f"--prefix {prefixes!r} selects no row of SPEED_ROWS: "
                         f"{list(SPEED_ROWS)}")
    return chosen


def make_room_for_budget(overrides: dict) -> None:
    """Before a row's model is built: when it compiles its mixers under another activation
    memory budget than the one this process's compiled mixers hold (`blocks.compiled`: one
    budget per process), drop the earlier rows' compiled graphs (`reset_compiled_mixers`; their
    models are gone) so that it can compile.

    Implements: no equation.
    """
    from mambaadv2_ref.blocks.compiled import (
        claimed_budget,
        effective_budget,
        reset_compiled_mixers,
    )

    if overrides.get("compile_mixer", "off") == "off" or claimed_budget() is None:
        return
    if effective_budget(overrides.get("compile_memory_budget")) != claimed_budget():
        reset_compiled_mixers()


def row_identity(label: str) -> dict:
    """What a row of SPEED_ROWS is: label, model, backend, precision, overrides."""
    model, backend, precision, overrides = SPEED_ROWS[label]
    return {"label": label, "model": model, "backend": backend, "precision": precision,
            "overrides": overrides}


def bench_row(label: str, iters: int) -> dict:
    """Bench one row of SPEED_ROWS; an error (out of memory, a missing kernel) is recorded."""
    from mambaadv2_ref.studies.speed import bench_model

    row = row_identity(label)
    model, backend, precision, overrides = SPEED_ROWS[label]
    make_room_for_budget(overrides)
    try:
        row.update(bench_model(model, profile="paper", device="cuda", batch_size=16,
                               iters=iters, precision=precision,
                               overrides={"backend": backend, **overrides}))
    except Exception as err:  # out of memory, a kernel that fails: recorded, the grid goes on
        row["error"] = f"{type(err).__name__}: {err}"[:500]
    torch.cuda.empty_cache()
    return row


def profile_row(label: str, out: Path) -> None:
    """torch.profiler over two training steps of one row: the top CUDA kernels, as text."""
    from torch.profiler import ProfilerActivity, profile

    from mambaadv2_ref.config import get_profile
    from mambaadv2_ref.model.factory import build_model
    from mambaadv2_ref.recipe import make_optimizer
    from mambaadv2_ref.runtime import tf32_matmuls, use_bf16
    from mambaadv2_ref.train import train_step

    model, backend, precision, overrides = SPEED_ROWS[label]
    device = torch.device("cuda")
    make_room_for_budget(overrides)
    net = build_model(model, profile="paper", pretrained=False, backend=backend,
                      **overrides).to(device)
    images = torch.randn(16, 3, 256, 256, device=device)
    optimizer = make_optimizer(net, get_profile("paper").lr, 1e-4)
    bf16 = use_bf16(device, precision)

    def step():  # the step that train() and studies.speed.bench_model run
        with tf32_matmuls(precision):
            train_step(net, optimizer, images, 5.0, bf16)

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25,
                                      max_name_column_width=60)
    name = label.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
    (out / f"profile_{name}.txt").write_text(f"{label}, 2 training steps, batch 16\n{table}\n")
    torch.cuda.empty_cache()


def compiling_rows(labels: list[str]) -> list[str]:
    """The labels whose first step compiles kernels: torch.compile of the mixers
    (`compile_mixer`) or mamba-ssm's Triton kernels (backend "mamba_ssm", v2 only)."""
    return [label for label in labels
            if SPEED_ROWS[label][3].get("compile_mixer")
            or (SPEED_ROWS[label][1] == "mamba_ssm" and SPEED_ROWS[label][0] == "mambaadv2")]


(NUM_SCALES,) = {len(spec.channels) for spec in ENCODERS.values()}  # every encoder: three
WARM_TAG = "warm"  # speed_warmN.json: a warm-up's cold row, folded into the timed row


def warm_rows(out: Path, labels: list[str], at_once: int, deadline: float) -> dict[str, dict]:
    """Compile the graphs of `labels` before they are timed: one `speed --iters 1` subprocess
    per row, `at_once` at a time, so that torch.compile's and Triton's disk caches hold them
    when the rows are benched one by one (compilation is CPU work and overlaps; timing does
    not). Returns {label: that process's row}: its first_step_s and first_infer_s are the cold
    compile times, measured beside the other compiles in flight."""
    cold: dict[str, dict] = {}
    todo = list(labels)
    while todo and time.monotonic() < deadline - 30:
        batch, todo = todo[:at_once], todo[at_once:]
        procs = []
        for i, label in enumerate(batch):
            tag = f"{WARM_TAG}{len(cold) + i}"
            log = open(out / f"log_{tag}.txt", "w")  # noqa: SIM115 (closed below)
            procs.append((label, tag, log, subprocess.Popen(
                [sys.executable, "-m", "mambaadv2_ref.studies.gpu_sitting", "speed", "--out",
                 str(out), "--seconds", str(max(60.0, deadline - time.monotonic() - 20)),
                 "--iters", "1", "--prefix", label, "--tag", tag, "--exact", "--no-profile"],
                stdout=log, stderr=subprocess.STDOUT)))
        for label, tag, log, proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic() - 20))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            path = out / f"speed_{tag}.json"
            rows = json.loads(path.read_text())["rows"] if path.exists() else []
            cold[label] = dict(rows[0], parallel=len(batch)) if rows else {
                "error": f"warm-up exited with {proc.returncode}"}
    return cold


def speed(out: Path, seconds: float, iters: int, prefix: str, tag: str, warm: int = 0,
          exact: bool = False, profile: bool = True, warm_only: bool = False) -> None:
    """The rows of the speed grid that `prefix` selects (`select_rows`; with `exact`, the one
    row named), the profiles among them, then (tag "v1") the scaling study, until `seconds`
    have passed; OUT/speed_TAG.json. With `warm` > 0 the rows that compile kernels are first
    compiled `warm` at a time in parallel (`warm_rows`); each such row then records the cold
    compile seconds of its warm-up as cold_first_step_s, cold_first_infer_s and
    cold_parallel, and its own first_step_s is the warm-cache figure. `profile=False` skips
    the profiler tables. `warm_only` stops after the warm-up: the rows' graphs are then in the
    machine's disk caches for a later command to time (OUT/speed_TAG.json holds the cold
    compile seconds of each row, as `cold` rows)."""
    deadline = time.monotonic() + seconds
    result = {"environment": environment(torch.device("cuda")), "rows": []}
    if exact and prefix not in SPEED_ROWS:
        raise ValueError(f"--prefix {prefix!r} with --exact names no row of SPEED_ROWS")
    labels = [prefix] if exact else select_rows(prefix)
    cold = warm_rows(out, compiling_rows(labels), warm, deadline) if warm > 0 else {}
    if warm_only:
        write_json(out / f"speed_{tag}.json", {**result, "warm_only": True, "cold": cold})
        for label, row in cold.items():
            print(f"{label}: compiled in {row.get('first_step_s') or float('nan'):.0f} s"
                  f"{' (' + row['error'] + ')' if row.get('error') else ''}", flush=True)
        return
    for label in labels:
        if time.monotonic() > deadline - 30:  # recorded as skipped, never silently dropped
            row = {**row_identity(label), "skipped": "time box"}
            print(f"{label}: skipped (time box)", flush=True)
        else:
            t0 = time.monotonic()
            row = bench_row(label, iters)
            row["wall_s"] = time.monotonic() - t0
            print(f"{label}: " + (row.get("error") or
                  f"train {row['train_images_per_s']:.1f} img/s, infer "
                  f"{row['infer_images_per_s']:.1f} img/s, peak "
                  f"{row['train_peak_memory_bytes'] / 2**30:.1f} GiB, first step "
                  f"{row['first_step_s']:.1f} s"), flush=True)
        if label in cold:
            row.update({"cold_first_step_s": cold[label].get("first_step_s"),
                        "cold_first_infer_s": cold[label].get("first_infer_s"),
                        "cold_parallel": cold[label].get("parallel"),
                        "cold_error": cold[label].get("error")})
        result["rows"].append(row)
        write_json(out / f"speed_{tag}.json", result)
    for label in PROFILED if profile else ():
        if label in labels and time.monotonic() < deadline - 40:
            try:
                profile_row(label, out)
            except Exception as err:  # a profile is a bonus: report and go on
                print(f"profile {label}: {type(err).__name__}: {err}", flush=True)
    if tag == "v1":
        scaling(out, deadline)


def scaling(out: Path, deadline: float) -> None:
    """Decoder time and memory from 128 to 512 px at batch 8 with the kernels, while time is
    left (mambaadv2 first, then mambaad, then the attention baseline)."""
    from mambaadv2_ref.studies.scaling import decoder_cost

    rows = []
    for name in ("mambaadv2", "mambaad", "attention"):
        for size in (128, 256, 384, 512):
            if time.monotonic() > deadline - 20:
                break
            backend = "torch" if name == "attention" else "mamba_ssm"
            rows.append(decoder_cost(name, "paper", size, 8, torch.device("cuda"), iters=3,
                                     backend=backend))
            torch.cuda.empty_cache()
            write_json(out / "scaling.json", {"environment": environment(torch.device("cuda")),
                                              "backend": "mamba_ssm (attention: torch SDPA)",
                                              "rows": rows})
            print(rows[-1], flush=True)


def start_evaluation(run_dir: Path, log) -> subprocess.Popen:
    """`evaluate --run RUN_DIR` (a run or one of its snapshots) in a subprocess, output to `log`."""
    return subprocess.Popen([sys.executable, "-m", "mambaadv2_ref", "evaluate", "--run",
                             str(run_dir), "--batch-size", "16"], stdout=log,
                            stderr=subprocess.STDOUT)


class SnapshotEvaluator:
    """Evaluates the runs' snapshots (RUN/snapshots/stepN, `train --set snapshot_every=N`) in
    subprocesses (`workers` at a time) while the runs train, oldest step first, so that a
    metric-vs-steps curve costs no extra command."""

    def __init__(self, root: Path, names: list[str], out: Path, workers: int = 1) -> None:
        self.root, self.names, self.out, self.workers = root, names, out, workers
        self.running: dict[Path, tuple[subprocess.Popen, object]] = {}
        self.failed: set[Path] = set()

    def pending(self) -> list[Path]:
        """Snapshots without metrics.json, not being nor failed evaluated, by step then run."""
        todo = [snap for name in self.names for snap in list_snapshots(self.root / name)
                if not (snap / "metrics.json").exists() and snap not in self.failed
                and snap not in self.running]
        return sorted(todo, key=lambda p: (p.name, p.parent.parent.name))

    def poll(self) -> None:
        """Reap finished evaluations, start pending ones up to `workers`."""
        for snap, (proc, log) in list(self.running.items()):
            if proc.poll() is not None:
                if proc.returncode != 0:
                    self.failed.add(snap)
                log.close()
                del self.running[snap]
        for snap in self.pending()[:max(0, self.workers - len(self.running))]:
            log = open(self.out / "log_snapshots.txt", "a")  # noqa: SIM115 (closed in poll)
            self.running[snap] = (start_evaluation(snap, log), log)

    def drain(self, deadline: float) -> None:
        """Evaluate the snapshots still pending until `deadline` (time.monotonic)."""
        while time.monotonic() < deadline and (self.running or self.pending()):
            self.poll()
            time.sleep(1)
        self.stop(timeout=0.0)

    def stop(self, timeout: float = 60.0) -> None:
        """Wait (at most `timeout` seconds) for the evaluations in progress, then kill them."""
        end = time.monotonic() + timeout
        for proc, log in self.running.values():
            try:
                proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        self.running.clear()


def snapshot_curve(run_dir: Path) -> list[dict]:
    """[{step, mean metrics}] of the run's evaluated snapshots: the metric-vs-steps curve."""
    curve = []
    for snap in list_snapshots(run_dir):
        if (snap / "metrics.json").exists():
            metrics = json.loads((snap / "metrics.json").read_text())
            curve.append({"step": metrics["run"]["step"], "mean": metrics["mean"]})
    return curve


def run_environment(parallel: int, env: dict | None = None) -> dict:
    """The environment of one of `parallel` training processes: OMP_NUM_THREADS set to its
    share of the usable CPUs, unless the caller set it. Each PyTorch process otherwise starts
    one CPU thread per core, and several runs then oversubscribe the CPUs. Seen on H200 machines
    (2026-12-03), two commands on two machines, so not a controlled comparison: three runs with
    no thread limit trained at ~9 img/s each beside a 6-job CUDA build and after it; in the
    next command (4 usable CPUs, OMP_NUM_THREADS=4) a paper-profile v2 run trained at 75-95
    img/s beside a 4-job build, and at ~60 beside a v1 run."""
    env = dict(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cpus() // max(1, parallel))))
    return env


def run_until(cmd: list[str], log: Path, deadline: float, what: str) -> None:
    """Run `cmd` (output appended to `log`) if more than 10 s are left before `deadline`
    (time.monotonic); subprocess.run kills it at the deadline, and that is printed."""
    if time.monotonic() >= deadline - 10:
        return
    with open(log, "a") as out:
        try:
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                           timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{what} did not finish in the time box", flush=True)


def score_finished(root: Path, names: list[str], out: Path, deadline: float,
                   scales: tuple[str, ...] = (), normalise: bool = False) -> dict[str, str]:
    """Per-image scores of every run that finished its schedule (`studies.image_scores` into
    OUT/image_scores_NAME.json, one run at a time until `deadline`), so that runs can be
    compared image by image after the machine, and their weights, are gone; `scales` (texts
    of image_scores' --scales, checked before training starts) add one detector per scale
    subset; `normalise` adds image_scores' --normalise readouts (statistics from the training
    images) and `evaluate --readout z` (RUN/metrics_z.json, every metric read from the z maps).
    Returns {name: file} of the runs scored (now or by an earlier command into OUT)."""
    scored = {}
    for name in names:
        run_dir, path = root / name, out / f"image_scores_{name}.json"
        if not (run_dir / MANIFEST).exists():
            continue
        manifest = json.loads((run_dir / MANIFEST).read_text())
        if manifest.get("step") != (manifest.get("train") or {}).get("num_steps"):
            continue
        log = out / f"log_{name}.txt"
        if not path.exists():
            run_until([sys.executable, "-m", "mambaadv2_ref.studies.image_scores", "--run",
                       str(run_dir), "--out", str(path),
                       *[a for text in scales for a in ("--scales", text)],
                       *(["--normalise"] if normalise else [])],
                      log, deadline, f"image scores of {name}")
        if normalise and not (run_dir / "metrics_z.json").exists():
            run_until([sys.executable, "-m", "mambaadv2_ref", "evaluate", "--run", str(run_dir),
                       "--batch-size", "16", "--readout", "z"],  # every metric read from Z
                      log, deadline, f"the z evaluation of {name}")
        if path.exists():
            scored[name] = path.name
    return scored


def train_runs(out: Path, seconds: float, runs: list[dict], eval_workers: int = 1,
               score_scales: tuple[str, ...] = (), score_normalise: bool = False,
               defer_snapshots: bool = False, eval_reserve: float = 60.0) -> None:
    """Start every run (dict: name, args = `train` CLI arguments), evaluate their snapshots
    while they train (`eval_workers` at a time), stop them at the deadline, evaluate each latest
    checkpoint, score the finished ones image by image (all scales, and each subset of
    `score_scales`; with `score_normalise` also image_scores' --normalise readouts and
    `evaluate --readout z`, recorded as metrics_z). With `defer_snapshots` the snapshots are
    evaluated only once the runs have stopped (what is left waits for the next command), so
    that training has the GPU to itself: measured on an H100 (2026-12-07), a v1 run trained at
    ~90 images/s between evaluations and at 20-25 while one ran beside it. Training stops
    `eval_reserve` seconds before the deadline, for the evaluations after it (deferred
    snapshots need more than the default). Runs live in runs/sitting/NAME (kept between
    commands)."""
    deadline = time.monotonic() + seconds
    out.mkdir(parents=True, exist_ok=True)
    root = Path("runs/sitting")
    procs = {}
    for run in runs:
        run_dir = root / run["name"]
        resume = ["--resume"] if (run_dir / MANIFEST).exists() else []
        cmd = [sys.executable, "-m", "mambaadv2_ref", "train", "--out", str(run_dir),
               *resume, *run["args"]]
        log = open(out / f"log_{run['name']}.txt", "a")  # noqa: SIM115 (closed at the end)
        procs[run["name"]] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True,
                                               env=run_environment(len(runs))), log)
    snapshots = SnapshotEvaluator(root, [run["name"] for run in runs], out, eval_workers)
    while time.monotonic() < deadline - eval_reserve and any(
            p.poll() is None for p, _ in procs.values()):
        if not defer_snapshots:
            snapshots.poll()
        time.sleep(5)
    snapshots.stop()
    for p, _ in procs.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
    time.sleep(10)
    for p, log in procs.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        log.close()
    evaluations = {run["name"]: start_evaluation(
        root / run["name"], open(out / f"log_{run['name']}.txt", "a"))  # noqa: SIM115
        for run in runs if (root / run["name"] / MANIFEST).exists()}
    for name, p in evaluations.items():
        try:
            p.wait(timeout=max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            print(f"evaluation of {name} did not finish in the time box", flush=True)
    scored = score_finished(root, [run["name"] for run in runs], out, deadline - 15,
                            score_scales, score_normalise)
    snapshots.drain(deadline - 5)
    for run in runs:
        run_dir = root / run["name"]
        record = {"name": run["name"], "args": run["args"], "environment": environment()}
        if (run_dir / MANIFEST).exists():
            manifest = json.loads((run_dir / MANIFEST).read_text())
            record.update({k: manifest.get(k) for k in ("step", "history", "train",
                                                        "train_seconds", "model_config")})
            for key, file in (("metrics", "metrics.json"), ("metrics_z", "metrics_z.json")):
                if (run_dir / file).exists():
                    metrics = json.loads((run_dir / file).read_text())
                    if metrics.get("run", {}).get("step") == record["step"]:  # not stale
                        record[key] = metrics
            record["curve"] = snapshot_curve(run_dir)
            if run["name"] in scored:
                record["image_scores"] = scored[run["name"]]
        write_json(out / f"train_{run['name']}.json", record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("speed", "train"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--runs", help="train: JSON file, a list of {name, args}")
    parser.add_argument("--eval-workers", type=int, default=1,
                        help="train: snapshot evaluations at once")
    parser.add_argument("--score-scales", action="append", default=[],
                        help="train: also score finished runs from these scales only, e.g. 0 "
                             "or 1,2 (image_scores --scales; repeat for several subsets)")
    parser.add_argument("--score-normalise", action="store_true",
                        help="train: also score finished runs by the readouts normalised by "
                             "their good training images (image_scores --normalise)")
    parser.add_argument("--prefix", default="",
                        help="speed: comma-separated label prefixes (rows in that order)")
    parser.add_argument("--tag", default="all", help="speed: OUT/speed_TAG.json")
    parser.add_argument("--warm", type=int, default=0,
                        help="speed: compile the compiling rows this many at a time in parallel "
                             "before timing them one by one (0: no warm-up)")
    parser.add_argument("--exact", action="store_true",
                        help="speed: --prefix is one row's whole label")
    parser.add_argument("--no-profile", action="store_true",
                        help="speed: skip the profiler tables of the PROFILED rows")
    parser.add_argument("--warm-only", action="store_true",
                        help="speed: compile the rows (--warm K) and stop, timing nothing: a "
                             "later command on the same machine times them from the caches")
    parser.add_argument("--eval-reserve", type=float, default=None, metavar="SECONDS",
                        help="train: stop training this long before --seconds end, for the "
                             "evaluations (default 60; more with --defer-snapshots)")
    parser.add_argument("--defer-snapshots", action="store_true",
                        help="train: evaluate the snapshots only after the runs stop, so that "
                             "no evaluation shares the GPU with training")
    args = parser.parse_args(argv)
    if args.warm < 0:
        parser.error(f"--warm must be >= 0, got {args.warm}")
    if args.score_normalise and args.stage != "train":
        parser.error("--score-normalise scores finished training runs: it needs stage 'train'")
    if args.warm_only and (args.stage != "speed" or args.warm < 1):
        parser.error(f"--warm-only compiles the speed rows and times nothing: it needs stage "
                     f"'speed' and --warm K >= 1, got stage {args.stage!r}, --warm {args.warm}")
    if args.eval_reserve is not None and (args.stage != "train"
                                          or not 0 <= args.eval_reserve < args.seconds):
        parser.error(f"--eval-reserve is the end of a train stage's --seconds kept for the "
                     f"evaluations: it needs stage 'train' and 0 <= it < --seconds "
                     f"({args.seconds:g}), got stage {args.stage!r}, {args.eval_reserve:g}")
    if args.defer_snapshots and args.stage != "train":
        parser.error("--defer-snapshots is about training runs: it needs stage 'train'")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage == "speed":
        speed(out, args.seconds, args.iters, args.prefix, args.tag, args.warm, args.exact,
              profile=not args.no_profile, warm_only=args.warm_only)
    else:
        if not args.runs:
            parser.error("train needs --runs")
        try:
            for text in args.score_scales:
                if max(parse_scales(text)) >= NUM_SCALES:
                    raise ValueError(f"--scales {text!r}: the encoders have {NUM_SCALES} "
                                     f"scales, 0..{NUM_SCALES - 1} (0 = finest)")
        except ValueError as err:
            parser.error(str(err).replace("--scales", "--score-scales"))
        train_runs(out, args.seconds, json.loads(Path(args.runs).read_text()),
                   args.eval_workers, tuple(args.score_scales), args.score_normalise,
                   args.defer_snapshots,
                   60.0 if args.eval_reserve is None else args.eval_reserve)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
