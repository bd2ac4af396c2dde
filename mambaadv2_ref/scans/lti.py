"""Linear time-invariant state space models: the basics of chapter 2.

A continuous SSM maps an input signal u(t) to an output y(t) through a hidden state h(t):

    h'(t) = A h(t) + B u(t),    y(t) = C h(t)                          (eq. ssm-continuous)

Mamba keeps A diagonal, so every function here takes A, B, C as vectors of N numbers (one per
state; complex values give the rotating states of Mamba-3). Sampling with step dt gives

    h_t = A_bar h_{t-1} + B_bar u_t + B_bar_prev u_{t-1},  y_t = Re(C . h_t)  (eq. ssm-discrete)

where the rules of `discretize` fix (A_bar, B_bar, B_bar_prev); only Mamba-3's exponential
trapezoid uses the previous input (B_bar_prev != 0). Unrolling the recurrence gives a convolution
y = K * u with the kernel K_k = Re(C A_bar^k B_bar + C A_bar^(k-1) B_bar_prev) (eq. ssm-kernel),
which is
how S4 trains an LTI SSM in parallel; the selective SSMs of chapters 3-5 lose the kernel because
their A_bar, B_bar change with t.

Glossary (code -> symbol): dt -> Delta, A/B/C -> A, B, C (diagonal, N states), A_bar/B_bar -> the
discretized A-bar, B-bar, B_bar_prev -> the weight of u_{t-1}, trap -> lambda (trapezoid factor),
angle -> theta (rotation per unit time), kernel -> K, u -> input, y -> output.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

RULES = ("zoh", "euler", "bilinear", "mamba1", "exp_trapezoid")


class Discretized(NamedTuple):
    """A discretized diagonal SSM: h_t = A_bar h_{t-1} + B_bar u_t + B_bar_prev u_{t-1}."""

    A_bar: torch.Tensor
    B_bar: torch.Tensor
    B_bar_prev: torch.Tensor


def _as_state_vector(x, name: str) -> torch.Tensor:
    """A 1-D tensor of N states in float64 (or complex128), or a ValueError naming `name`."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))  # no float32 detour
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a scalar or a vector of N states, got shape "
                         f"{tuple(t.shape)}")
    return t.to(torch.complex128 if t.is_complex() else torch.float64)


def _check_dt(dt: float) -> float:
    if not isinstance(dt, (int, float)) or not dt > 0:
        raise ValueError(f"dt must be a positive number, got {dt!r}")
    return float(dt)


def continuous_impulse_response(A, B, C, t) -> torch.Tensor:
    """Impulse response of the continuous SSM: y(t) = Re(C . exp(A t) B).

    Args:
        A, B, C: (N,) diagonal state matrix, input and output vectors (real or complex).
        t: (T,) times >= 0.

    Returns:
        (T,) float64 response: the kernels of the discrete SSMs approximate dt times it.

    Implements: eq. (2) of chapter 2, the solution of eq. (1) for an impulse.
    """
    A, B, C = (_as_state_vector(v, n) for v, n in ((A, "A"), (B, "B"), (C, "C")))
    if not A.shape == B.shape == C.shape:
        raise ValueError(f"A, B, C must have the same shape (N,), got {tuple(A.shape)}, "
                         f"{tuple(B.shape)}, {tuple(C.shape)}")
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.real((C * B * torch.exp(A * t[:, None])).sum(-1))


