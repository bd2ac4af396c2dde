"""Mamba-3 SISO scan in pure PyTorch, with mamba-ssm's `mamba3_siso_combined` semantics.

Per head, with rotated keys k_t (= B), queries q_t (= C), values v_t (= x), H_{-1} = 0 and
v_{-1} k_{-1}^T = 0 (book appendix A.3.3):
    alpha_t = exp(ADT_t),  lambda_t = sigmoid(Trap_t),  gamma_t = lambda_t DT_t,
    beta_t = (1 - lambda_t) DT_t alpha_t                                             (M3.1)
    H_t = alpha_t H_{t-1} + beta_t v_{t-1} k_{t-1}^T + gamma_t v_t k_t^T               (M3.2)
    y_t = H_t q_t + D v_t;   out = y * silu(Z)                                        (M3.3)
Data-dependent rotary angles (the real form of a complex diagonal state, section 3.2):
    theta_t = pi tanh(Angles_t),  Phi_t = (Phi_{t-1} + DT_t theta_t) mod 2 pi                 (M3.4)
    q_t, k_t = R(Phi_t) (Q_t + Q_bias), R(Phi_t) (K_t + K_bias), on interleaved pairs (2i, 2i+1),
    i < n_ang; pairs beyond n_ang pass through.                                        (M3.5)
Parallel form = the SSD mask times a width-2 band (scale_s = gamma_s + DT_{s+1}(1 - lambda_{s+1}),
with DT_L := 0):
    y_t = sum_{s<=t} (q_t . k_s) exp(segsum(ADT)_ts) scale_s v_s
          - (q_t . k_t) DT_{t+1} (1 - lambda_{t+1}) v_t                                 (M3.6)

Glossary (code name -> symbol):
    Q, K (b, L, h_qk, N) -> q, k before bias/rotation (head i reads qk-head i // (h / h_qk))
    V, Z (b, L, h, p) -> v, z;   ADT, DT, Trap (b, h, L) -> A_t DT_t, DT_t, lambda_t pre-sigmoid
    Q_bias, K_bias (h, N);   Angles (b, L, h, n_ang) -> raw angles;   D (h,)
    phase -> Phi;   gamma, shifted -> gamma_t and DT_{t+1}(1 - lambda_{t+1})
Final states, as the kernel's cache: (angle Phi_{L-1} (b, h, n_ang), H_{L-1} (b, h, p, N),
rotated k_{L-1} (b, h, N), v_{L-1} (b, h, p)). No initial states (the public signature has none).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .backends import kernel, resolve_backend
from .common import check_divides, check_positive_int, check_tensor, compute_dtype, skip_and_gate
from .ssd import ssd_chunked_core, ssd_matrix_core
from .two_sided import diagonal_scores, ssd_two_sided_core


def _check_inputs(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None):
    """Validate Mamba-3 inputs; return (b, L, h, p, N, n_ang)."""
    check_tensor("V", V, ("b", "L", "h", "p"), (None, None, None, None))
    b, L, h, p = V.shape
    check_tensor("Q", Q, ("b", "L", "h_qk", "N"), (b, L, None, None), like=V)
    h_qk, N = Q.shape[2:]
    check_divides("number of q/k heads h_qk", h_qk, "number of heads h", h)
    if N % 2:
        raise ValueError(f"Q/K head dimension N must be even for rotary pairs, got {N}")
    check_tensor("K", K, ("b", "L", "h_qk", "N"), (b, L, h_qk, N), like=V)
    for name, t in (("ADT", ADT), ("DT", DT), ("Trap", Trap)):
        check_tensor(name, t, ("b", "h", "L"), (b, h, L), like=V)
    check_tensor("Q_bias", Q_bias, ("h", "N"), (h, N), like=V)
    check_tensor("K_bias", K_bias, ("h", "N"), (h, N), like=V)
    check_tensor("Angles", Angles, ("b", "L", "h", "n_ang"), (b, L, h, None), like=V)
    if Angles.shape[-1] > N // 2:
        raise ValueError(f"Angles has n_ang={Angles.shape[-1]} > N/2={N // 2} rotary pairs")
    if D is not None:
        check_tensor("D", D, ("h",), (h,), like=V)
    if Z is not None:
        check_tensor("Z", Z, ("b", "L", "h", "p"), (b, L, h, p), like=V)
    return b, L, h, p, N, Angles.shape[-1]


def rotary_phase(Angles: torch.Tensor, DT: torch.Tensor) -> torch.Tensor:
    """Phases Phi_t = (sum_{r<=t} DT_r pi tanh(Angles_r)) mod 2 pi.

    The cumulative sum runs in float64 so that the phase stays accurate for long sequences
    (the kernel instead reduces mod 2 pi at every chunk boundary); mod 2 pi changes no rotation.

    Args:
        Angles (b, L, h, n_ang) raw; DT (b, h, L).
    Returns:
        Phi (b, L, h, n_ang) in Angles' dtype.
    Implements: (M3.4).
    """
    increments = DT.transpose(1, 2)[..., None].double() * math.pi * torch.tanh(Angles.double())
    return torch.remainder(torch.cumsum(increments, dim=1), 2 * math.pi).to(Angles.dtype)


def rotate_pairs(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x_{2i}, x_{2i+1}) by phase_i, for i < n_ang.

    Args:
        x (..., N); phase (..., n_ang) with n_ang <= N / 2.
    Returns:
        (..., N): (a cos - b sin, a sin + b cos) on rotated pairs, the rest unchanged.
    Implements: (M3.5).
    """
    n = phase.shape[-1]
    a, b = x[..., 0:2 * n:2], x[..., 1:2 * n:2]
    cos, sin = torch.cos(phase), torch.sin(phase)
    rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    return torch.cat([rotated, x[..., 2 * n:]], dim=-1)


