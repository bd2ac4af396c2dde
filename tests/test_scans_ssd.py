"""Mamba-2 SSD: segsum, the loop, the matrix form, the chunked form and ssd_scan agree."""

import pytest
import torch

from mambaadv2_ref.scans import decay_mask, segsum, segsum_two_sided, ssd_matrix, ssd_scan
from mambaadv2_ref.scans.common import softplus20
from mambaadv2_ref.scans.ssd import ssd_chunked, ssd_sequential

CORE = ("x", "dt", "A", "B", "C", "D")


def test_segsum_matches_definition():
    a = torch.randn(2, 6, dtype=torch.float64)
    S = segsum(a)
    for t in range(6):
        for s in range(6):
            want = a[:, s + 1:t + 1].sum(-1) if t >= s else torch.full((2,), -torch.inf,
                                                                       dtype=a.dtype)
            torch.testing.assert_close(S[:, t, s], want)
    two = segsum_two_sided(-a.abs())
    for t in range(6):
        for s in range(6):
            lo, hi = min(s, t), max(s, t)
            torch.testing.assert_close(two[:, t, s], -a[:, lo + 1:hi + 1].abs().sum(-1))


def test_segsum_stable_for_long_spans():
    """Each entry sums only its own segment: exact where differenced cumsums lose digits."""
    a = torch.full((1024,), -3.3)
    S = segsum(a)                                                  # float32
    naive = torch.cumsum(a, 0)[:, None] - torch.cumsum(a, 0)[None, :]
    idx = torch.arange(1, 1024)
    assert (S[idx, idx - 1] == a[idx]).all()
    assert (naive[idx, idx - 1] - a[idx]).abs().max() > 1e-5
    assert torch.isfinite(torch.exp(S)).all() and (torch.exp(S).triu(1) == 0).all()


def test_decay_mask_is_exp_of_segsum_with_gradients():
    """The fast mask (no exp(-inf)) equals exp(segsum(a)), values and gradients."""
    a = -torch.rand(3, 2, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    fast, slow = decay_mask(a), torch.exp(segsum(a))
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=0)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), a)
    (g_slow,) = torch.autograd.grad((slow * w).sum(), a)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-12, atol=1e-14)
    assert (decay_mask(torch.full((1, 5), -1e4)).triu(1) == 0).all()


