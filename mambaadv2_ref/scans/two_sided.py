"""The two-sided SSD matrix as two linear scans: the HSS matrix path in O(L) instead of O(L^2).

With log-decays a_r <= 0 the two-sided mask M_ts = exp(-|sum_{r in (min(s,t), max(s,t)]} a_r|)
(`segsum.segsum_two_sided`) is the causal SSD mask below the diagonal and its mirror above, each
side 1-semiseparable. So the materialised product splits into two scans:

    (M o C B^T) Xbar = causal(Xbar) + anticausal(Xbar) - diag(C_t . B_t) Xbar           (TS.1)
    causal_t     = sum_{s <= t} C_t . B_s exp(sum_{r=s+1..t} a_r) Xbar_s     (SSD.3 = SSD.4)
    anticausal_t = sum_{s >= t} C_t . B_s exp(sum_{r=t+1..s} a_r) Xbar_s                (TS.2)

The diagonal (s = t) is in both sums, hence the subtraction. The anticausal sum is the causal
scan of the time-reversed sequence, whose log-decay at reversed step j >= 1 is a_{L-j} (the
decay between original positions L-j and L-1-j); step 0's decay never acts (the state starts
at zero), so any value does:

    anticausal(Xbar, a, B, C) = flip(causal(flip(Xbar), a', flip(B), flip(C))),
    a'_j = a_{L-j} (j >= 1), a'_0 = a_0                                                  (TS.3)

The causal scan runs in pure PyTorch (`ssd.ssd_chunked_core`) or on mamba-ssm's Triton SSD
kernel. That kernel takes (x, dt, A) and forms Xbar = dt x and a = dt A itself, so a given
(Xbar, a) goes in as dt = -a, A = -1, x = Xbar / dt (TS.4), in float32 (TF32 dots); dt is
kept >= 1e-30 so that a zero decay (a = 0: padding) divides nothing by zero, which changes no
float32 decay.

Both scans are also one causal scan of twice the batch: the sequence and its reversal stacked,

    [causal(Xbar); flip(anticausal(Xbar))] = causal([Xbar; flip(Xbar)], [a; a'],
                                                   [B; flip(B)], [C; flip(C)])          (TS.5)

([u; v]: concatenation along the batch), as each batch entry is scanned on its own: one call
(one chain of small ops on the torch backend, one set of Triton launches on the kernel) instead
of two, on twice the batch.

Glossary (code name -> symbol): xbar (b, L, h, p) -> Xbar (input weighted per step, e.g.
Delta x, or the trapezoid's scale x); log_a (b, L, h) -> a; B, C (b, L, g, N), g | h -> B_s,
C_t (per group; g = h: per head); chunk_size -> Q of the chunked scan.
"""

from __future__ import annotations

import torch

from .backends import kernel, resolve_backend
from .ssd import expand_groups, ssd_chunked_core

# smallest step handed to the kernel (TS.4): exp(-1e-30 |A|) == 1 in float32
MIN_KERNEL_STEP = 1e-30


def reversed_log_decays(log_a: torch.Tensor) -> torch.Tensor:
    """Log-decays of the time-reversed sequence: a'_j = a_{L-j} for j >= 1, a'_0 = a_0.

    Args:
        log_a: (b, L, h).
    Returns:
        (b, L, h).
    Implements: a' of (TS.3).
    """
    return torch.roll(log_a.flip(1), 1, dims=1)


def ssd_causal_core(xbar, log_a, B, C, chunk_size: int, backend: str = "torch") -> torch.Tensor:
    """The causal SSD scan y_t = sum_{s<=t} C_t . B_s exp(sum_{r=s+1..t} a_r) xbar_s, without D.

    Args:
        xbar (b, L, h, p); log_a (b, L, h), <= 0; B, C (b, L, g, N), g | h; chunk_size Q;
        backend: "torch" (`ssd_chunked_core`), "mamba_ssm" (Triton `mamba_chunk_scan_combined`)
            or "auto".
    Returns:
        y (b, L, h, p) in xbar's dtype.
    Implements: (SSD.4); on the kernel through (TS.4).
    """
    if resolve_backend(backend, "mamba_ssm_ssd", xbar, log_a, B, C) == "mamba_ssm":
        # float32 operands always: with bf16 ones the kernel's gradient of dt, where the x / dt
        # and dt x factors cancel, was off by 26 % (relative L2, H200, 2026-12-01)
        dt = (-log_a.float()).clamp_min(MIN_KERNEL_STEP)
        minus_one = -torch.ones(log_a.shape[-1], device=log_a.device, dtype=torch.float32)
        x = xbar.float() / dt[..., None]
        y = kernel("mamba_ssm_ssd")(x, dt, minus_one, B.float(), C.float(), chunk_size)
        return y.to(xbar.dtype)
    return ssd_chunked_core(xbar, log_a, B, C, chunk_size)[0].to(xbar.dtype)


