"""Set-up shared by every chapter of the book: seeds, profile, device and scan backend.

Each chapter's second cell is::

    from mambaadv2_ref.viz.chapter import setup_chapter
    env = setup_chapter()

which prints one line such as ``device=cpu, profile=tiny, scan backend=torch`` so that every page
says where its numbers come from.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from mambaadv2_ref.config import Profile, get_profile
from mambaadv2_ref.runtime import resolve_device, seed_everything


@dataclass(frozen=True)
class ChapterEnv:
    """What a chapter runs on.

    Args:
        seed: the seed given to Python, NumPy and PyTorch.
        profile: the run profile (`tiny` without a GPU, `paper` with one, or $MAMBAADV2_PROFILE).
        device: the torch device chosen by `resolve_device("auto")`.
        scan_backend: the scan backend that `backend="auto"` uses on this device.
        colab: whether the chapter runs in Google Colab.
    """

    seed: int
    profile: Profile
    device: torch.device
    scan_backend: str
    colab: bool

    def summary(self) -> str:
        """The one line that `setup_chapter` prints."""
        return (f"device={self.device.type}, profile={self.profile.name}, "
                f"scan backend={self.scan_backend}")


def in_colab() -> bool:
    """True when running inside Google Colab (its `google.colab` module is loaded)."""
    return "google.colab" in sys.modules


def scan_backend_name(device: torch.device) -> str:
    """Name the backend that the scans' `backend="auto"` picks on `device`.

    mamba-ssm's kernels run only on CUDA tensors, so on a CPU the answer is always `torch`; on a
    GPU it lists the mamba-ssm kernels that `available_backends()` reports usable
    (e.g. ``mamba_ssm (s6, ssd, mamba3)``), the others falling back to torch.
    """
    try:
        from mambaadv2_ref.scans import available_backends
    except ImportError as err:  # the scans package is missing or broken: say so, do not hide it
        return f"torch (scans package not importable: {err})"
    if device.type != "cuda":
        return "torch"
    usable = [name.removeprefix("mamba_ssm_") for name, (ok, _) in available_backends().items()
              if name.startswith("mamba_ssm_") and ok]
    if not usable:
        reason = available_backends().get("mamba_ssm_ssd", (False, "not listed"))[1]
        return f"torch (mamba_ssm unavailable: {reason})"
    return f"mamba_ssm ({', '.join(usable)}), torch otherwise"


def use_inline_figures() -> bool:
    """In IPython, show returned matplotlib Figures as images (`%matplotlib inline`).

    The book's plots are plain `Figure` objects (see `viz.plots`); IPython learns to draw them
    once the inline backend is on. Returns False (and does nothing) outside IPython.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.run_line_magic("matplotlib", "inline")
    return True


def setup_chapter(seed: int = 0, profile: str | None = None, device: str = "auto") -> ChapterEnv:
    """Seed everything, pick the profile and device, and print them with the scan backend.

    Also turns on inline figures in a notebook (`use_inline_figures`).

    Args:
        seed: seed for Python, NumPy and PyTorch.
        profile: profile name; None takes $MAMBAADV2_PROFILE, else `paper` on a GPU, else `tiny`.
        device: "auto" (cuda when available, else cpu), "cpu" or "cuda[:N]".

    Returns:
        The `ChapterEnv` that the chapter passes on (``env.device``, ``env.profile``...).
    """
    seed_everything(seed)
    use_inline_figures()
    chosen_device = resolve_device(device)
    env = ChapterEnv(seed=seed, profile=get_profile(profile), device=chosen_device,
                     scan_backend=scan_backend_name(chosen_device), colab=in_colab())
    print(env.summary())
    return env