@pytest.mark.parametrize("L,chunk", [(1, 4), (37, 8), (64, 16), (50, 64)])
@pytest.mark.parametrize("g", [1, 2, 4])
@pytest.mark.parametrize("D_shape,with_init", [(("h",), True), (("h", "p"), False), (None, True)])
def test_all_forms_agree_float64(ssd_inputs, L, chunk, g, D_shape, with_init):
    x = ssd_inputs(L=L, g=g, D_shape=D_shape, with_init=with_init)
    x["dt"] = softplus20(x["dt"])
    init = x["initial_states"]
    y_ref, f_ref = ssd_sequential(*(x[k] for k in CORE), initial_states=init)
    y, f = ssd_chunked(*(x[k] for k in CORE[:5]), chunk, x["D"], init)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(f, f_ref, rtol=0, atol=1e-10)
    if init is None:
        torch.testing.assert_close(ssd_matrix(*(x[k] for k in CORE)), y_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("with_z", [True, False])
def test_ssd_scan_composition(ssd_inputs, with_z):
    """ssd_scan = softplus(dt + dt_bias) -> scan -> + D x -> * silu(z), as the Triton kernel."""
    x = ssd_inputs(L=45, with_z=with_z)
    out, final = ssd_scan(**x, chunk_size=16, dt_softplus=True, return_final_states=True,
                          backend="torch")
    delta = softplus20(x["dt"] + x["dt_bias"])
    y_ref, f_ref = ssd_sequential(x["x"], delta, x["A"], x["B"], x["C"], x["D"],
                                  x["initial_states"])
    if with_z:
        y_ref = y_ref * torch.nn.functional.silu(x["z"])
    torch.testing.assert_close(out, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, f_ref, rtol=0, atol=1e-10)


def test_large_dt_with_softplus(ssd_inputs):
    x = ssd_inputs(L=30, h=2, g=1)
    x["dt"] = x["dt"] * 10 + 25                     # mostly above the threshold 20
    x["A"] = x["A"] * 1e-3
    out = ssd_scan(**x, chunk_size=8, dt_softplus=True, backend="torch")
    delta = torch.where(x["dt"] + x["dt_bias"] > 20, x["dt"] + x["dt_bias"],
                        torch.log1p(torch.exp(x["dt"] + x["dt_bias"])))
    y_ref, _ = ssd_sequential(x["x"], delta, x["A"], x["B"], x["C"], x["D"],
                              x["initial_states"])
    torch.testing.assert_close(out, y_ref * torch.nn.functional.silu(x["z"]), rtol=0, atol=1e-9)


def test_float32_within_tolerance(ssd_inputs):
    x64 = ssd_inputs(L=200, h=4, p=8, N=16)
    x32 = {k: None if v is None else v.float() for k, v in x64.items()}
    out, final = ssd_scan(**x32, chunk_size=64, dt_softplus=True, return_final_states=True)
    assert out.dtype == torch.float32 and final.dtype == torch.float32
    ref, f_ref = ssd_scan(**x64, chunk_size=64, dt_softplus=True, return_final_states=True)
    y_seq, _ = ssd_sequential(x64["x"], softplus20(x64["dt"] + x64["dt_bias"]), x64["A"],
                              x64["B"], x64["C"], x64["D"], x64["initial_states"])
    torch.testing.assert_close(ref, y_seq * torch.nn.functional.silu(x64["z"]), rtol=0,
                               atol=1e-10)
    scale = ref.abs().max().item()
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-5 * scale)
    torch.testing.assert_close(final.double(), f_ref, rtol=0, atol=2e-5 * f_ref.abs().max().item())


def test_gradients_match_sequential(ssd_inputs):
    x = ssd_inputs(L=21, g=2)
    x["dt"] = softplus20(x["dt"])
    names = [*CORE, "initial_states"]
    leaves = {k: x[k].clone().requires_grad_() for k in names}
    grads = []
    for fn in (lambda *a: ssd_sequential(*a[:6], a[6]),
               lambda *a: ssd_chunked(*a[:5], 8, a[5], a[6]),
               lambda *a: (ssd_matrix(*a[:6]) + 0 * a[6].sum(), a[6] * 0)):
        y, f = fn(*(leaves[k] for k in names))
        grads.append(torch.autograd.grad((y ** 2).sum() + f.sum(), list(leaves.values())))
    for name, g_ref, g in zip(names, grads[0], grads[1], strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10, msg=f"d{name}")
    x0 = dict(x, initial_states=None)
    y_ref, _ = ssd_sequential(*(x0[k] for k in CORE))
    torch.testing.assert_close(ssd_matrix(*(x0[k] for k in CORE)), y_ref)


def test_gradcheck_chunked_and_matrix(ssd_inputs):
    x = ssd_inputs(b=1, L=5, h=2, p=2, g=1, N=2)
    names = ["x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states"]
    leaves = [x[k].clone().requires_grad_() for k in names]

    def f(*a):
        return ssd_scan(*a[:5], 2, *a[5:8], a[8], dt_softplus=True, return_final_states=True,
                        backend="torch")

    assert torch.autograd.gradcheck(f, leaves, fast_mode=True)
    leaves[1] = softplus20(x["dt"]).requires_grad_()          # ssd_matrix takes Delta
    for causal in (True, False):
        assert torch.autograd.gradcheck(lambda *a, c=causal: ssd_matrix(*a, causal=c), leaves[:6],
                                        fast_mode=True)


