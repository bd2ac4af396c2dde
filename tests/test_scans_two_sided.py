"""Tests of scans.two_sided: the two-sided SSD matrix as a causal + an anticausal scan (TS.1).

Slow twins: the materialised matrix forms (ssd_matrix_core, mamba3_matrix) and sums written out
here, and one scan call per scan for the stacked call (TS.5); float64 on the CPU; cuda-marked
tests compare the Triton kernel route (TS.4) with torch.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_mamba3_inputs, skip_unless_kernel

from mambaadv2_ref.blocks.hss import windows
from mambaadv2_ref.scans.mamba3 import mamba3_matrix, mamba3_two_sided_chunked, prepare
from mambaadv2_ref.scans.ssd import ssd_chunked_core, ssd_matrix_core
from mambaadv2_ref.scans.two_sided import (
    reversed_log_decays,
    ssd_anticausal_core,
    ssd_causal_anticausal_core,
    ssd_causal_core,
    ssd_two_sided_core,
)


def inputs(b=2, L=37, h=4, p=3, g=2, N=6, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, kind="randn"):
        return getattr(torch, kind)(*shape, generator=gen, dtype=torch.float64).to(device, dtype)

    return (rnd(b, L, h, p), -rnd(b, L, h, kind="rand"), rnd(b, L, g, N), rnd(b, L, g, N))


def test_reversed_log_decays_definition():
    a = torch.arange(1.0, 6.0).view(1, 5, 1)
    # a'_0 = a_0, a'_j = a_{L-j}: [a0, a4, a3, a2, a1]
    assert reversed_log_decays(a).flatten().tolist() == [1.0, 5.0, 4.0, 3.0, 2.0]


def test_anticausal_scan_is_the_written_out_sum():
    xbar, a, B, C = inputs(L=9)
    h = xbar.shape[2]
    Bh, Ch = B.repeat_interleave(h // 2, 2), C.repeat_interleave(h // 2, 2)
    expected = torch.zeros_like(xbar)
    for t in range(9):
        for s in range(t, 9):
            decay = torch.exp(a[:, t + 1:s + 1].sum(1))  # (b, h)
            expected[:, t] += ((Ch[:, t] * Bh[:, s]).sum(-1) * decay)[..., None] * xbar[:, s]
    for Q in (1, 4, 64):
        torch.testing.assert_close(ssd_anticausal_core(xbar, a, B, C, Q), expected)


@pytest.mark.parametrize("L,Q", [(1, 4), (37, 1), (37, 8), (64, 16), (100, 64)])
def test_two_sided_scans_equal_materialised_matrix(L, Q):
    xbar, a, B, C = inputs(L=L)
    expected = ssd_matrix_core(xbar, a, B, C, causal=False)
    torch.testing.assert_close(ssd_two_sided_core(xbar, a, B, C, Q), expected)
    causal = ssd_chunked_core(xbar, a, B, C, Q)[0]
    torch.testing.assert_close(ssd_causal_core(xbar, a, B, C, Q), causal)
    torch.testing.assert_close(ssd_two_sided_core(xbar, a, B, C, Q, causal=causal), expected)


def test_two_sided_scans_gradients_equal_materialised():
    grads = []
    for fn in (lambda *t: ssd_two_sided_core(*t, 8),
               lambda *t: ssd_matrix_core(*t, causal=False)):
        tensors = [t.requires_grad_() for t in inputs(L=29, seed=1)]
        fn(*tensors).square().sum().backward()
        grads.append([t.grad for t in tensors])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_two_sided_gradcheck():
    tensors = [t.requires_grad_() for t in inputs(b=1, L=7, h=2, p=2, g=1, N=2, seed=2)]
    assert torch.autograd.gradcheck(lambda *t: ssd_two_sided_core(*t, 3), tensors)


def test_mamba3_two_sided_chunked_equals_matrix(mamba3_inputs):
    args = mamba3_inputs()
    torch.testing.assert_close(mamba3_two_sided_chunked(**args, chunk_size=8),
                               mamba3_matrix(**args, causal=False))


def test_zero_decay_padding_is_exact():
    # windows are zero-padded (a = 0, xbar = 0): nothing leaks into real tokens either way
    xbar, a, B, C = inputs(L=12)
    pad = lambda t: torch.cat([t, torch.zeros_like(t[:, :4])], dim=1)  # noqa: E731
    y = ssd_two_sided_core(*(pad(t) for t in (xbar, a, B, C)), 4)[:, :12]
    torch.testing.assert_close(y, ssd_two_sided_core(xbar, a, B, C, 4))


def ssd_leaves(seed: int):
    """Leaf tensors (xbar, a, B, C) of plain SSD (g = 2 groups), and the scans' inputs of them."""
    return [t.requires_grad_() for t in inputs(seed=seed)], lambda *t: t