def ssd_anticausal_core(xbar, log_a, B, C, chunk_size: int,
                        backend: str = "torch") -> torch.Tensor:
    """The anticausal SSD scan y_t = sum_{s>=t} C_t . B_s exp(sum_{r=t+1..s} a_r) xbar_s.

    Args:
        as `ssd_causal_core`.
    Returns:
        y (b, L, h, p).
    Implements: (TS.2) by (TS.3).
    """
    y = ssd_causal_core(xbar.flip(1), reversed_log_decays(log_a), B.flip(1), C.flip(1),
                        chunk_size, backend)
    return y.flip(1)


def ssd_causal_anticausal_core(xbar, log_a, B, C, chunk_size: int,
                               backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """The causal (SSD.4) and anticausal (TS.2) scans of the same inputs in one causal-scan call.

    Args:
        as `ssd_causal_core`.
    Returns:
        causal, anticausal: y (b, L, h, p) each, equal to `ssd_causal_core` and
        `ssd_anticausal_core` of the same arguments.
    Implements: (TS.5): the inputs and their time-reversed copies (TS.3) stacked along the
    batch, scanned once by `ssd_causal_core` (the kernel route included), split, the second half
    flipped back.
    """
    stacked = ssd_causal_core(torch.cat([xbar, xbar.flip(1)]),
                              torch.cat([log_a, reversed_log_decays(log_a)]),
                              torch.cat([B, B.flip(1)]), torch.cat([C, C.flip(1)]),
                              chunk_size, backend)
    causal, reversed_anticausal = stacked.split(xbar.shape[0])
    return causal, reversed_anticausal.flip(1)


def diagonal_scores(B: torch.Tensor, C: torch.Tensor, heads: int) -> torch.Tensor:
    """The diagonal of C B^T per head: C_t . B_t.

    Args:
        B, C (b, L, g, N), g | heads.
    Returns:
        (b, L, heads).
    """
    return (expand_groups(C, heads) * expand_groups(B, heads)).sum(-1)


def two_sided_from_scans(causal, anticausal, xbar, B, C) -> torch.Tensor:
    """The two-sided matrix form from its two scans: causal + anticausal - diag(C_t . B_t) Xbar.

    Args:
        causal, anticausal: the scans (b, L, h, p) of xbar (b, L, h, p) with B, C (b, L, g, N).
    Returns:
        y (b, L, h, p) in causal's dtype.
    Implements: (TS.1).
    """
    diagonal = diagonal_scores(B, C, xbar.shape[2])[..., None] * xbar
    return causal + anticausal - diagonal.to(causal.dtype)


def ssd_two_sided_core(xbar, log_a, B, C, chunk_size: int, backend: str = "torch",
                       causal: torch.Tensor | None = None, stack: bool = False) -> torch.Tensor:
    """The two-sided matrix form (M o C B^T) Xbar of `ssd_matrix_core(causal=False)` in O(L).

    Args:
        as `ssd_causal_core`; causal: the causal scan of the same inputs when already computed
            (it is then not recomputed); stack: without `causal`, both scans in one call
            (`ssd_causal_anticausal_core`, TS.5); False: two calls (the slow twin).
    Returns:
        y (b, L, h, p).
    Implements: (TS.1), its scans by (TS.5) or by (SSD.4) and (TS.3).
    """
    if causal is None and stack:
        causal, anticausal = ssd_causal_anticausal_core(xbar, log_a, B, C, chunk_size, backend)
    else:
        if causal is None:
            causal = ssd_causal_core(xbar, log_a, B, C, chunk_size, backend)
        anticausal = ssd_anticausal_core(xbar, log_a, B, C, chunk_size, backend)
    return two_sided_from_scans(causal, anticausal, xbar, B, C)