def test_two_sided_matrix_definition(ssd_inputs):
    x = ssd_inputs(b=1, L=6, h=2, g=1, N=3, with_init=False)
    x["dt"] = softplus20(x["dt"])
    y = ssd_matrix(*(x[k] for k in CORE[:5]), causal=False)
    a = x["dt"] * x["A"]
    want = torch.zeros_like(y)
    for t in range(6):
        for s in range(6):
            lo, hi = min(s, t), max(s, t)
            decay = torch.exp(-a[:, lo + 1:hi + 1].abs().sum(1))                  # (b, h)
            cb = (x["C"][:, t, 0] * x["B"][:, s, 0]).sum(-1)                      # (b,)
            want[:, t] += (cb[:, None] * decay * x["dt"][:, s])[..., None] * x["x"][:, s]
    torch.testing.assert_close(y, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [1e-8, 1e4])
def test_tiny_and_huge_dt_finite_and_exact(ssd_inputs, scale):
    x64 = ssd_inputs(L=150, h=2, g=1, with_init=False)
    x64["dt"] = torch.rand_like(x64["dt"]) * scale
    x32 = {k: None if v is None else v.float() for k, v in x64.items()}
    y_ref, f_ref = ssd_sequential(*(x64[k] for k in CORE))
    y, f = ssd_chunked(*(x32[k] for k in CORE[:5]), 32, x32["D"])
    assert torch.isfinite(y).all() and torch.isfinite(f).all()
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=1e-4 * y_ref.abs().max().item())
    torch.testing.assert_close(f.double(), f_ref, rtol=0, atol=1e-4 * f_ref.abs().max().item())


def test_long_sequence_stable(ssd_inputs):
    x64 = ssd_inputs(b=1, L=65536, h=1, p=2, g=1, N=2, with_z=False, seed=3)
    x32 = {k: None if v is None else v.float() for k, v in x64.items()}
    out32, f32 = ssd_scan(**x32, chunk_size=64, dt_softplus=True, return_final_states=True)
    out64, f64 = ssd_scan(**x64, chunk_size=64, dt_softplus=True, return_final_states=True)
    assert torch.isfinite(out32).all() and torch.isfinite(f32).all()
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-4 * out64.abs().max().item())
    torch.testing.assert_close(f32.double(), f64, rtol=0, atol=1e-4 * f64.abs().max().item())


def test_bad_inputs_raise(ssd_inputs):
    x = ssd_inputs()
    with pytest.raises(ValueError, match=r"C must have shape \(b, L, g, N\)"):
        ssd_scan(**dict(x, C=x["C"][:, :, :1]), chunk_size=8)
    with pytest.raises(ValueError, match="number of groups g of B \\(3\\) must divide"):
        ssd_scan(**dict(x, B=x["B"][:, :, :1].expand(-1, -1, 3, -1), C=x["C"][:, :, :1]
                        .expand(-1, -1, 3, -1)), chunk_size=8)
    with pytest.raises(ValueError, match=r"initial_states must have shape \(b, h, p, N\)"):
        ssd_scan(**dict(x, initial_states=x["initial_states"][:, :, :1]), chunk_size=8)
    with pytest.raises(ValueError, match=r"D must have shape \(h, p\)"):
        ssd_scan(**dict(x, D=torch.ones(4, 7, dtype=torch.float64)), chunk_size=8)
    with pytest.raises(TypeError, match="dt must be a real floating tensor"):
        ssd_scan(**dict(x, dt=x["dt"].to(torch.complex128)), chunk_size=8)
    with pytest.raises(ValueError, match="A must be on device cpu"):
        ssd_scan(**dict(x, A=x["A"].to("meta")), chunk_size=8)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            ssd_scan(**x, chunk_size=bad)
    with pytest.raises(TypeError, match="chunk_size must be a positive int"):
        ssd_scan(**x, chunk_size=8.0)
