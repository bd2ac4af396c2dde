"""Where and how a run executes: the device, the precision of its steps, its seeds."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from mambaadv2_ref.config import PRECISIONS


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


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether a step runs under bf16 autocast.

    Args:
        device: the device of the step.
        precision: "bf16" (on CUDA), "fp32" or "tf32" (never: float32 steps), or "auto": bf16
            on CUDA GPUs that compute in bf16 natively (compute capability 8.0 on, Ampere and
            later), float32 elsewhere, e.g. on Colab's T4 or on a CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type != "cuda" or precision in ("fp32", "tf32"):
        return False
    return precision == "bf16" or torch.cuda.get_device_capability(device) >= (8, 0)


@contextlib.contextmanager
def tf32_matmuls(precision: str):
    """Inside: float32 matrix products on TensorFloat-32 tensor cores when precision is "tf32",
    in full float32 otherwise (`torch.backends.cuda.matmul.allow_tf32`, restored on exit).

    TF32 keeps float32's range and rounds each product's operands to a 10-bit mantissa (about
    5e-4 relative), accumulating in float32: a named precision, not the same function as "fp32".
    It only acts on CUDA matrix products (cuDNN convolutions use TF32 by torch's default).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy and PyTorch (CPU and every GPU)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
