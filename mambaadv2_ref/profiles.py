"""Named run profiles (`tiny`, `small`, `paper`) and the device choice.

A profile fixes the run-time settings that the book, the command line and the benchmarks share
(image size, batch size, number of steps). The model sizes that go with each profile live beside
the model (`mambaadv2_ref.model.config`), keyed by the same names.

`tiny` runs the whole book on a laptop CPU in minutes, `small` is the largest size that trains on a
CPU in tens of minutes, `paper` is the paper's setting (256 px, batch 16) for a GPU.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

PROFILE_ENV = "MAMBAADV2_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Run-time settings of one profile.

    Args:
        name: profile name.
        image_size: side of the square network input, in pixels.
        batch_size: training batch size.
        num_steps: default number of optimisation steps.
        lr: AdamW learning rate; MambaAD uses 0.005 x batch / 16.
    """

    name: str
    image_size: int
    batch_size: int
    num_steps: int

    @property
    def lr(self) -> float:
        return 0.005 * self.batch_size / 16

    def to_dict(self) -> dict:
        return {**asdict(self), "lr": self.lr}


PROFILES: dict[str, Profile] = {
    "tiny": Profile("tiny", image_size=128, batch_size=8, num_steps=150),
    "small": Profile("small", image_size=192, batch_size=8, num_steps=1500),
    "paper": Profile("paper", image_size=256, batch_size=16, num_steps=20000),
}


def get_profile(name: str | None = None) -> Profile:
    """Return the profile called `name`, or the default one (see `default_profile_name`)."""
    name = default_profile_name() if name is None else name
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {name!r}")
    return PROFILES[name]


def default_profile_name() -> str:
    """`$MAMBAADV2_PROFILE` if set, else `paper` when a CUDA GPU is present, else `tiny`."""
    name = os.environ.get(PROFILE_ENV)
    if name:
        if name not in PROFILES:
            raise ValueError(f"{PROFILE_ENV} must be one of {sorted(PROFILES)}, got {name!r}")
        return name
    return "paper" if torch.cuda.is_available() else "tiny"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn "auto" into cuda when available, else cpu; check an explicit choice can run."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA GPU is available; "
                         "use --device cpu or --device auto")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from err


PRECISIONS = ("auto", "bf16", "fp32")


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether a step runs under bf16 autocast.

    Args:
        device: the device of the step.
        precision: "bf16" (on CUDA), "fp32" (never), or "auto": bf16 on CUDA GPUs that compute
            in bf16 natively (compute capability 8.0 on, Ampere and later), float32 elsewhere,
            e.g. on Colab's T4 or on a CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return False
    return precision == "bf16" or torch.cuda.get_device_capability(device) >= (8, 0)

