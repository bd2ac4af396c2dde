"""Small helpers shared by every scan: input checks, compute dtype, softplus, skip and gate.

Glossary (code name -> symbol):
    delta, dt   -> Delta (step size, after bias and softplus)
    D           -> skip weight D (per channel or head)
    z           -> gate input; out = y * silu(z)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

SOFTPLUS_THRESHOLD = 20.0


def check_tensor(name: str, t, labels: Sequence[str], sizes: Sequence[int | None],
                 like: torch.Tensor | None = None) -> torch.Tensor:
    """Check that `t` is a real floating tensor of the expected shape, on `like`'s device.

    Args:
        name: argument name used in the error message.
        t: the value to check.
        labels: symbolic dimension names, e.g. ("b", "L", "h", "p").
        sizes: expected sizes, None where any size is allowed.
        like: a tensor whose device `t` must share.
    Returns:
        `t` unchanged.
    Raises:
        TypeError: not a tensor, or not a real floating dtype.
        ValueError: wrong shape (the message names the expected shape) or wrong device.
    """
    expected = "(" + ", ".join(labels) + ")"
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, "
                        f"got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a real floating tensor (float16/bfloat16/float32/"
                        f"float64), got {t.dtype}")
    shape_ok = t.dim() == len(sizes) and all(
        s is None or s == n for s, n in zip(sizes, t.shape, strict=False))
    if not shape_ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in sizes) + ")"
        raise ValueError(f"{name} must have shape {expected} = {want}, got {tuple(t.shape)}")
    if like is not None and t.device != like.device:
        raise ValueError(f"{name} must be on device {like.device} like the other inputs, "
                         f"got {t.device}")
    return t


def check_positive_int(name: str, value) -> int:
    """Check that `value` is a positive int (e.g. chunk_size) and return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int (> 0), got {value}")
    return value


def check_divides(name: str, small: int, big_name: str, big: int) -> None:
    """Raise ValueError unless `small` divides `big` (groups g must divide heads h)."""
    if small <= 0 or big % small != 0:
        raise ValueError(f"{name} ({small}) must divide {big_name} ({big})")


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """Dtype the torch paths compute in: the promoted input dtype, at least float32.

    float64 inputs compute in float64 (the gold references); float16/bfloat16 upcast to float32,
    as mamba-ssm's own references do.
    """
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def softplus20(x: torch.Tensor) -> torch.Tensor:
    """softplus with mamba-ssm's threshold: log(1 + e^x) for x <= 20, x itself above.

    Implements: Delta = softplus(delta + delta_bias) (book appendix A.3.1).
    """
    return F.softplus(x, beta=1.0, threshold=SOFTPLUS_THRESHOLD)


def prepare_step(delta: torch.Tensor, bias: torch.Tensor | None, softplus: bool) -> torch.Tensor:
    """Step size Delta = softplus?(delta + bias); `bias` broadcasts on the last axis given."""
    if bias is not None:
        delta = delta + bias
    return softplus20(delta) if softplus else delta


def skip_and_gate(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None,
                  z: torch.Tensor | None) -> torch.Tensor:
    """Output y + D * x, then times silu(z).

    Implements: y_t = ... + D x_t; out = y * silu(z) (book appendix A.3.1-A.3.3). `D` must already
    broadcast against `x`.
    """
    if D is not None:
        y = y + D * x
    if z is not None:
        y = y * F.silu(z)
    return y