def position_aware_leaves(seed: int):
    """Leaf tensors of Mamba-3 (Q, K, V, ADT, DT, Trap, biases, angles), and the scans' inputs
    the HSS block forms of them: rotated per-head q, k (M3.4) and the trapezoid-weighted
    xbar = (gamma + shifted) v (M3.5)."""
    args = make_mamba3_inputs(L=37, seed=seed, with_D=False, with_Z=False)
    names = ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles")

    def scan_inputs(*leaves):
        q, k, v, log_a, gamma, shifted, _ = prepare(*leaves)
        return v * (gamma + shifted)[..., None], log_a, k, q

    return [args[n].requires_grad_() for n in names], scan_inputs


LEAVES = {"ssd": ssd_leaves, "position_aware": position_aware_leaves}


def scans_and_gradients(form: str, window: int | None, two_sided: bool, stack: bool):
    """The scans of one input set (in windows of `window` tokens, as `HSS.matrix_path` cuts
    them) and the gradients of every leaf input, by one stacked call or by separate calls."""
    leaves, scan_inputs = LEAVES[form](seed=3)
    xbar, a, B, C = scan_inputs(*leaves)
    if window is not None:
        xbar, a, B, C = (windows(t, window) for t in (xbar, a, B, C))
    if two_sided:
        ys = [ssd_two_sided_core(xbar, a, B, C, 4, stack=stack)]
    elif stack:
        ys = list(ssd_causal_anticausal_core(xbar, a, B, C, 4))
    else:
        ys = [ssd_causal_core(xbar, a, B, C, 4), ssd_anticausal_core(xbar, a, B, C, 4)]
    loss = sum((i + 1) * y.square().sum() for i, y in enumerate(ys))  # each output its weight
    return [*ys, *torch.autograd.grad(loss, leaves)]


@pytest.mark.parametrize("two_sided", [False, True], ids=["causal+anticausal", "two_sided"])
@pytest.mark.parametrize("window", [None, 8], ids=["L<=W", "L>W"])
@pytest.mark.parametrize("form", list(LEAVES))
def test_stacked_scans_equal_separate_calls(form, window, two_sided):
    """(TS.5): one causal-scan call on the stacked sequence and its reversal gives the causal and
    the anticausal scans of two calls, and the same gradients of every input, in float64: on
    whole sequences and on zero-padded windows (37 tokens in windows of 8), with plain SSD
    inputs and with the position-aware ones (rotary q, k and trapezoid xbar)."""
    stacked, separate = (scans_and_gradients(form, window, two_sided, stack)
                         for stack in (True, False))
    assert len(stacked) == len(separate)
    for a, b in zip(stacked, separate, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_route_stacked_equals_separate(dtype):
    """(TS.5) on the Triton kernel: the stacked call goes through the float32-operand route
    (TS.4) as the two separate calls do, so it gives their scans and gradients (float32 out of
    float32 operands whatever the input dtype); tolerance as `test_kernel_route_matches_torch`
    (TF32 dots; the batch of the call changes, so may the kernel's tiling)."""
    skip_unless_kernel("mamba_ssm_ssd")
    results = []
    for stack in (True, False):
        tensors = [t.requires_grad_() for t in inputs(b=4, L=512, h=8, p=32, g=8, N=16,
                                                      dtype=torch.float32, device="cuda")]
        xbar, a, B, C = tensors
        args = (xbar.to(dtype), a, B.to(dtype), C.to(dtype), 64, "mamba_ssm")
        ys = (list(ssd_causal_anticausal_core(*args)) if stack
              else [ssd_causal_core(*args), ssd_anticausal_core(*args)])
        assert all(y.dtype == dtype for y in ys)
        sum((i + 1) * y.float().square().mean() for i, y in enumerate(ys)).backward()
        results.append([*(y.float() for y in ys), *(t.grad for t in tensors)])
    for stacked, separate in zip(*results, strict=True):
        err = ((stacked - separate).norm() / separate.norm()).item()
        assert err < 5e-3, f"relative L2 error {err:.3g} >= 5e-3"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_route_matches_torch(dtype):
    """(TS.4): the Triton SSD kernel fed dt = -a, A = -1, x = xbar / dt gives the float32 torch
    scans, forward and backward. Tolerances: TF32 dots in float32 (measured on an H200: 2.2e-3
    relative L2 on a gradient), bf16 operands in bf16."""
    skip_unless_kernel("mamba_ssm_ssd")
    results = []
    for backend, cast in (("torch", torch.float32), ("mamba_ssm", dtype)):
        tensors = [t.requires_grad_() for t in inputs(b=4, L=512, h=8, p=32, g=8, N=16,
                                                      dtype=torch.float32, device="cuda")]
        xbar, a, B, C = tensors
        y = ssd_two_sided_core(xbar.to(cast), a, B.to(cast), C.to(cast), 64, backend)
        y.float().square().mean().backward()
        results.append([y.float(), *(t.grad for t in tensors)])
    tol = 3e-2 if dtype == torch.bfloat16 else 5e-3
    for ref, fast in zip(*results, strict=True):
        err = ((fast - ref).norm() / ref.norm()).item()
        assert err < tol, f"relative L2 error {err:.3g} >= {tol}"
