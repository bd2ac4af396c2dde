"""What keeps a run's work safe: the run folder checked before any work, a checkpoint on Ctrl-C,
a stop on a non-finite loss (`train` uses every piece; the cases are listed in its docstring and
in the book's page on bad input).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from pathlib import Path

import torch

from mambaadv2_ref.checkpoint import MANIFEST


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message names the step and the checkpoint that is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; a checkpoint was saved and the message says how to resume."""


RUN_FILES = (MANIFEST, "metrics.json", "maps", "snapshots", "weights-step*.safetensors",
             "optimizer-step*.safetensors")


def run_files(out: Path) -> list[Path]:
    """The files of a previous run in `out` (checkpoint, metrics.json, maps/, snapshots/)."""
    return sorted(p for pattern in RUN_FILES for p in Path(out).glob(pattern))


def prepare_out(out: str | Path, resume: bool | str, force: bool) -> bool:
    """Check the run folder before any work (deleting nothing); return whether to resume.

    Args:
        out: run directory. resume: True, False or "auto" (TrainConfig.resume). force: replace
            an existing run.

    Raises:
        ValueError: `out` is a file or not writable, `resume=True` without a checkpoint, an
            existing run without `resume` or `force`, or `resume` and `force` together.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; expected a folder for the run")
    if resume is True and force:
        raise ValueError("give --resume (continue the run) or --force (replace it), not both")
    has_checkpoint = (out / MANIFEST).is_file()
    if resume is True and not has_checkpoint:
        raise ValueError(f"--resume: no checkpoint in {str(out)!r} ({MANIFEST} is missing); "
                         "leave out --resume to start a new run there")
    old = run_files(out) if out.is_dir() else []
    if not (resume and has_checkpoint) and old and not force:
        names = ", ".join(p.name for p in old)
        raise ValueError(f"--out {str(out)!r} already holds a run ({names}); pass --resume "
                         "to continue it or --force to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"--out {str(out)!r} is not writable: {err}") from err
    return bool(resume) and has_checkpoint


def clear_run(out: str | Path) -> None:
    """Delete the files of a previous run in `out` (what `force` replaces; nothing else)."""
    for path in run_files(Path(out)):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def check_free_space(out: Path, model: torch.nn.Module, with_optimizer: bool) -> None:
    """Raise ValueError when `out`'s disk cannot hold two checkpoints (a save writes the new
    files before deleting the old)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    needed = 2 * (weights + (2 * trainable if with_optimizer else 0))
    free = shutil.disk_usage(out).free
    if free < needed:
        raise ValueError(f"--out {str(out)!r}: {free / 2**20:.0f} MiB free on its disk, a "
                         f"checkpoint needs ~{needed / 2**20:.0f} MiB (two while saving)")


class CtrlC:
    """While active (main thread only), the first SIGINT asks to stop after the current step;
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested, self._previous = False, None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: saving a checkpoint after this step (Ctrl-C again quits without it)",
              flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def check_finite_loss(loss_sum: torch.Tensor, since: int, step: int, out: str,
                       saved: int | None) -> None:
    """Raise TrainingDiverged when the summed loss of steps since+1..step is NaN/inf."""
    if bool(torch.isfinite(loss_sum)):
        return
    kept = (f"the last good checkpoint (step {saved}) is kept in {Path(out) / MANIFEST}"
            if saved is not None else "no checkpoint had been saved yet")
    raise TrainingDiverged(f"the loss became NaN/inf between steps {since + 1} and {step}; "
                           f"training stopped and {kept}. Lower the learning rate (--set "
                           "lr=...) or check the data")
