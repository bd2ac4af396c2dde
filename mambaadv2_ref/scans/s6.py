"""Mamba-1 selective scan (S6) in pure PyTorch, with mamba-ssm's `selective_scan_fn` semantics.

Per channel d and state n, with h_{-1} = 0 (book appendix A.3.1):
    h_t[d, n] = exp(Delta_t[d] A[d, n]) h_{t-1}[d, n] + Delta_t[d] B_t[n] u_t[d]       (S6.1)
    y_t[d]    = sum_n C_t[n] h_t[d, n] + D[d] u_t[d];   out = y * silu(z)             (S6.2)
    Delta     = softplus(delta + delta_bias) (threshold 20) if delta_softplus          (S6.3)

Glossary (code name -> symbol):
    u (b, D, L)      -> input u;   delta (b, D, L) -> Delta;   A (D, N) -> A (real, usually < 0)
    B, C             -> B_t, C_t: constant (D, N), variable (b, N, L) or grouped (b, G, N, L);
                        channel d uses group d // (D / G)
    d_state          -> N;   chunk_size -> Q
Two implementations that must agree: `selective_scan_sequential` (a plain loop over t, the gold
reference when run in float64) and `selective_scan_chunked` (a two-level chunked scan).
"""

from __future__ import annotations

import math

import torch

from .backends import kernel, resolve_backend
from .common import check_positive_int, check_tensor, compute_dtype, prepare_step, skip_and_gate


def _check_inputs(u, delta, A, B, C, D, z, delta_bias) -> tuple[int, int, int, int]:
    """Validate S6 inputs; return (b, D, L, N)."""
    check_tensor("u", u, ("b", "D", "L"), (None, None, None))
    b, d, L = u.shape
    check_tensor("delta", delta, ("b", "D", "L"), (b, d, L), like=u)
    check_tensor("A", A, ("D", "N"), (d, None), like=u)
    N = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        if isinstance(M, torch.Tensor) and M.dim() == 2:
            check_tensor(name, M, ("D", "N"), (d, N), like=u)
        elif isinstance(M, torch.Tensor) and M.dim() == 4:
            check_tensor(name, M, ("b", "G", "N", "L"), (b, None, N, L), like=u)
            if M.shape[1] == 0 or d % M.shape[1] != 0:
                raise ValueError(f"{name} has G={M.shape[1]} groups, which must divide D={d}")
        else:
            check_tensor(name, M, ("b", "N", "L"), (b, N, L), like=u)
    if D is not None:
        check_tensor("D", D, ("D",), (d,), like=u)
    if delta_bias is not None:
        check_tensor("delta_bias", delta_bias, ("D",), (d,), like=u)
    if z is not None:
        check_tensor("z", z, ("b", "D", "L"), (b, d, L), like=u)
    return b, d, L, N


