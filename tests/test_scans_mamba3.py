"""Mamba-3 SISO: loop, complex-state loop, matrix and chunked forms and mamba3_scan agree."""

import math

import pytest
import torch

from mambaadv2_ref.scans import mamba3_scan
from mambaadv2_ref.scans.mamba3 import (
    mamba3_chunked,
    mamba3_complex_sequential,
    mamba3_matrix,
    mamba3_sequential,
    rotary_phase,
    rotate_pairs,
)

ARGS = ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles", "D", "Z")


def args(x):
    return [x[k] for k in ARGS]


@pytest.mark.parametrize("L,chunk", [(1, 64), (37, 8), (64, 16)])
@pytest.mark.parametrize("h_qk,n_ang", [(1, 1), (2, 2), (4, 4)])
@pytest.mark.parametrize("extras", [True, False])
def test_all_forms_agree_float64(mamba3_inputs, L, chunk, h_qk, n_ang, extras):
    x = mamba3_inputs(L=L, h_qk=h_qk, n_ang=n_ang, with_D=extras, with_Z=extras)
    y_ref, s_ref = mamba3_sequential(*args(x))
    y, s = mamba3_chunked(*args(x), chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    for a, b in zip(s, s_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    torch.testing.assert_close(mamba3_matrix(*args(x)), y_ref, rtol=0, atol=1e-10)
    out, *states = mamba3_scan(*args(x), chunk_size=chunk, return_final_states=True,
                               backend="torch")
    torch.testing.assert_close(out, y_ref, rtol=0, atol=1e-10)
    assert [t.shape for t in states] == [(2, 4, n_ang), (2, 4, 4, 8), (2, 4, 8), (2, 4, 4)]


@pytest.mark.parametrize("n_ang", [1, 4])
def test_rotary_angles_equal_complex_diagonal_state(mamba3_inputs, n_ang):
    x = mamba3_inputs(L=29, n_ang=n_ang)
    y_ref, _ = mamba3_sequential(*args(x))
    torch.testing.assert_close(mamba3_complex_sequential(*args(x)), y_ref, rtol=0, atol=1e-10)


def test_rotation_is_relative():
    """R(a)^T R(b) = R(b - a): rotated dot products depend only on the phase difference."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 6, generator=g, dtype=torch.float64)
    pa, pb = torch.rand(2, 3, generator=g, dtype=torch.float64) * 10
    lhs = (rotate_pairs(q, pa) * rotate_pairs(k, pb)).sum()
    rhs = (q * rotate_pairs(k, pb - pa)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_phase_wraps_and_is_accurate():
    L = 65536
    Angles = torch.full((1, L, 1, 1), 10.0, dtype=torch.float64)
    DT = torch.full((1, 1, L), 0.7, dtype=torch.float64)
    phase = rotary_phase(Angles, DT)              # float64: |error| << 1e-5 after 65536 steps
    assert phase.min() >= 0 and phase.max() < 2 * math.pi
    step = 0.7 * math.pi * math.tanh(10.0)
    exact = (torch.arange(1, L + 1, dtype=torch.float64) * step) % (2 * math.pi)
    diff = (phase[0, :, 0, 0].double() - exact).abs()
    torch.testing.assert_close(torch.minimum(diff, 2 * math.pi - diff),
                               torch.zeros_like(diff), rtol=0, atol=1e-5)


def test_float32_within_tolerance(mamba3_inputs):
    x64 = mamba3_inputs(L=150, p=8, N=16, n_ang=4)
    x32 = {k: v.float() for k, v in x64.items()}
    y_ref, s_ref = mamba3_sequential(*args(x64))
    out, *states = mamba3_scan(*args(x32), return_final_states=True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), y_ref, rtol=0, atol=1e-4 * y_ref.abs().max().item())
    for a, b in zip(states, s_ref, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-4 * b.abs().max().item())


def test_gradients_match_sequential(mamba3_inputs):
    x = mamba3_inputs(L=19)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    grads = []
    for fn in (lambda *a: mamba3_sequential(*a),
               lambda *a: mamba3_chunked(*a, chunk_size=4),
               lambda *a: (mamba3_matrix(*a), ())):
        y, states = fn(*args(leaves))
        loss = (y ** 2).sum() + sum(s.sum() for s in states[1:])
        grads.append(torch.autograd.grad(loss if states else (y ** 2).sum(), list(leaves.values()),
                                         allow_unused=True))
    for name, g_ref, g in zip(ARGS, grads[0], grads[1], strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10, msg=f"d{name}")


def test_gradcheck_chunked(mamba3_inputs):
    x = mamba3_inputs(b=1, L=5, h=2, h_qk=1, p=2, N=4, n_ang=1)
    leaves = [t.clone().requires_grad_() for t in args(x)]

    def f(*a):
        y, (_, H, k, v) = mamba3_chunked(*a, chunk_size=2)
        return y, H, k, v

    assert torch.autograd.gradcheck(f, leaves, fast_mode=True)


def test_two_sided_matrix_definition(mamba3_inputs):
    x = mamba3_inputs(b=1, L=6, h=1, h_qk=1, p=2, N=4, n_ang=2, with_Z=False)
    y = mamba3_matrix(*args(x), causal=False)
    phase = rotary_phase(x["Angles"], x["DT"])
    q = rotate_pairs(x["Q"] + x["Q_bias"], phase)[0, :, 0]
    k = rotate_pairs(x["K"] + x["K_bias"], phase)[0, :, 0]
    lam, dt, a = torch.sigmoid(x["Trap"][0, 0]), x["DT"][0, 0], x["ADT"][0, 0]
    scale = lam * dt + torch.cat([dt[1:] * (1 - lam[1:]), dt.new_zeros(1)])
    v = x["V"][0, :, 0]
    want = torch.zeros_like(v)
    for t in range(6):
        for s in range(6):
            lo, hi = min(s, t), max(s, t)
            weight = lam[t] * dt[t] if s == t else scale[s]
            want[t] += (q[t] @ k[s]) * torch.exp(-a[lo + 1:hi + 1].abs().sum()) * weight * v[s]
    want = want + x["D"][0] * v
    torch.testing.assert_close(y[0, :, 0], want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [1e-8, 1e3])
def test_tiny_and_huge_dt_finite_and_exact(mamba3_inputs, scale):
    x64 = mamba3_inputs(L=130)
    x64["DT"], x64["ADT"] = x64["DT"] * scale, x64["ADT"] * scale
    x32 = {k: v.float() for k, v in x64.items()}
    y_ref, _ = mamba3_sequential(*args(x64))
    y, (_, H, _, _) = mamba3_chunked(*args(x32), chunk_size=32)
    assert torch.isfinite(y).all() and torch.isfinite(H).all()
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=1e-4 * y_ref.abs().max().item())


def test_long_sequence_stable(mamba3_inputs):
    x64 = mamba3_inputs(b=1, L=65536, h=1, h_qk=1, p=2, N=2, n_ang=1, seed=2)
    x32 = {k: v.float() for k, v in x64.items()}
    y32, s32 = mamba3_chunked(*args(x32), chunk_size=64)
    y64, s64 = mamba3_chunked(*args(x64), chunk_size=64)
    assert torch.isfinite(y32).all()
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-4 * y64.abs().max().item())
    torch.testing.assert_close(s32[1].double(), s64[1], rtol=0,
                               atol=1e-4 * s64[1].abs().max().item())


def test_bad_inputs_raise(mamba3_inputs):
    x = mamba3_inputs()
    with pytest.raises(ValueError, match=r"Trap must have shape \(b, h, L\)"):
        mamba3_scan(*args(dict(x, Trap=x["Trap"][:, :, :3])))
    with pytest.raises(ValueError, match=r"Angles has n_ang=5 > N/2=4"):
        mamba3_scan(*args(dict(x, Angles=torch.zeros(2, 37, 4, 5, dtype=torch.float64))))
    with pytest.raises(ValueError, match=r"number of q/k heads h_qk \(3\) must divide"):
        q = torch.zeros(2, 37, 3, 8, dtype=torch.float64)
        mamba3_scan(*args(dict(x, Q=q, K=q)))
    with pytest.raises(ValueError, match="must be even"):
        q = torch.zeros(2, 37, 2, 7, dtype=torch.float64)
        mamba3_scan(*args(dict(x, Q=q, K=q)))
    with pytest.raises(TypeError, match="DT must be a real floating tensor"):
        mamba3_scan(*args(dict(x, DT=x["DT"].long())))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        mamba3_scan(*args(x), chunk_size=0)
    with pytest.raises(RuntimeError, match="cannot run mamba_ssm_mamba3"):
        mamba3_scan(*args(x), backend="mamba_ssm")     # CPU float64: never a kernel case
