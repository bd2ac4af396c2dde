"""The short live training run of chapters 11-12.

Chapter 11 trains the model of the chapter's profile for a few steps (`live_run(fresh=True)`);
chapter 12 reuses that run when it exists and was made with the same settings, and otherwise
trains it itself (`train`'s exact resume makes the reuse safe: a finished run with the same
settings resumes at its last step and returns at once). Full runs are too long for a chapter:
their results are committed under `book/results/` and read with `studies.results`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from mambaadv2_ref.config import get_profile
from mambaadv2_ref.runtime import resolve_device, use_bf16
from mambaadv2_ref.train import train
from mambaadv2_ref.train_config import TrainConfig

# steps of the live run per profile: about half a minute on 2 CPU cores for tiny
LIVE_STEPS = {"tiny": 40, "small": 40, "paper": 300}
# GiB of training peak memory per image of batch, MambaADv2, measured with `bench model` on an
# H200 (paper: 41.7 GiB bf16 and 52.7 GiB fp32 at batch 16, with checkpoint_matrix; small:
# 14.8 GiB bf16 at batch 8 before it): the live run's batch is cut to fit smaller GPUs
GIB_PER_IMAGE = {("paper", True): 2.6, ("paper", False): 3.3, ("small", True): 1.9,
                 ("small", False): 2.4}


def live_batch_size(profile: str, device: str = "auto") -> int | None:
    """Batch of the live run: the profile's, or on a GPU too small for it, what fits in 85 % of
    its memory by `GIB_PER_IMAGE` (at least 1; the learning rate follows the batch). None means
    the profile's batch (CPU, tiny, or a GPU large enough).
    """
    dev = resolve_device(device)
    if dev.type != "cuda" or (profile, True) not in GIB_PER_IMAGE:
        return None
    per_image = GIB_PER_IMAGE[(profile, use_bf16(dev))]
    total_gib = torch.cuda.get_device_properties(dev).total_memory / 2**30
    fits = max(1, int(0.85 * total_gib / per_image))
    return fits if fits < get_profile(profile).batch_size else None


def live_run_config(out: str | Path, profile: str, device: str = "auto",
                    steps: int | None = None) -> TrainConfig:
    """The TrainConfig of the book's live run: all embedded classes, the profile's sizes.

    Args:
        out: run directory.
        profile: "tiny" | "small" | "paper".
        device: "auto" | "cpu" | "cuda[:N]".
        steps: optimisation steps; None takes LIVE_STEPS[profile].

    Returns:
        TrainConfig with log_every=5 (a loss curve with a few points) and the batch of
        `live_batch_size`.
    """
    if profile not in LIVE_STEPS:
        raise ValueError(f"profile must be one of {sorted(LIVE_STEPS)}, got {profile!r}")
    return TrainConfig(out=str(out), profile=profile, device=device,
                       steps=LIVE_STEPS[profile] if steps is None else steps, log_every=5,
                       resume="auto", batch_size=live_batch_size(profile, device))


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
