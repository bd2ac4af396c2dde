"""The runs behind pipeline_results.json: for one dataset, benchmark, train and evaluate
mambaadv2, mambaad (our MambaAD v1 configuration) and patchcore, all on the efficientnet_lite0
offline ImageNet weights, through the command line only (each step is one
`python -m mambaadv2_ref ...` process, as a user would run it).

    python -m mambaadv2_ref.studies.pipeline_runs NAME DATA PROFILE STEPS RUNS_DIR \
        [--device auto] [--budget-s 120] [--models mambaadv2,mambaad,patchcore] [--workers 0]

DATA is a dataset root, or - for the embedded dataset. STEPS is the number of optimisation steps
of mambaadv2 and mambaad (the same for both), or "auto": BUDGET_S seconds at the slower model's
training throughput measured by `bench model` (at least 50). A failing model does not stop the
others. Each model is trained afresh (`train --force` replaces a run left in RUNS_DIR/NAME by
an earlier call). RUNS_DIR/NAME then holds what `studies.pipeline_results` collects.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from mambaadv2_ref.config import DETECTORS, MODELS

ENCODER = "efficientnet_lite0"


def cli(*args: str) -> int:
    """Run `python -m mambaadv2_ref ARGS` in a fresh process; return its exit status."""
    return subprocess.run([sys.executable, "-m", "mambaadv2_ref", *args], check=False).returncode


def write_hardware(path: Path) -> None:
    """hardware.txt as `pipeline_results.read_hardware` reads it: CPU, cores, GPU names."""
    lines = [f"Model name: {platform.processor() or platform.machine()}", str(os.cpu_count())]
    lines += [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    path.write_text("\n".join(lines) + "\n")


def budget_steps(out: Path, profile: str, device: str, budget_s: float) -> int:
    """Steps that train the slower state space model for `budget_s` seconds (`bench model`)."""
    rates = []
    for model in MODELS:
        bench = out / f"bench_{model}.json"
        if cli("bench", "model", "--model", model, "--profile", profile, "--encoder", ENCODER,
               "--device", device, "--iters", "10", "--out", str(bench)):
            raise RuntimeError(f"bench model --model {model} failed; see its output above")
        result = json.loads(bench.read_text())
        rates.append(result["train_images_per_s"] / result["batch_size"])
    return max(50, int(budget_s * min(rates)))


def run_dataset(name: str, data: str, profile: str, steps: str, runs: Path,
                device: str = "auto", budget_s: float = 120.0,
                models: tuple[str, ...] = DETECTORS, workers: int = 0) -> list[str]:
    """Benchmark (for STEPS=auto), train and evaluate every model on one dataset.

    Returns:
        the models that failed (empty when all ran).
    """
    unknown = sorted(set(models) - set(DETECTORS))
    if unknown:
        raise ValueError(f"models: unknown {unknown}; choose from {list(DETECTORS)}")
    out = Path(runs) / name
    out.mkdir(parents=True, exist_ok=True)
    write_hardware(out / "hardware.txt")
    if steps != "auto" and not str(steps).isdigit():
        raise ValueError(f'steps must be a positive int or "auto", got {steps!r}')
    n = budget_steps(out, profile, device, budget_s) if steps == "auto" else int(steps)
    data_args = [] if data == "-" else ["--data", data]
    failed = []
    for model in models:
        run = str(out / model)
        ok = cli("train", *data_args, "--profile", profile, "--model", model, "--encoder",
                 ENCODER, "--steps", str(n), "--device", device, "--out", run, "--force",
                 "--set", f"num_workers={workers}") == 0 and \
            cli("evaluate", "--run", run, "--device", device) == 0
        if not ok:
            print(f"FAILED: {name} {model}", flush=True)
            failed.append(model)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("data", help="dataset root, or - for the embedded dataset")
    parser.add_argument("profile")
    parser.add_argument("steps", help='optimisation steps, or "auto"')
    parser.add_argument("runs", help="runs folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget-s", type=float, default=120.0)
    parser.add_argument("--models", default=",".join(DETECTORS), help="comma list")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    args = parser.parse_args(argv)
    failed = run_dataset(args.name, args.data, args.profile, args.steps, Path(args.runs),
                         args.device, args.budget_s, tuple(args.models.split(",")),
                         args.workers)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
