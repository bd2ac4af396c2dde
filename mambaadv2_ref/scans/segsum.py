"""Segment sums of log-decays: the exponent of the 1-semiseparable mask of SSD and Mamba-3.

Glossary (code name -> symbol):
    a        -> log-decay a_t = Delta_t * A (or A_t * Delta_t for Mamba-3), shape (..., T)
    segsum   -> S_ts = sum_{r=s+1..t} a_r for t >= s, -inf above the diagonal
"""

from __future__ import annotations

import torch


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Stable segment sum S_ts = sum_{r=s+1..t} a_r (t >= s), -inf for t < s.

    Uses a masked cumulative sum (each entry is summed over its own segment only) instead of the
    difference of two long cumulative sums, which cancels catastrophically for long spans.

    Args:
        a: log-decays (..., T).
    Returns:
        S (..., T, T); exp(S) is the causal decay mask L of SSD.
    Implements: segsum in book appendix A.3.2 (mask L = exp(segsum(dt * A))).
    """
    T = a.shape[-1]
    strictly_lower = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)
    # x[..., r, s] = a_r for r > s, else 0; cumsum over r gives sum_{s < r <= t} a_r at row t.
    x = a.unsqueeze(-1).expand(*a.shape, T).masked_fill(~strictly_lower, 0.0)
    out = torch.cumsum(x, dim=-2)
    lower = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()
    return out.masked_fill(~lower, -torch.inf)


def decay_mask(a: torch.Tensor) -> torch.Tensor:
    """The causal decay mask L = exp(segsum(a)), 0 above the diagonal, built without -inf.

    Same values as `torch.exp(segsum(a))`, but the strictly-upper entries are exponentiated as
    exp(0) and zeroed afterwards: exp(-inf) takes a slow path on CPUs (about 2x), and this mask is
    the largest elementwise tensor of the chunked scans.

    Args:
        a: log-decays (..., T).
    Returns:
        L (..., T, T) with L_ts = exp(sum_{r=s+1..t} a_r) for t >= s, else 0.
    Implements: L = exp(segsum(dt * A)) of book appendix A.3.2.
    """
    T = a.shape[-1]
    x = a.unsqueeze(-1).expand(*a.shape, T).tril(-1)  # x[..., r, s] = a_r for r > s, else 0
    return torch.cumsum(x, dim=-2).exp().tril()


def segsum_two_sided(a: torch.Tensor) -> torch.Tensor:
    """Two-sided (mirrored) segment sum: S_ts for t >= s and S_st for t < s.

    The backward half mirrors the forward one, so exp of the result is a symmetric mask. When all
    a_r <= 0 (A < 0, Delta >= 0, as in every Mamba) it equals -|sum of a_r between s and t|, the
    sum running over r in (min(s,t), max(s,t)].

    Args:
        a: log-decays (..., T).
    Returns:
        (..., T, T), finite everywhere.
    Implements: the non-causal decay mask L_ts = exp(-|sum_{r in (s,t]} a_r|) of ssd_matrix.
    """
    forward = segsum(a)
    lower = torch.ones(forward.shape[-2:], dtype=torch.bool, device=a.device).tril()
    return torch.where(lower, forward, forward.transpose(-1, -2))
