"""Mamba-1 S6: the chunked scan, the sequential loop and the public function agree."""

import pytest
import torch

from mambaadv2_ref.scans import available_backends, selective_scan
from mambaadv2_ref.scans.common import softplus20
from mambaadv2_ref.scans.s6 import selective_scan_chunked, selective_scan_sequential

ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def call(fn, inputs, softplus=True, **kw):
    return fn(*(inputs[k] for k in ARGS), delta_softplus=softplus, **kw)


@pytest.mark.parametrize("bc", ["constant", "variable", "grouped"])
@pytest.mark.parametrize("L,chunk", [(1, None), (37, None), (37, 5), (64, 16)])
@pytest.mark.parametrize("extras", [True, False])
def test_chunked_equals_sequential_float64(s6_inputs, bc, L, chunk, extras):
    x = s6_inputs(L=L, bc=bc, with_D=extras, with_z=extras, with_bias=extras)
    y_ref, h_ref = call(selective_scan_sequential, x, softplus=extras)
    y, h = call(selective_scan_chunked, x, softplus=extras, chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)
    out, last = call(selective_scan, x, softplus=extras, return_last_state=True, backend="torch")
    torch.testing.assert_close(out, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(last, h_ref, rtol=0, atol=1e-10)


def test_float32_within_tolerance(s6_inputs):
    x64 = s6_inputs(L=300, d=8, N=16)
    x32 = {k: None if v is None else v.float() for k, v in x64.items()}
    y_ref, h_ref = call(selective_scan_sequential, x64)
    out, last = call(selective_scan, x32, return_last_state=True, backend="torch")
    assert out.dtype == torch.float32 and last.dtype == torch.float32
    torch.testing.assert_close(out.double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(last.double(), h_ref, rtol=1e-4, atol=1e-4)


def test_gradients_match_sequential(s6_inputs):
    x = s6_inputs(L=23, bc="grouped")
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    grads = []
    for fn, kw in ((selective_scan_sequential, {}), (selective_scan_chunked, {"chunk_size": 4})):
        y, h = call(fn, leaves, **kw)
        g = torch.autograd.grad((y ** 2).sum() + h.sum(), [leaves[k] for k in ARGS])
        grads.append(g)
    for name, g_ref, g in zip(ARGS, *grads, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10, msg=f"d{name}")


def test_gradcheck_chunked(s6_inputs):
    x = s6_inputs(b=1, d=2, L=5, N=2, bc="variable")
    leaves = [x[k].clone().requires_grad_() for k in ARGS]

    def f(*args):
        y, h = selective_scan_chunked(*args, delta_softplus=True, chunk_size=2)
        return y, h

    assert torch.autograd.gradcheck(f, leaves, fast_mode=True)


def test_softplus_threshold_20():
    x = torch.tensor([-5.0, 0.0, 19.0, 20.0, 20.5, 40.0], dtype=torch.float64)
    expected = torch.where(x > 20, x, torch.log1p(torch.exp(x)))
    torch.testing.assert_close(softplus20(x), expected, rtol=0, atol=0)


def test_large_delta_with_softplus(s6_inputs):
    x = s6_inputs(L=40)
    x["delta"] = x["delta"] * 30 + 10          # many values above the threshold 20
    y_ref, h_ref = call(selective_scan_sequential, x)
    y, h = call(selective_scan_chunked, x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [1e-8, 1e4])
def test_tiny_and_huge_delta_finite_and_exact(s6_inputs, scale):
    x64 = s6_inputs(L=200, with_bias=False)
    x64["delta"] = x64["delta"] * scale
    x32 = {k: None if v is None else v.float() for k, v in x64.items()}
    y_ref, h_ref = call(selective_scan_sequential, x64, softplus=False)
    y, h = call(selective_scan_chunked, x32, softplus=False, chunk_size=16)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    tol = 1e-4 * max(1.0, y_ref.abs().max().item())
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=tol)


def test_long_sequence_stable():
    L = 65536
    g = torch.Generator().manual_seed(1)
    u = torch.randn(1, 2, L, generator=g)
    delta = torch.rand(1, 2, L, generator=g) * 2
    A = -torch.rand(2, 3, generator=g) * 4
    B, C = torch.randn(1, 3, L, generator=g), torch.randn(1, 3, L, generator=g)
    y32, h32 = selective_scan_chunked(u, delta, A, B, C)
    y64, h64 = selective_scan_chunked(u.double(), delta.double(), A.double(), B.double(),
                                      C.double())
    assert torch.isfinite(y32).all()
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-4 * y64.abs().max().item())
    # constant inputs have a closed form: h_t = Delta u (1 - a^(t+1)) / (1 - a), a = e^(Delta A)
    one = torch.ones(1, 1, L, dtype=torch.float64)
    a = torch.exp(torch.tensor(-0.01, dtype=torch.float64))
    y, _ = selective_scan_chunked(one, one, torch.full((1, 1), -0.01, dtype=torch.float64),
                                  torch.ones(1, 1, dtype=torch.float64),
                                  torch.ones(1, 1, dtype=torch.float64))
    t = torch.arange(L, dtype=torch.float64)
    torch.testing.assert_close(y[0, 0], (1 - a ** (t + 1)) / (1 - a), rtol=1e-10, atol=0)


def test_bad_inputs_raise(s6_inputs):
    x = s6_inputs()
    bad = dict(x, delta=x["delta"][:, :, :5])
    with pytest.raises(ValueError, match=r"delta must have shape \(b, D, L\)"):
        call(selective_scan, bad)
    with pytest.raises(ValueError, match=r"B has G=3 groups"):
        call(selective_scan, dict(x, B=torch.randn(2, 3, 5, 37, dtype=torch.float64)))
    with pytest.raises(TypeError, match="A must be a real floating tensor"):
        call(selective_scan, dict(x, A=torch.ones(4, 5, dtype=torch.int64)))
    with pytest.raises(TypeError, match="u must be a torch.Tensor"):
        call(selective_scan, dict(x, u=[1.0]))
    with pytest.raises(ValueError, match="z must be on device cpu like the other inputs, got meta"):
        call(selective_scan, dict(x, z=x["z"].to("meta")))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        call(selective_scan_chunked, x, chunk_size=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        call(selective_scan, x, backend="cuda")


def test_backend_resolution_on_cpu(s6_inputs):
    report = available_backends()
    assert set(report) == {"torch", "mamba_ssm_s6", "mamba_ssm_ssd", "mamba_ssm_mamba3"}
    assert report["torch"][0] is True
    x = s6_inputs()
    torch.testing.assert_close(call(selective_scan, x), call(selective_scan, x, backend="torch"))
    if not torch.cuda.is_available():
        assert not report["mamba_ssm_s6"][0] and report["mamba_ssm_s6"][1]
        with pytest.raises(RuntimeError, match="cannot run mamba_ssm_s6"):
            call(selective_scan, x, backend="mamba_ssm")