def discretize(rule: str, dt: float, A, B, trap: float = 0.5) -> Discretized:
    """Turn the continuous (A, B) into (A_bar, B_bar, B_bar_prev) with one of five rules.

    With a = dt * A (elementwise, A diagonal):
        zoh            A_bar = exp(a),                B_bar = (exp(a) - 1) / a * dt B
        euler          A_bar = 1 + a,                 B_bar = dt B          (forward Euler)
        bilinear       A_bar = (1 + a/2) / (1 - a/2), B_bar = dt B / (1 - a/2)   (S4's Tustin)
        mamba1         A_bar = exp(a),                B_bar = dt B          (ZOH for A, Euler for B)
        exp_trapezoid  A_bar = exp(a),  B_bar = trap dt B,  B_bar_prev = (1 - trap) dt exp(a) B
    Only exp_trapezoid (Mamba-3) has B_bar_prev != 0; with trap = 1 it is mamba1 (Mamba-1/2's
    "exponential Euler"), with trap = 1/2 it integrates B u(s) by the trapezoid rule.

    Args:
        rule: one of "zoh", "euler", "bilinear", "mamba1", "exp_trapezoid".
        dt: step Delta > 0.
        A, B: (N,) diagonal state matrix and input vector (real or complex).
        trap: lambda in [0, 1], used by exp_trapezoid only.

    Returns:
        Discretized(A_bar, B_bar, B_bar_prev), each (N,).

    Implements: eqs. (3), (4), (5), (6), (7) of
    chapter 2; Mamba-1 eq. (4) and its simplification
    (state-spaces/mamba#114); Mamba-3's exponential-trapezoidal rule (book appendix A.3.3).
    """
    dt = _check_dt(dt)
    A, B = _as_state_vector(A, "A"), _as_state_vector(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"A and B must have the same shape (N,), got {tuple(A.shape)}, "
                         f"{tuple(B.shape)}")
    if not 0.0 <= trap <= 1.0:
        raise ValueError(f"trap must be in [0, 1], got {trap!r}")
    a = dt * A
    zero = torch.zeros_like(B * a)
    if rule == "zoh":
        # (exp(a) - 1) / a, with its limit 1 at a = 0 (expm1 keeps small a accurate)
        phi = torch.where(a == 0, torch.ones_like(a), torch.expm1(a) / torch.where(a == 0, 1, a))
        return Discretized(torch.exp(a), phi * dt * B, zero)
    if rule == "euler":
        return Discretized(1 + a, dt * B + zero, zero)
    if rule == "bilinear":
        return Discretized((1 + a / 2) / (1 - a / 2), dt * B / (1 - a / 2), zero)
    if rule == "mamba1":
        return Discretized(torch.exp(a), dt * B + zero, zero)
    if rule == "exp_trapezoid":
        alpha = torch.exp(a)
        return Discretized(alpha, trap * dt * B + zero, (1 - trap) * dt * alpha * B)
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def _check_system(A_bar, B_bar, C, B_bar_prev):
    A_bar, B_bar, C = (_as_state_vector(v, n) for v, n in
                       ((A_bar, "A_bar"), (B_bar, "B_bar"), (C, "C")))
    B_bar_prev = torch.zeros_like(B_bar) if B_bar_prev is None else _as_state_vector(
        B_bar_prev, "B_bar_prev")
    if not A_bar.shape == B_bar.shape == C.shape == B_bar_prev.shape:
        raise ValueError("A_bar, B_bar, B_bar_prev and C must all have shape (N,), got "
                         f"{tuple(A_bar.shape)}, {tuple(B_bar.shape)}, "
                         f"{tuple(B_bar_prev.shape)}, {tuple(C.shape)}")
    return A_bar, B_bar, C, B_bar_prev


def ssm_recurrent(A_bar, B_bar, C, u, B_bar_prev=None) -> torch.Tensor:
    """Run the discrete SSM one step at a time (the slow, obviously correct twin).

    Args:
        A_bar, B_bar, C: (N,) discretized diagonal system.
        u: (..., L) real input sequences.
        B_bar_prev: (N,) weight of the previous input u_{t-1} (None: zero, u_{-1} = 0).

    Returns:
        (..., L) float64 output y_t = Re(C . h_t), with h_{-1} = 0.

    Implements: eq. (8) of chapter 2.
    """
    A_bar, B_bar, C, B_bar_prev = _check_system(A_bar, B_bar, C, B_bar_prev)
    u = torch.as_tensor(u, dtype=torch.float64)
    if u.ndim == 0:
        raise ValueError("u must have shape (..., L), got a scalar")
    h = torch.zeros(*u.shape[:-1], A_bar.shape[0], dtype=(A_bar * B_bar * C).dtype)
    u_prev = torch.zeros_like(u[..., 0])
    ys = []
    for t in range(u.shape[-1]):
        h = A_bar * h + B_bar * u[..., t, None] + B_bar_prev * u_prev[..., None]
        ys.append(torch.real((C * h).sum(-1)))
        u_prev = u[..., t]
    return torch.stack(ys, dim=-1)


