"""Mamba-2 state space duality (SSD) in pure PyTorch, with `mamba_chunk_scan_combined` semantics.

Per head (A_h a scalar), with state H_t (p x N) and H_{-1} = initial_states or 0
(book appendix A.3.2):
    H_t = exp(Delta_t A_h) H_{t-1} + Delta_t x_t B_t^T                              (SSD.1)
    y_t = H_t C_t + D_h x_t;   out = y * silu(z)                                    (SSD.2)
Matrix ("dual") form, with a_t = Delta_t A_h and xbar_t = Delta_t x_t:
    Y = (L o C B^T) Xbar,   L_ts = exp(segsum(a)_ts)                                 (SSD.3)
Chunked form (`ssd_minimal_discrete`): (SSD.3) inside chunks + a recurrence between chunks (SSD.4).

Glossary (code name -> symbol):
    x (b, L, h, p) -> x;  dt (b, L, h) -> Delta;  A (h,) -> A_h;  B, C (b, L, g, N) -> B_t, C_t
    (head i uses group i // (h / g));  headdim -> p;  d_state -> N;  chunk_size -> Q
    xbar -> Delta x (or any per-step input weight);  log_a -> a_t, the log-decay
The `*_core` functions take (xbar, log_a, B, C) with B, C per group (g = h: per head); Mamba-3
reuses them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backends import kernel, resolve_backend
from .common import (
    check_divides,
    check_positive_int,
    check_tensor,
    compute_dtype,
    prepare_step,
    skip_and_gate,
)
from .segsum import decay_mask, segsum_two_sided


def expand_groups(M: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, L, g, N) -> (b, L, h, N): head i reads group i // (h / g)."""
    return M.repeat_interleave(heads // M.shape[2], dim=2)


def ssd_sequential_core(xbar, log_a, B, C, initial_states=None):
    """Recurrence (SSD.1) one step at a time, without D.

    Args:
        xbar (b, L, h, p); log_a (b, L, h); B, C (b, L, g, N), g | h (g = h: one per head);
        initial_states (b, h, p, N).
    Returns:
        y (b, L, h, p), final state H_{L-1} (b, h, p, N).
    Implements: (SSD.1) and y_t = H_t C_t.
    """
    b, L, h, p = xbar.shape
    B, C = expand_groups(B, h), expand_groups(C, h)
    H = xbar.new_zeros(b, h, p, B.shape[-1]) if initial_states is None else initial_states
    ys = []
    for t in range(L):
        H = torch.exp(log_a[:, t, :, None, None]) * H + xbar[:, t, :, :, None] * B[:, t, :, None]
        ys.append(torch.einsum("bhpn,bhn->bhp", H, C[:, t]))
    return torch.stack(ys, dim=1), H


def ssd_matrix_core(xbar, log_a, B, C, causal=True):
    """Materialised quadratic form Y = (L o C B^T) Xbar, without D.

    Args:
        xbar (b, L, h, p); log_a (b, L, h); B, C (b, L, g, N), g | h (g = h: one per head);
        causal: True for L = exp(segsum(a)) (lower triangular); False for the two-sided mask
            exp(segsum_two_sided(a)) = exp(-|sum of a between s and t|) for a <= 0: the backward
            half mirrors the forward one, L_ts = L_st.
    Returns:
        y (b, L, h, p).
    Implements: (SSD.3).
    """
    h = xbar.shape[2]
    B, C = expand_groups(B, h), expand_groups(C, h)
    a = log_a.transpose(1, 2)
    mask = decay_mask(a) if causal else torch.exp(segsum_two_sided(a))
    scores = torch.einsum("bthn,bshn->bhts", C, B) * mask
    return torch.einsum("bhts,bshp->bthp", scores, xbar)


def ssd_chunked_core(xbar, log_a, B, C, chunk_size, initial_states=None):
    """The 5-step chunked SSD algorithm (`ssd_minimal_discrete`), any L, without D.

    L is zero-padded to a multiple of Q (a = 0 and xbar = 0 leave the state unchanged). Every
    step works in the layout (b, chunk c, group g, head-in-group r, Q, ...), so C B^T is formed
    once per group and each product is one batched matmul.
    1. Y_diag = (L o C B^T) Xbar inside each chunk, L = exp(segsum(a)) = `decay_mask(a)`.
    2. Chunk states S_c = sum_s exp(acum_last - acum_s) xbar_s B_s^T (differenced in-chunk sums).
    3. Between chunks: prepend the initial state, mix with decay_mask(chunk totals): the state
       entering each chunk, and the final state.
    4. Y_off = exp(acum_t) C_t . S_in.
    5. Y = Y_diag + Y_off.

    Args:
        xbar (b, L, h, p); log_a (b, L, h); B, C (b, L, g, N), g | h (g = h: one per head);
        chunk_size Q; initial_states (b, h, p, N) or None.
    Returns:
        y (b, L, h, p), final state (b, h, p, N).
    Implements: (SSD.3) within chunks + (SSD.1) between chunks = (SSD.4).
    """
    b, L, h, p = xbar.shape
    g, N = B.shape[2:]
    r = h // g
    Q = min(chunk_size, L)
    c = -(-L // Q)
    pad = c * Q - L

    def split(t, heads):  # (b, L, g * heads, ...) -> (b, c, g, heads, Q, ...), zero-padded
        t = F.pad(t, [0, 0] * (t.dim() - 2) + [0, pad]) if pad else t
        return t.reshape(b, c, Q, g, heads, *t.shape[3:]).movedim(2, 4)

    x = split(xbar, r).contiguous()  # (b, c, g, r, Q, p): one copy, then every op is dense
    B_, C_ = split(B, 1), split(C, 1)                                 # (b, c, g, 1, Q, N)
    a = split(log_a, r).contiguous()                                  # (b, c, g, r, Q)
    a_cum = torch.cumsum(a, dim=-1)
    y = (C_ @ B_.transpose(-1, -2) * decay_mask(a)) @ x                      # step 1
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)                               # step 2
    states = x.transpose(-1, -2) @ (B_ * decay_to_end[..., None])     # (b, c, g, r, p, N)
    init = xbar.new_zeros(b, 1, g, r, p, N) if initial_states is None \
        else initial_states.reshape(b, 1, g, r, p, N)
    states = torch.cat([init, states], dim=1).movedim(1, 3)           # (b, g, r, c+1, p, N)
    chunk_decay = decay_mask(F.pad(a_cum[..., -1].movedim(1, -1), [1, 0]))  # step 3
    states = (chunk_decay @ states.flatten(-2)).unflatten(-1, (p, N))
    states_in, final = states[:, :, :, :-1].movedim(3, 1), states[:, :, :, -1]
    y = y + (C_ * torch.exp(a_cum)[..., None]) @ states_in.transpose(-1, -2)       # step 4
    y = y.movedim(-2, 2).reshape(b, c * Q, h, p)[:, :L]                             # step 5
    return y, final.reshape(b, h, p, N)


def _check_inputs(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None):
    """Validate SSD inputs; return (b, L, h, p, g, N)."""
    check_tensor("x", x, ("b", "L", "h", "p"), (None, None, None, None))
    b, L, h, p = x.shape
    check_tensor("dt", dt, ("b", "L", "h"), (b, L, h), like=x)
    check_tensor("A", A, ("h",), (h,), like=x)
    check_tensor("B", B, ("b", "L", "g", "N"), (b, L, None, None), like=x)
    g, N = B.shape[2:]
    check_divides("number of groups g of B", g, "number of heads h", h)
    check_tensor("C", C, ("b", "L", "g", "N"), (b, L, g, N), like=x)
    if D is not None:
        if D.dim() == 1:
            check_tensor("D", D, ("h",), (h,), like=x)
        else:
            check_tensor("D", D, ("h", "p"), (h, p), like=x)
    if z is not None:
        check_tensor("z", z, ("b", "L", "h", "p"), (b, L, h, p), like=x)
    if dt_bias is not None:
        check_tensor("dt_bias", dt_bias, ("h",), (h,), like=x)
    if initial_states is not None:
        check_tensor("initial_states", initial_states, ("b", "h", "p", "N"), (b, h, p, N), like=x)
    return b, L, h, p, g, N


def _to_core(x, dt, A, B, C, initial_states=None):
    """Cast to the compute dtype; return xbar = Delta x, log_a = Delta A, B, C, init."""
    dtype = compute_dtype(x, dt, A, B, C, initial_states)
    x, dt, A = x.to(dtype), dt.to(dtype), A.to(dtype)
    init = None if initial_states is None else initial_states.to(dtype)
    return x * dt[..., None], dt * A, B.to(dtype), C.to(dtype), init


def _skip(y, x, D):
    """y + D x with D of shape (h,) or (h, p)."""
    if D is None:
        return y
    D = D.to(y.dtype)
    return skip_and_gate(y, x.to(y.dtype), D[:, None] if D.dim() == 1 else D, None)


def ssd_sequential(x, dt, A, B, C, D=None, initial_states=None):
    """SSD as a plain loop over time: the obviously-correct reference (gold in float64).

    Args:
        x (b, L, h, p); dt (b, L, h), already biased/softplus'ed; A (h,); B, C (b, L, g, N);
        D (h,) or (h, p) or None; initial_states (b, h, p, N) or None.
    Returns:
        y (b, L, h, p) and final state (b, h, p, N), in the compute dtype.
    Implements: (SSD.1)-(SSD.2) without the gate.
    """
    _check_inputs(x, dt, A, B, C, D, initial_states=initial_states)
    y, final = ssd_sequential_core(*_to_core(x, dt, A, B, C, initial_states))
    return _skip(y, x, D), final


def ssd_matrix(x, dt, A, B, C, D=None, causal=True):
    """SSD in its materialised matrix form (quadratic in L): the HSS block's parallel path.

    Args:
        x (b, L, h, p); dt (b, L, h), already softplus'ed; A (h,); B, C (b, L, g, N);
        D (h,) or (h, p) or None;
        causal: True gives the causal scan's output exactly; False uses the two-sided symmetric
            mask L_ts = exp(-|sum_{r in (min(s,t), max(s,t)]} dt_r A|): the backward half mirrors
            the forward one (the diagonal is counted once).
    Returns:
        y (b, L, h, p) in the compute dtype.
    Implements: (SSD.3) + D x.
    """
    _check_inputs(x, dt, A, B, C, D)
    xbar, log_a, B, C, _ = _to_core(x, dt, A, B, C)
    return _skip(ssd_matrix_core(xbar, log_a, B, C, causal), x, D)


def ssd_chunked(x, dt, A, B, C, chunk_size, D=None, initial_states=None):
    """SSD by the chunked algorithm (`ssd_chunked_core`): the fast torch path.

    Args:
        as `ssd_sequential`, plus chunk_size Q > 0 (any L allowed).
    Returns:
        y (b, L, h, p) and final state (b, h, p, N), in the compute dtype.
    Implements: (SSD.4) + D x.
    """
    check_positive_int("chunk_size", chunk_size)
    _check_inputs(x, dt, A, B, C, D, initial_states=initial_states)
    xbar, log_a, B, C, init = _to_core(x, dt, A, B, C, initial_states)
    y, final = ssd_chunked_core(xbar, log_a, B, C, chunk_size, init)
    return _skip(y, x, D), final


def ssd_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
             dt_softplus=False, return_final_states=False, *, backend="auto"):
    """Mamba-2 SSD scan with `mamba_chunk_scan_combined`'s signature and semantics.

    Args:
        x, z: (b, L, h, p).  dt: (b, L, h).  A, dt_bias: (h,).  B, C: (b, L, g, N), g | h.
        chunk_size: Q > 0; any L is allowed.  D: (h,) or (h, p).
        initial_states: (b, h, p, N).  dt_softplus: softplus (threshold 20) after adding dt_bias.
        return_final_states: also return the state after the last step.
        backend: "auto" (mamba-ssm when it imports and tensors are CUDA), "torch", "mamba_ssm".
    Returns:
        out (b, L, h, p) in x's dtype; with return_final_states, (out, final (b, h, p, N)), the
        state in the compute dtype (float32, or float64 for float64 inputs).
    Implements: (SSD.1)-(SSD.2), Delta = softplus(dt + dt_bias).
    """
    check_positive_int("chunk_size", chunk_size)
    _check_inputs(x, dt, A, B, C, D, z, dt_bias, initial_states)
    tensors = (x, dt, A, B, C, D, z, dt_bias, initial_states)
    if resolve_backend(backend, "mamba_ssm_ssd", *tensors) == "mamba_ssm":
        return kernel("mamba_ssm_ssd")(
            x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states,
            dt_softplus=dt_softplus, return_final_states=return_final_states)
    dtype = compute_dtype(*tensors)
    delta = prepare_step(dt.to(dtype), None if dt_bias is None else dt_bias.to(dtype),
                         dt_softplus)
    y, final = ssd_chunked(x, delta, A, B, C, chunk_size, D, initial_states)
    out = skip_and_gate(y, x, None, None if z is None else z.to(y.dtype)).to(x.dtype)
    return (out, final) if return_final_states else out