def prepare(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles):
    """Compute-dtype time-major tensors shared by the matrix and chunked forms (and the HSS
    block, which feeds them to both of its paths).

    Returns:
        q, k rotated (b, L, h, N); v (b, L, h, p); log_a = ADT (b, L, h); gamma and shifted
        (b, L, h); phase (b, L, h, n_ang). Implements: (M3.1), (M3.4), (M3.5).
    """
    dtype = compute_dtype(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles)
    h = V.shape[2]
    phase = rotary_phase(Angles.to(dtype), DT.to(dtype))
    q = rotate_pairs(Q.to(dtype).repeat_interleave(h // Q.shape[2], dim=2) + Q_bias.to(dtype),
                     phase)
    k = rotate_pairs(K.to(dtype).repeat_interleave(h // K.shape[2], dim=2) + K_bias.to(dtype),
                     phase)
    dt = DT.to(dtype).transpose(1, 2)
    lam = torch.sigmoid(Trap.to(dtype)).transpose(1, 2)
    gamma = lam * dt
    shifted = F.pad((dt * (1 - lam))[:, 1:], [0, 0, 0, 1])
    return q, k, V.to(dtype), ADT.to(dtype).transpose(1, 2), gamma, shifted, phase


def _finish(y, v, D, Z):
    """y + D v, gated by silu(Z). Implements: (M3.3)."""
    return skip_and_gate(y, v, None if D is None else D.to(y.dtype)[:, None],
                         None if Z is None else Z.to(y.dtype))


def mamba3_sequential(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None):
    """Mamba-3 as a plain loop over time: the obviously-correct reference (gold in float64).

    The phase is accumulated step by step, (Phi + DT theta) mod 2 pi, and the trapezoid's
    previous-step term uses the previous rotated key and value, exactly as (M3.2).

    Args:
        as `mamba3_scan`.
    Returns:
        out (b, L, h, p) and the final states (angle, H, k, v) described in the module docstring,
        in the compute dtype.
    Implements: (M3.1)-(M3.5).
    """
    b, L, h, p, N, n_ang = _check_inputs(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z)
    dtype = compute_dtype(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles)
    Qh = Q.to(dtype).repeat_interleave(h // Q.shape[2], dim=2) + Q_bias.to(dtype)
    Kh = K.to(dtype).repeat_interleave(h // K.shape[2], dim=2) + K_bias.to(dtype)
    V, ADT, DT, Angles = V.to(dtype), ADT.to(dtype), DT.to(dtype), Angles.to(dtype)
    lam = torch.sigmoid(Trap.to(dtype))
    phase = V.new_zeros(b, h, n_ang)
    H = V.new_zeros(b, h, p, N)
    k_prev, v_prev = V.new_zeros(b, h, N), V.new_zeros(b, h, p)
    ys = []
    for t in range(L):
        phase = torch.remainder(phase + DT[:, :, t, None] * math.pi * torch.tanh(Angles[:, t]),
                                2 * math.pi)
        q, k = rotate_pairs(Qh[:, t], phase), rotate_pairs(Kh[:, t], phase)
        alpha = torch.exp(ADT[:, :, t])[..., None, None]
        beta = (1 - lam[:, :, t]) * DT[:, :, t]
        gamma = lam[:, :, t] * DT[:, :, t]
        H = alpha * (H + beta[..., None, None] * v_prev[..., None] * k_prev[:, :, None]) \
            + gamma[..., None, None] * V[:, t, ..., None] * k[:, :, None]
        ys.append(torch.einsum("bhpn,bhn->bhp", H, q))
        k_prev, v_prev = k, V[:, t]
    y = _finish(torch.stack(ys, dim=1), V, D, Z)
    return y, (phase, H, k_prev, v_prev)


def mamba3_complex_sequential(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None):
    """Mamba-3 with a complex diagonal state over N/2 dimensions and no rotation at all.

    With q~ = q_{2i} + i q_{2i+1} (after bias) and likewise k~, and theta_t = 0 on pairs >= n_ang:
        h_t = exp(ADT_t + i DT_t theta_t) h_{t-1}
              + beta_t exp(i DT_t theta_t) conj(k~_{t-1}) v_{t-1} + gamma_t conj(k~_t) v_t,
        y_t = Re(sum_j q~_t[j] h_t[:, j]) + D v_t,  out = y * silu(Z).
    Used to show that the data-dependent rotary angles equal a complex diagonal state.

    Returns:
        out (b, L, h, p) in the compute dtype.
    Implements: book appendix A.3.3.
    """
    b, L, h, p, N, n_ang = _check_inputs(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z)
    dtype = compute_dtype(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    Qh = Q.to(dtype).repeat_interleave(h // Q.shape[2], dim=2) + Q_bias.to(dtype)
    Kh = K.to(dtype).repeat_interleave(h // K.shape[2], dim=2) + K_bias.to(dtype)
    q_c = torch.complex(Qh[..., 0::2], Qh[..., 1::2])                   # (b, L, h, N/2)
    k_c = torch.complex(Kh[..., 0::2], Kh[..., 1::2]).conj()
    theta = F.pad(math.pi * torch.tanh(Angles.to(dtype)), [0, N // 2 - n_ang])
    V, ADT, DT = V.to(dtype), ADT.to(dtype), DT.to(dtype)
    lam = torch.sigmoid(Trap.to(dtype))
    h_c = torch.zeros(b, h, p, N // 2, dtype=cdtype, device=V.device)
    prev = torch.zeros_like(h_c)
    ys = []
    for t in range(L):
        rot = torch.exp(1j * DT[:, :, t, None] * theta[:, t])             # (b, h, N/2)
        alpha = torch.exp(ADT[:, :, t])[..., None, None]
        beta = ((1 - lam[:, :, t]) * DT[:, :, t])[..., None, None]
        gamma = (lam[:, :, t] * DT[:, :, t])[..., None, None]
        new = V[:, t, ..., None] * k_c[:, t, :, None]                      # (b, h, p, N/2)
        h_c = alpha * rot[:, :, None] * (h_c + beta * prev) + gamma * new
        prev = new
        ys.append(torch.einsum("bhpn,bhn->bhp", h_c, q_c[:, t]).real)
    return _finish(torch.stack(ys, dim=1), V, D, Z)


def mamba3_matrix(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None, causal=True):
    """Mamba-3 in materialised matrix form: the SSD mask times the width-2 band (quadratic in L).

    Args:
        as `mamba3_scan`; causal: True gives the causal scan's output exactly (M3.6). False uses
        the two-sided symmetric mask exp(-|sum of ADT between s and t|) (see `ssd_matrix`) with
        the same per-source weights scale_s and the same diagonal (gamma_t q_t . k_t); this
        two-sided variant is our extension, not a mamba-ssm kernel.
    Returns:
        out (b, L, h, p) in the compute dtype.
    Implements: (M3.6) + (M3.3).
    """
    _check_inputs(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z)
    q, k, v, log_a, gamma, shifted, _ = prepare(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles)
    y = ssd_matrix_core(v * (gamma + shifted)[..., None], log_a, k, q, causal)
    y = y - ((q * k).sum(-1) * shifted)[..., None] * v
    return _finish(y, v, D, Z)


def mamba3_chunked(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None,
                   chunk_size=64):
    """Mamba-3 by the SSD chunked algorithm on rotated q/k with the trapezoid scale.

    (M3.6) is SSD with xbar_s = scale_s v_s, log-decays ADT, B = k, C = q, minus a diagonal
    correction, so `ssd_chunked_core` does the work. Its final state equals H_{L-1} because
    scale_{L-1} = gamma_{L-1} (DT_L := 0).

    Args:
        as `mamba3_scan`.
    Returns:
        out (b, L, h, p) and the final states (angle, H, k, v), in the compute dtype.
    Implements: (M3.6) chunked + (M3.3).
    """
    check_positive_int("chunk_size", chunk_size)
    _check_inputs(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z)
    q, k, v, log_a, gamma, shifted, phase = prepare(Q, K, V, ADT, DT, Trap, Q_bias, K_bias,
                                                     Angles)
    y, H = ssd_chunked_core(v * (gamma + shifted)[..., None], log_a, k, q, chunk_size)
    y = y - ((q * k).sum(-1) * shifted)[..., None] * v
    return _finish(y, v, D, Z), (phase[:, -1], H, k[:, -1], v[:, -1])


def mamba3_two_sided_chunked(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None,
                             chunk_size=64, backend="torch"):
    """The two-sided Mamba-3 matrix form of `mamba3_matrix(causal=False)` as two scans, O(L).

    (M3.6) with the two-sided mask is the two-sided SSD matrix on rotated q, k and the trapezoid
    scale, minus the same diagonal correction, so (TS.1) applies: a causal and an anticausal
    chunked scan.

    Args:
        as `mamba3_scan`; backend: the causal scan's ("torch", "mamba_ssm" or "auto").
    Returns:
        out (b, L, h, p) in the compute dtype.
    Implements: (M3.6) two-sided by (TS.1) + (M3.3).
    """
    check_positive_int("chunk_size", chunk_size)
    _check_inputs(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z)
    q, k, v, log_a, gamma, shifted, _ = prepare(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles)
    y = ssd_two_sided_core(v * (gamma + shifted)[..., None], log_a, k, q, chunk_size, backend)
    y = y - (diagonal_scores(k, q, v.shape[2]) * shifted)[..., None] * v
    return _finish(y, v, D, Z)


def mamba3_scan(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None, chunk_size=64,
                return_final_states=False, *, backend="auto"):
    """Mamba-3 SISO scan with `mamba3_siso_combined`'s signature and semantics (no Input_States).

    The torch path computes in the input dtype (float32 at least); the kernel casts Q, K, V,
    Trap, Angles and Z to bfloat16 internally.

    Args:
        Q, K: (b, L, h_qk, N), h_qk | h, N even.  V, Z: (b, L, h, p).
        ADT (= A * DT), DT, Trap (pre-sigmoid): (b, h, L).  Q_bias, K_bias: (h, N).
        Angles: (b, L, h, n_ang), raw (pi * tanh is applied inside), n_ang <= N / 2.
        D: (h,) or None.  chunk_size: Q > 0.  return_final_states: also return the cache.
        backend: "auto" (mamba-ssm when it imports and tensors are CUDA), "torch", "mamba_ssm".
    Returns:
        out (b, L, h, p) in V's dtype; with return_final_states, (out, angle (b, h, n_ang),
        H (b, h, p, N), k (b, h, N) (last rotated key), v (b, h, p) (last value)), as the kernel.
    Implements: (M3.1)-(M3.6).
    """
    check_positive_int("chunk_size", chunk_size)
    _check_inputs(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z)
    tensors = (Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z)
    if resolve_backend(backend, "mamba_ssm_mamba3", *tensors) == "mamba_ssm":
        return kernel("mamba_ssm_mamba3")(*tensors, chunk_size=chunk_size,
                                          return_final_states=return_final_states)
    out, states = mamba3_chunked(*tensors, chunk_size=chunk_size)
    out = out.to(V.dtype)
    return (out, *states) if return_final_states else out
