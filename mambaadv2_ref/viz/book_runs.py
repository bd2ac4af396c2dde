"""The short live training run of chapters 11-12, and the committed results the book shows.

Chapter 11 trains the model of the chapter's profile for a few steps (`live_run(fresh=True)`);
chapter 12 reuses that run when it exists and was made with the same settings, and otherwise
trains it itself (`train`'s exact resume makes the reuse safe: a finished run with the same
settings resumes at its last step and returns at once). Full runs are too long for a chapter:
their results are committed under `mambaadv2_ref/results/` and read with `committed_results`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mambaadv2_ref.train import TrainConfig, train

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
# steps of the live run per profile: about half a minute on 2 CPU cores for tiny
LIVE_STEPS = {"tiny": 40, "small": 40, "paper": 300}


def live_run_config(out: str | Path, profile: str, device: str = "auto",
                    steps: int | None = None) -> TrainConfig:
    """The TrainConfig of the book's live run: all embedded classes, the profile's sizes.

    Args:
        out: run directory.
        profile: "tiny" | "small" | "paper".
        device: "auto" | "cpu" | "cuda[:N]".
        steps: optimisation steps; None takes LIVE_STEPS[profile].

    Returns:
        TrainConfig with log_every=5 (a loss curve with a few points).
    """
    if profile not in LIVE_STEPS:
        raise ValueError(f"profile must be one of {sorted(LIVE_STEPS)}, got {profile!r}")
    return TrainConfig(out=str(out), profile=profile, device=device,
                       steps=LIVE_STEPS[profile] if steps is None else steps, log_every=5,
                       resume=True)


def live_run(out: str | Path, profile: str, device: str = "auto", fresh: bool = False,
             steps: int | None = None) -> dict:
    """Train the live run into `out` (or reuse a finished one) and return its checkpoint meta.

    Args:
        out: run directory.
        profile, device, steps: see `live_run_config`.
        fresh: delete `out` first, so the run is trained now.

    Returns:
        the run's checkpoint metadata (history, train_seconds, device, ...).
    """
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    return train(live_run_config(out, profile, device, steps))


def committed_results(name: str) -> dict | None:
    """Load `mambaadv2_ref/results/<name>` (a JSON file) if it is committed, else None.

    Args:
        name: file name, e.g. "pipeline_results.json".

    Returns:
        the parsed JSON, or None when the file does not exist (the book then says so).
    """
    path = RESULTS_DIR / name
    if path.suffix != ".json":
        raise ValueError(f"name must be a .json file name, got {name!r}")
    return json.loads(path.read_text()) if path.is_file() else None


def list_results() -> list[str]:
    """Names of the JSON result files committed under `mambaadv2_ref/results/`, sorted."""
    return sorted(p.name for p in RESULTS_DIR.glob("*.json")) if RESULTS_DIR.is_dir() else []
