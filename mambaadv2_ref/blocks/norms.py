"""Normalisation layers of the HSS blocks: RMSNorm and Mamba-2's gated RMSNorm.

Glossary (code -> symbol): `x` -> y (scan output), `z` -> z (gate), `weight` -> w, `eps` -> epsilon,
`group_size` -> size of the channel groups normalised separately (Mamba-2: d_inner / ngroups).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5,
             group_size: int | None = None) -> torch.Tensor:
    """Root-mean-square normalisation over the last dimension, optionally in groups.

    Args:
        x: (..., D).
        weight: (D,) per-channel scale w.
        eps: epsilon added to the mean square.
        group_size: normalise each consecutive group of this many channels on its own
            (None: one group of D channels).

    Returns:
        (..., D) tensor x / sqrt(mean_group(x^2) + eps) * w, computed in at least fp32
            and cast back.

    Implements: RMSNorm (Zhang & Sennrich 2019); grouped as Mamba-2's `rms_norm_ref`.
    """
    D = x.shape[-1]
    group_size = D if group_size is None else group_size
    if D % group_size:
        raise ValueError(f"group_size={group_size} must divide the last dimension {D}")
    dtype = torch.promote_types(x.dtype, torch.float32)  # fp16/bf16 -> fp32, fp64 stays
    xf = x.to(dtype).unflatten(-1, (D // group_size, group_size))  # (..., G, D/G)
    xf = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    return (xf.flatten(-2) * weight.to(dtype)).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension with a learned scale (init 1). See `rms_norm`."""

    def __init__(self, dim: int, eps: float = 1e-5, group_size: int | None = None):
        super().__init__()
        self.eps, self.group_size = eps, group_size
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, self.group_size)


class RMSNormGated(nn.Module):
    """Mamba-2's gated RMSNorm: norm(y * silu(z)) * w, normalised per group of channels.

    Args:
        dim: number of channels D (d_inner).
        group_size: channels per normalisation group (Mamba-2: d_inner / ngroups).
        eps: epsilon.

    Implements: `RMSNormGated(norm_before_gate=False)` of Mamba-2 (book appendix A.3.2).
    """

    def __init__(self, dim: int, group_size: int | None = None, eps: float = 1e-5):
        super().__init__()
        self.eps, self.group_size = eps, group_size
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Args: y, z (..., D). Returns (..., D) rms_norm(y * silu(z)) * w."""
        if y.shape != z.shape:
            raise ValueError(f"y and z must have the same shape, got {tuple(y.shape)} "
                             f"and {tuple(z.shape)}")
        return rms_norm(y * F.silu(z), self.weight, self.eps, self.group_size)