def _time_first(M: torch.Tensor, channels: int) -> torch.Tensor:
    """Lay out B or C as (L or 1, b or 1, D or 1, N) so that it broadcasts against h_t."""
    if M.dim() == 2:                                   # constant (D, N)
        return M[None, None]
    if M.dim() == 3:                                   # variable (b, N, L)
        return M.permute(2, 0, 1)[:, :, None, :]
    groups = M.shape[1]                                # grouped (b, G, N, L)
    return M.repeat_interleave(channels // groups, dim=1).permute(3, 0, 1, 2)


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Shared preprocessing, all time-first and in the compute dtype.

    Returns:
        delta (L, b, D) after bias/softplus, delta * u (L, b, D), A (D, N), and B, C laid out as
        (L or 1, b or 1, D or 1, N). Implements: (S6.3).
    """
    dtype = compute_dtype(u, delta, A, B, C, delta_bias)
    channels = u.shape[1]
    delta = prepare_step(delta.to(dtype), None if delta_bias is None else
                         delta_bias.to(dtype)[:, None], delta_softplus).permute(2, 0, 1)
    delta_u = delta * u.to(dtype).permute(2, 0, 1)
    return (delta, delta_u, A.to(dtype), _time_first(B.to(dtype), channels),
            _time_first(C.to(dtype), channels))


def _finish(y, u, D, z):
    """Time-first y (L, b, D) -> (b, D, L), plus D u, gated by silu(z). Implements: (S6.2)."""
    y = y.permute(1, 2, 0)
    dtype = y.dtype
    return skip_and_gate(y, u.to(dtype), None if D is None else D.to(dtype)[:, None],
                         None if z is None else z.to(dtype))


def selective_scan_sequential(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                              delta_softplus=False) -> tuple[torch.Tensor, torch.Tensor]:
    """S6 as a plain loop over time: the obviously-correct reference (gold in float64).

    Args:
        as `selective_scan`.
    Returns:
        out (b, D, L) and last_state h_{L-1} (b, D, N), in the compute dtype (float64 in,
        float64 out).
    Implements: (S6.1)-(S6.3), one time step per iteration.
    """
    b, d, L, N = _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    delta, delta_u, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    h = torch.zeros(b, d, N, dtype=A.dtype, device=A.device)
    ys = []
    for t in range(L):
        h = torch.exp(delta[t, ..., None] * A) * h + delta_u[t, ..., None] * B[min(t, len(B) - 1)]
        ys.append((h * C[min(t, len(C) - 1)]).sum(-1))
    return _finish(torch.stack(ys), u, D, z), h


def default_chunk_size(L: int) -> int:
    """Chunk length Q ~ sqrt(L / 4) (a power of two).

    `selective_scan_chunked` runs about 9 tensor operations per in-chunk step (2 loops of Q) and
    2 per chunk (L / Q); 9 Q + 2 L / Q is smallest near Q = sqrt(2 L / 9) ~ sqrt(L / 4).
    """
    return 2 ** max(0, round(math.log2(math.sqrt(max(L, 1) / 4))))


def _to_chunks(x: torch.Tensor, L: int, chunks: int, Q: int) -> torch.Tensor:
    """Zero-pad a time-first tensor to chunks * Q steps and view it as (chunks, Q, ...).

    Tensors with a time axis of size 1 (constant B or C) are returned as (1, 1, ...).
    """
    if x.shape[0] == 1 and L != 1:
        return x[None]
    pad = chunks * Q - L
    if pad:
        x = torch.nn.functional.pad(x, [0, 0] * (x.dim() - 1) + [0, pad])
    return x.reshape(chunks, Q, *x.shape[1:])


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, chunk_size: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """S6 as a two-level chunked scan: the fast torch path.

    With chunks of Q steps (L padded with Delta = 0, which leaves the state unchanged):
    1. Within all chunks at once, a Q-step recurrence from a zero state gives the local states
       h^loc and the local outputs C_t . h^loc_t.
    2. A short recurrence over the chunks carries the state into each chunk:
       H_{c+1} = exp(A * sum_{t in c} Delta_t) H_c + h^loc_{last of c}.
    3. Each output adds C_t . (exp(A * cumsum_{r<=t in chunk} Delta_r) * H_c): the cumulative sum
       runs within one chunk and its exponent is <= 0 for A <= 0, so it never overflows and only
       underflows to the exact limit 0.
    Every step works on all chunks at once, (chunks, b, D, N), small enough to stay in cache;
    no (b, D, L, N) tensor is ever built. Only decays in [0, 1] are multiplied: stable for any L
    and any Delta.

    Args:
        as `selective_scan`; chunk_size: Q (default ~sqrt(L / 4), see `default_chunk_size`).
    Returns:
        out (b, D, L) and last_state (b, D, N), in the compute dtype.
    Implements: (S6.1)-(S6.3) with 2 Q + L/Q sequential steps instead of L.
    """
    b, d, L, N = _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    Q = default_chunk_size(L) if chunk_size is None else check_positive_int(
        "chunk_size", chunk_size)
    Q = min(Q, L)
    chunks = -(-L // Q)
    delta, delta_u, A, B, C = (_to_chunks(x, L, chunks, Q) if x.dim() > 2 else x
                               for x in _prepare(u, delta, A, B, C, delta_bias, delta_softplus))

    # Per-step views by unbind, not x[:, t] in the loops: the backward of unbind is one stack,
    # while each indexing op would allocate and zero-fill a full-size gradient.
    def steps(x):  # (chunks, Q or 1, ...) -> Q tensors (chunks, ...)
        return x.unbind(1) if x.shape[1] == Q else x.unbind(1) * Q

    delta_t, delta_u_t, B_t, C_t = steps(delta), steps(delta_u), steps(B), steps(C)
    h = torch.zeros(chunks, b, d, N, dtype=A.dtype, device=A.device)
    y_local = []
    for t in range(Q):                                       # step 1
        h = torch.addcmul(delta_u_t[t][..., None] * B_t[t],
                          torch.exp(delta_t[t][..., None] * A), h)
        y_local.append(torch.linalg.vecdot(h, C_t[t]))
    chunk_decay = torch.exp(delta.sum(1)[..., None] * A)     # (chunks, b, D, N)
    carry = torch.zeros_like(h[0])
    carries = []
    for h_c, decay_c in zip(h.unbind(0), chunk_decay.unbind(0), strict=True):  # step 2
        carries.append(carry)
        carry = torch.addcmul(h_c, decay_c, carry)
    carries = torch.stack(carries)
    cum_delta_t = torch.cumsum(delta, dim=1).unbind(1)       # step 3
    y = torch.stack([y_local[t] + torch.linalg.vecdot(
        torch.exp(cum_delta_t[t][..., None] * A) * carries, C_t[t]) for t in range(Q)], dim=1)
    return _finish(y.reshape(chunks * Q, b, d)[:L], u, D, z), carry


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, backend="auto"):
    """Mamba-1 selective scan with mamba-ssm's `selective_scan_fn` signature and semantics.

    Args:
        u, delta: (b, D, L).  A: (D, N), real.
        B, C: (D, N) constant, (b, N, L) variable, or (b, G, N, L) grouped.
        D, delta_bias: (D,) or None.  z: (b, D, L) or None (gate out * silu(z)).
        delta_softplus: apply softplus (threshold 20) to delta + delta_bias.
        return_last_state: also return h_{L-1}.
        backend: "auto" (mamba-ssm when it imports and tensors are CUDA), "torch", "mamba_ssm".
    Returns:
        out (b, D, L) in u's dtype; with return_last_state, (out, last_state (b, D, N)), the
        state in the compute dtype (float32, or float64 for float64 inputs).
    Implements: (S6.1)-(S6.3), book appendix A.3.1.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    if resolve_backend(backend, "mamba_ssm_s6", u, delta, A, B, C, D, z, delta_bias) == "mamba_ssm":
        return kernel("mamba_ssm_s6")(
            u, delta, A, B, C, None if D is None else D.float(), z,
            None if delta_bias is None else delta_bias.float(), delta_softplus,
            return_last_state)
    out, last = selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    out = out.to(u.dtype)
    return (out, last) if return_last_state else out