def ssm_kernel(A_bar, B_bar, C, L: int, B_bar_prev=None) -> torch.Tensor:
    """The convolution kernel of the discrete SSM.

    K_k = Re(C . A_bar^k B_bar) + Re(C . A_bar^(k-1) B_bar_prev) [k >= 1],  k = 0..L-1.

    Args:
        A_bar, B_bar, C: (N,) discretized diagonal system.
        L: kernel length (>= 1).
        B_bar_prev: (N,) weight of the previous input (None: zero).

    Returns:
        (L,) float64 kernel K.

    Implements: eq. (9) of chapter 2.
    """
    A_bar, B_bar, C, B_bar_prev = _check_system(A_bar, B_bar, C, B_bar_prev)
    if not isinstance(L, int) or L < 1:
        raise ValueError(f"L must be a positive int, got {L!r}")
    k = torch.arange(L, dtype=torch.float64)
    powers = A_bar[None, :] ** k[:, None]                        # (L, N): A_bar^k
    kernel = (C * powers * B_bar).sum(-1)
    kernel[1:] += (C * powers[:-1] * B_bar_prev).sum(-1)          # u_{t-1} term: A_bar^(k-1)
    return torch.real(kernel)


def ssm_convolve(kernel, u) -> torch.Tensor:
    """Causal convolution y_t = sum_{k=0..t} K_k u_{t-k}, computed with the FFT in O(L log L).

    Args:
        kernel: (L,) real kernel K.
        u: (..., L) real input sequences (same L).

    Returns:
        (..., L) float64 output.

    Implements: eq. (9) of chapter 2 evaluated by the convolution theorem (zero-padded
    to 2L, so the circular convolution of the FFT equals the causal one).
    """
    kernel = torch.as_tensor(kernel, dtype=torch.float64)
    u = torch.as_tensor(u, dtype=torch.float64)
    if kernel.ndim != 1 or u.ndim == 0 or u.shape[-1] != kernel.shape[0]:
        raise ValueError(f"kernel must have shape (L,) and u shape (..., L), got "
                         f"{tuple(kernel.shape)} and {tuple(u.shape)}")
    L = kernel.shape[0]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(kernel, n=n) * torch.fft.rfft(u, n=n), n=n)
    return y[..., :L]


def kernel_matrix(kernel) -> torch.Tensor:
    """The materialised (L, L) lower-triangular Toeplitz matrix M with M[t, s] = K_{t-s}.

    y = M u is the "matrix form" of the LTI SSM; chapter 4 shows that selective SSMs keep this form
    (with a matrix that is no longer Toeplitz) even though they lose the convolution.

    Args:
        kernel: (L,) kernel K.

    Returns:
        (L, L) float64 matrix.

    Implements: eq. (10) of chapter 2: eq. (9) written as y = M u.
    """
    kernel = torch.as_tensor(kernel, dtype=torch.float64)
    if kernel.ndim != 1:
        raise ValueError(f"kernel must have shape (L,), got {tuple(kernel.shape)}")
    L = kernel.shape[0]
    lag = torch.arange(L)[:, None] - torch.arange(L)[None, :]    # (L, L): t - s
    return torch.where(lag >= 0, kernel[lag.clamp(min=0)], torch.zeros((), dtype=kernel.dtype))


def impulse_response(dt: float, A: float, trap: float = 0.5, angle: float = 0.0,
                     length: int = 32) -> torch.Tensor:
    """Kernel of a one-state Mamba-3 SSM (B = C = 1): the SSM explorer's picture.

    The state is complex, with eigenvalue A + i angle: it decays at rate -A and turns by
    dt * angle radians per step (the data-independent version of Mamba-3's rotary angles), and is
    discretized by the exponential trapezoid with factor trap.

    Args:
        dt: step Delta > 0.
        A: real decay rate (negative for a stable system).
        trap: lambda in [0, 1] (1: Mamba-1/2 exponential Euler, 1/2: trapezoid).
        angle: theta, rotation speed in radians per unit time.
        length: number of steps.

    Returns:
        (length,) float64 kernel K_k, the response to u = (1, 0, 0, ...).

    Implements: eqs. (9) and (7) of chapter 2 with A -> A + i theta
    (chapter 5's complex state).
    """
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (A, angle)):
        raise ValueError(f"A and angle must be finite real numbers, got {A!r}, {angle!r}")
    A_complex = torch.tensor([complex(A, angle)], dtype=torch.complex128)
    one = torch.ones(1, dtype=torch.complex128)
    system = discretize("exp_trapezoid", dt, A_complex, one, trap=trap)
    return ssm_kernel(system.A_bar, system.B_bar, one, length, B_bar_prev=system.B_bar_prev)
