"""Tests of mambaadv2_ref.blocks: norms, frequency conv, shared pieces, SS2D/LSS (v1), HSS/DSS (v2).

Every fast path is checked against a slow twin written here (loops over directions or windows,
explicit formulas), on CPU in float64 where exactness matters.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import skip_unless_kernel

from mambaadv2_ref import scans
from mambaadv2_ref.blocks import compiled
from mambaadv2_ref.blocks.common import DirectionScanner, PatchExpand, drop_path_rates
from mambaadv2_ref.blocks.compiled import (
    INDUCTOR_OPTIONS,
    compile_mixer,
    compile_options,
    reset_compiled_mixers,
)
from mambaadv2_ref.blocks.dss import DSSModule
from mambaadv2_ref.blocks.freq_conv import FrequencyEnhancedConv, fft_filter, sample_filter
from mambaadv2_ref.blocks.hss import HSS, HSSBlock
from mambaadv2_ref.blocks.lss import LSSModule
from mambaadv2_ref.blocks.norms import RMSNormGated, rms_norm
from mambaadv2_ref.blocks.ss2d import SS2D
from mambaadv2_ref.config import ModelConfig
from mambaadv2_ref.scanning import StagePlan, build_orders, inverse
from mambaadv2_ref.timing import saved_for_backward_bytes

PLAN2 = StagePlan("hilbert", 2)


def block_config(**settings) -> ModelConfig:
    """A model config whose block settings are `settings` (4 stages of width 16)."""
    return ModelConfig(dims=(16,) * 4, depths=(1,) * 4, pretrained=False, **settings)


def seeded(seed=0):
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)



# ---- norms -----------------------------------------------------------------------------------

def test_rms_norm_grouped_matches_formula():
    g = seeded()
    x, w = torch.randn(3, 8, generator=g), torch.randn(8, generator=g)
    expected = torch.cat([v / v.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
                          for v in x.split(4, dim=-1)], dim=-1) * w
    torch.testing.assert_close(rms_norm(x, w, group_size=4), expected)
    with pytest.raises(ValueError, match="group_size"):
        rms_norm(x, w, group_size=3)


def test_gated_rms_norm_is_norm_of_gated_input():
    g = seeded()
    y, z = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    norm = RMSNormGated(6, group_size=3)
    torch.nn.init.normal_(norm.weight)
    torch.testing.assert_close(norm(y, z), rms_norm(y * F.silu(z), norm.weight, group_size=3))
    with pytest.raises(ValueError, match="same shape"):
        norm(y, z[..., :3])


# ---- frequency-enhanced convolution ----------------------------------------------------------

def test_sample_filter_hits_grid_points_exactly():
    # a 17 x 9 grid has spacing 1/16 in f_y and f_x: at H = W = 16 every rfft frequency is a
    # grid point, so sampling returns the stored values (with f_y in fftfreq order)
    grid = torch.randn(3, 2, 17, 9, generator=seeded(), dtype=torch.float64)
    W = sample_filter(grid, 16, 16)
    rows = (torch.fft.fftfreq(16, dtype=torch.float64) * 16).long() + 8  # f_y index in the grid
    expected = torch.complex(grid[:, 0], grid[:, 1])[:, rows]
    torch.testing.assert_close(W, expected.to(W.dtype))


def test_fft_filter_is_circular_convolution():
    g = seeded()
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    grid = torch.randn(3, 2, 17, 9, generator=g, dtype=torch.float64)
    W = sample_filter(grid, 16, 16).to(torch.complex128)
    kernel = torch.fft.irfft2(W, s=(16, 16))  # the spatial kernel of the filter, (C, H, W)
    # slow twin: circular convolution by explicit shifts (the filter acts like irfft2 of W)
    expected = torch.zeros_like(x)
    for dy in range(16):
        for dx in range(16):
            expected += kernel[:, dy, dx, None, None] * torch.roll(x, (dy, dx), dims=(-2, -1))
    torch.testing.assert_close(fft_filter(x.float(), grid.float()).double(), expected,
                               atol=1e-4, rtol=1e-4)


def test_fft_identity_filter_and_any_size():
    x = torch.randn(2, 4, 7, 10, generator=seeded())
    grid = torch.zeros(4, 2, 17, 9)
    grid[:, 0] = 1.0
    torch.testing.assert_close(fft_filter(x, grid), x, atol=1e-5, rtol=1e-5)
    branch = FrequencyEnhancedConv(4, (5, 7), use_fft=True)
    assert branch(x).shape == (2, 12, 7, 10) and branch.out_channels == 12
    assert FrequencyEnhancedConv(4, (5,), use_fft=False).out_channels == 4
    with pytest.raises(ValueError, match="kernel_sizes or use_fft"):
        FrequencyEnhancedConv(4, (), use_fft=False)


# ---- shared pieces ---------------------------------------------------------------------------

def test_patch_expand_is_linear_then_depth_to_space():
    seeded()
    pe = PatchExpand(8, 3)
    x = torch.randn(2, 3, 5, 8)
    y = pe(x)
    assert y.shape == (2, 6, 10, 3)
    e = pe.expand(x).view(2, 3, 5, 2, 2, 3)
    for i in range(3):
        for j in range(5):
            for p1 in range(2):
                for p2 in range(2):
                    torch.testing.assert_close(y[:, 2 * i + p1, 2 * j + p2],
                                               pe.norm(e[:, i, j, p1, p2]))


def test_direction_scanner_round_trip_and_drop_path_schedule():
    scanner = DirectionScanner(StagePlan("hilbert", 8))
    x = torch.randn(2, 6, 10, 3, generator=seeded())
    torch.testing.assert_close(scanner.merge(scanner.scan(x), 6, 10), 8 * x)
    rates = drop_path_rates(0.2, 6)
    assert rates[0] == pytest.approx(0.2) and rates[-1] == 0.0 and rates == sorted(rates)[::-1]


# ---- HSS (v2) --------------------------------------------------------------------------------

def make_hss(seed=0, **kwargs) -> HSS:
    seeded(seed)
    settings = dict(d_state=8, headdim=8, chunk_size=16, backend="torch")
    settings.update(kwargs)
    plan = settings.pop("plan", PLAN2)
    hss = HSS(16, plan, block_config(**settings)).double()
    for name, p in hss.named_parameters():  # move off the init so every term matters
        if name in ("B_bias", "C_bias", "D", "gate"):
            p.data.normal_()
    return hss


@pytest.mark.parametrize("position_aware", [True, False])
def test_hss_duality_recurrence_equals_causal_matrix(position_aware):
    """State space duality at block level: the chunked recurrence and the causal matrix form
    give the same block output."""
    x = torch.randn(2, 6, 5, 16, dtype=torch.float64, generator=seeded(1))
    rec = make_hss(path_mode="recurrence", position_aware=position_aware)
    mat = make_hss(path_mode="matrix", matrix_causal=True, position_aware=position_aware)
    torch.testing.assert_close(rec(x), mat(x), atol=1e-9, rtol=1e-9)


def hss_reference(hss: HSS, u: torch.Tensor) -> torch.Tensor:
    """Slow twin of HSS.forward: one direction at a time, explicit permutation, sequential
    Mamba-3 loop, explicit un-permutation."""
    Bsz, H, W, _ = u.shape
    h, p, N = hss.heads, hss.headdim, hss.d_state
    z, x, rest = hss.in_proj(u).split([hss.d_inner, hss.d_inner, rest_width(hss)], dim=-1)
    x = F.silu(hss.conv2d(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
    tokens = torch.cat([x, rest], -1).reshape(Bsz, H * W, -1)
    orders = build_orders(hss.scanner.plan.curve, H, W, hss.scanner.num_directions)
    total = 0
    for order in orders:
        seq = tokens[:, order]
        xs, B, C, dt, trap, angles = seq.split(hss.split_sizes, dim=-1)
        B, C = hss.B_norm(B.unflatten(-1, (1, N))), hss.C_norm(C.unflatten(-1, (1, N)))
        delta = F.softplus(dt + hss.dt_bias)
        A = -torch.exp(hss.A_log)
        xs = xs.unflatten(-1, (h, p))
        y = scans.mamba3_sequential(C, B, xs, (delta * A).transpose(1, 2), delta.transpose(1, 2),
                                    trap.transpose(1, 2), hss.C_bias, hss.B_bias,
                                    angles[:, :, None].expand(-1, -1, h, -1), D=hss.D)[0]
        total = total + y.flatten(-2)[:, inverse(order)]
    return hss.out_proj(hss.norm(total.reshape(Bsz, H, W, -1), z))


def rest_width(hss: HSS) -> int:
    return sum(hss.split_sizes[1:])


def test_hss_folded_directions_match_per_direction_loop():
    hss = make_hss(path_mode="recurrence")
    u = torch.randn(2, 4, 6, 16, dtype=torch.float64, generator=seeded(2))
    torch.testing.assert_close(hss(u), hss_reference(hss, u), atol=1e-9, rtol=1e-9)


def test_hss_windowed_matrix_path_matches_window_loop():
    hss = make_hss(path_mode="matrix", matrix_max_tokens=8)
    b, L, h, p, N = 3, 21, hss.heads, hss.headdim, hss.d_state
    g = seeded(3)
    xbar = torch.randn(b, L, h, p, generator=g, dtype=torch.float64)
    log_a = -torch.rand(b, L, h, generator=g, dtype=torch.float64)
    k, q = (torch.randn(b, L, h, N, generator=g, dtype=torch.float64) for _ in range(2))
    # slow twin: one window at a time, the two-sided matrix written out entry by entry
    rows = []
    for s0 in range(0, L, 8):
        sl = slice(s0, min(s0 + 8, L))
        a, n = log_a[:, sl], min(s0 + 8, L) - s0
        total = torch.zeros(b, n, h, p, dtype=torch.float64)
        for t in range(n):
            for s in range(n):
                lo, hi = min(s, t), max(s, t)
                decay = torch.exp(a[:, lo + 1:hi + 1].sum(1))  # (b, h)
                score = (q[:, sl][:, t] * k[:, sl][:, s]).sum(-1) * decay  # (b, h)
                total[:, t] += score[..., None] * xbar[:, sl][:, s]
        rows.append(total)
    expected = torch.cat(rows, dim=1)
    for impl in ("matrix_path", "matrix_path_materialised"):
        torch.testing.assert_close(getattr(hss, impl)(xbar, log_a, k, q), expected)


@pytest.mark.parametrize("settings", [dict(), dict(position_aware=False),
                                      dict(matrix_causal=True)],
                         ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "v2")
def test_hss_matrix_path_is_the_matrix_form_of_each_window(settings):
    """Slow twin of the windowed matrix path: each window of the raw inputs is its own sequence,
    through the materialised Mamba-3 (or SSD) matrix form of scans; nothing crosses a window."""
    hss = make_hss(path_mode="matrix", matrix_max_tokens=8, **settings)
    b, L, h, p, N, g = 2, 21, hss.heads, hss.headdim, hss.d_state, hss.ngroups
    gen = seeded(7)
    x = torch.randn(b, L, h, p, generator=gen, dtype=torch.float64)
    delta = torch.rand(b, L, h, generator=gen, dtype=torch.float64) * 0.5
    A = -torch.exp(hss.A_log)
    B, C = (torch.randn(b, L, g, N, generator=gen, dtype=torch.float64) for _ in range(2))
    trap = torch.randn(b, L, h if hss.cfg.position_aware else 0, generator=gen,
                       dtype=torch.float64)
    angles = torch.randn(b, L, hss.num_angles, generator=gen, dtype=torch.float64)
    parts = []
    for s0 in range(0, L, 8):
        w = slice(s0, s0 + 8)
        if hss.cfg.position_aware:
            parts.append(scans.mamba3_matrix(
                C[:, w], B[:, w], x[:, w], (delta[:, w] * A).transpose(1, 2),
                delta[:, w].transpose(1, 2), trap[:, w].transpose(1, 2), hss.C_bias,
                hss.B_bias, angles[:, w, None].expand(-1, -1, h, -1),
                causal=hss.cfg.matrix_causal))
        else:
            Bh, Ch = B[:, w].repeat_interleave(h // g, 2), C[:, w].repeat_interleave(h // g, 2)
            parts.append(scans.ssd_matrix(x[:, w], delta[:, w], A, Bh + hss.B_bias,
                                          Ch + hss.C_bias, causal=hss.cfg.matrix_causal))
    expected = torch.cat(parts, dim=1)
    torch.testing.assert_close(hss.dual_paths(x, delta, A, B, C, trap, angles), expected)


@pytest.mark.parametrize("settings", [
    dict(), dict(path_mode="matrix"), dict(path_mode="gate"), dict(matrix_causal=True),
    dict(position_aware=False), dict(bc_norm=False, position_aware=False),
    dict(matrix_max_tokens=7), dict(matrix_max_tokens=7, path_mode="matrix"),
    dict(matrix_max_tokens=64)], ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "v2")
def test_hss_scanned_matrix_path_equals_materialised(settings):
    """The O(L) matrix path (two scans per window) is the materialised (M o q k^T) xbar:
    same block output and same gradients, in float64."""
    outputs = []
    for impl in ("scan", "materialised"):
        hss = make_hss(seed=5, matrix_impl=impl, checkpoint_matrix=False, **settings)
        u = torch.randn(2, 5, 6, 16, dtype=torch.float64, generator=seeded(6), requires_grad=True)
        y = hss(u)
        y.square().sum().backward()
        outputs.append([y, u.grad, *(p.grad for p in hss.parameters())])
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def block_output_and_grads(hss: HSS) -> list[torch.Tensor]:
    """The block's output on a fixed (2, 5, 6, 16) float64 input (30 tokens), the input's
    gradient and every parameter's gradient of sum(y^2)."""
    u = torch.randn(2, 5, 6, 16, dtype=torch.float64, generator=seeded(6), requires_grad=True)
    y = hss(u)
    y.square().sum().backward()
    return [y, u.grad, *(p.grad for p in hss.parameters() if p.grad is not None)]


@pytest.mark.parametrize("settings", [
    dict(), dict(checkpoint_matrix=True), dict(path_mode="matrix"), dict(path_mode="gate"),
    dict(path_mode="recurrence"), dict(matrix_causal=True), dict(position_aware=False),
    dict(bc_norm=False, position_aware=False), dict(matrix_max_tokens=7),
    dict(matrix_max_tokens=7, path_mode="matrix"),
    dict(matrix_max_tokens=7, checkpoint_matrix=True),
    dict(matrix_max_tokens=7, position_aware=False), dict(matrix_impl="materialised")],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "v2")
def test_hss_stacked_scans_equal_separate_calls(settings):
    """One scan call for the causal and anticausal scans (stack_scans, TS.5) gives the block of
    one call per scan: same output and same gradients (input and every parameter), in float64,
    when the 30 tokens fit one window (one call for both paths) and in windows of 7 (the
    windowed pair in one call), with and without position awareness."""
    outputs = [block_output_and_grads(make_hss(seed=5, stack_scans=stack,
                                               **{"checkpoint_matrix": False, **settings}))
               for stack in (True, False)]
    assert len(outputs[0]) == len(outputs[1])
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_compiled_hss_equals_eager():
    """compile_mixer: the HSS mixer under torch.compile (`blocks.compiled`) gives the eager
    block's output and gradients (input and every parameter), in float64, on windows of 7 of
    the 30 tokens with the matrix path recomputed in the backward pass (checkpoint_matrix)."""
    outputs = []
    for mode in ("default", "off"):
        hss = make_hss(seed=5, matrix_max_tokens=7, checkpoint_matrix=True)
        if mode != "off":
            hss.scanner.orders(5, 6, torch.device("cpu"))  # as HSSBlock does, outside the graph
            compile_mixer(hss, mode)
        outputs.append(block_output_and_grads(hss))
    assert len(outputs[0]) == len(outputs[1])
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_compile_mixer_is_a_named_setting():
    """compile_mixer takes 'off' or a torch.compile mode, and is refused for v1 (no HSS)."""
    with pytest.raises(ValueError, match="compile_mixer must be one of"):
        block_config(compile_mixer="fast")
    with pytest.raises(ValueError, match="MambaAD .v1. has none"):
        ModelConfig(model="mambaad", compile_mixer="default")


@pytest.fixture
def fresh_compiles():
    """Every compiled graph and the process's budget claim dropped before and after the test
    (`blocks.compiled`: one activation memory budget per process)."""
    reset_compiled_mixers()
    yield
    reset_compiled_mixers()


def make_block(seed=5, **kwargs) -> HSSBlock:
    """An HSS block (16 channels, 2 Hilbert directions) in float64 with the settings of
    `make_hss` and the bias-like parameters moved off their init; the same weights for a seed
    whatever the compute settings."""
    seeded(seed)
    settings = dict(d_state=8, headdim=8, chunk_size=16, backend="torch", **kwargs)
    block = HSSBlock(16, PLAN2, block_config(**settings)).double()
    for name, p in block.hss.named_parameters():
        if name in ("B_bias", "C_bias", "D", "gate"):
            p.data.normal_()
    return block


def block_saved_output_and_grads(block: HSSBlock) -> tuple[int, list[torch.Tensor]]:
    """The bytes that the block's forward keeps for the backward pass (`timing.
    saved_for_backward_bytes`) on the fixed (2, 5, 6, 16) input of `block_output_and_grads`,
    and that forward's output, input gradient and parameter gradients of sum(y^2)."""
    u = torch.randn(2, 5, 6, 16, dtype=torch.float64, generator=seeded(6), requires_grad=True)
    out = []
    saved = saved_for_backward_bytes(lambda: out.append(block(u)))
    out[0].square().sum().backward()
    return saved, [out[0], u.grad, *(p.grad for p in block.parameters() if p.grad is not None)]


def test_compiled_hss_under_a_memory_budget_equals_eager_and_keeps_less(fresh_compiles):
    """compile_memory_budget: the compiled mixer under a low activation memory budget (0.1)
    gives the eager block's output and gradients (float64, windows of 7 of the 30 tokens) and
    keeps strictly less for the backward pass than under torch's default (None: budget 1.0),
    which itself keeps less than eager; the partition is chosen at the mixer's first call, so
    each budget compiles in a fresh process state (`reset_compiled_mixers`)."""
    settings = dict(matrix_max_tokens=7, checkpoint_matrix=False)
    eager_saved, eager = block_saved_output_and_grads(make_block(**settings))
    saved = {}
    for budget in (None, 0.1):
        reset_compiled_mixers()
        block = make_block(compile_mixer="default", compile_memory_budget=budget, **settings)
        saved[budget], outputs = block_saved_output_and_grads(block)
        assert len(outputs) == len(eager)
        for a, b in zip(outputs, eager, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert saved[0.1] < saved[None] < eager_saved, (saved, eager_saved)


def test_one_memory_budget_holds_per_process(fresh_compiles, monkeypatch):
    """Dynamo shares one compiled graph among the mixers of every model, so the first budget
    claimed (at a build or a call, None counting as torch's 1.0) holds until
    `reset_compiled_mixers`: building under another raises; after the reset a block built
    before it under the old budget refuses to run; torch without the setting is an error."""
    old = make_block(compile_mixer="default", compile_memory_budget=0.5)
    make_block(compile_mixer="reduce-overhead", compile_memory_budget=0.5)  # the same budget
    assert compiled.claimed_budget() == 0.5
    with pytest.raises(RuntimeError, match="one budget holds per process"):
        make_block(compile_mixer="default")  # None: torch's default 1.0
    make_block(compile_memory_budget=None)  # eager blocks claim nothing
    reset_compiled_mixers()
    assert compiled.claimed_budget() is None
    make_block(compile_mixer="default", compile_memory_budget=1.0)
    assert compiled.claimed_budget() == compiled.effective_budget(None) == 1.0
    u = torch.randn(1, 5, 6, 16, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="compile_memory_budget 0.5 in a process"):
        old(u)  # checked before the compiled mixer is called: nothing compiles
    monkeypatch.setattr(torch._functorch, "config", object())
    with pytest.raises(RuntimeError, match="torch >= 2.4"):
        compiled.effective_budget(0.5)


def test_compile_memory_budget_is_checked():
    """compile_memory_budget: None or a number in [0, 1] (an int becomes a float), only with
    compiled mixers of MambaADv2."""
    assert block_config(compile_mixer="default", compile_memory_budget=0).compile_memory_budget \
        == 0.0
    one = block_config(compile_mixer="default", compile_memory_budget=1)
    assert isinstance(one.compile_memory_budget, float) and one.compile_memory_budget == 1.0
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=r"compile_memory_budget must be None or a number "
                                             r"in \[0, 1\]"):
            block_config(compile_mixer="default", compile_memory_budget=bad)
    with pytest.raises(ValueError, match="compile_memory_budget=0.5 with compile_mixer='off'"):
        block_config(compile_memory_budget=0.5)
    with pytest.raises(ValueError, match="MambaAD .v1. has none"):
        ModelConfig(model="mambaad", compile_memory_budget=0.5)


def test_compile_options_keep_the_mode_and_turn_off_loop_reordering():
    """Each compile_mixer mode passes its own inductor options plus INDUCTOR_OPTIONS (loop
    reordering off: the setting that lets the inference graph compile on an H200)."""
    assert compile_options("default") == {"loop_ordering_after_fusion": False}
    reduce_overhead = compile_options("reduce-overhead")
    assert reduce_overhead["triton.cudagraphs"] is True
    assert reduce_overhead["loop_ordering_after_fusion"] is False
    assert compile_options("max-autotune-no-cudagraphs")["max_autotune"] is True
    assert set(INDUCTOR_OPTIONS) <= set(compile_options("max-autotune-no-cudagraphs"))


@pytest.mark.parametrize("settings", [
    dict(), dict(matrix_max_tokens=7), dict(path_mode="matrix"),
    dict(path_mode="matrix", matrix_max_tokens=7), dict(path_mode="recurrence"),
    dict(matrix_causal=True), dict(matrix_causal=True, matrix_max_tokens=7)],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "v2")
def test_hss_scan_calls_are_counted_by_cost(settings, monkeypatch):
    """`HSS.cost`'s scan_calls is the number of causal-scan calls of a forward pass: with
    stack_scans one fewer wherever the matrix path is two-sided (one call in all when the
    sequence fits a window, two when it is cut into windows)."""
    calls = []
    chunked = scans.two_sided.ssd_chunked_core

    def counted(*args, **kwargs):
        calls.append(args[0].shape[0])
        return chunked(*args, **kwargs)

    monkeypatch.setattr(scans.two_sided, "ssd_chunked_core", counted)
    for stack in (True, False):
        hss = make_hss(stack_scans=stack, **settings)
        calls.clear()
        with torch.no_grad():
            hss(torch.randn(1, 5, 6, 16, dtype=torch.float64))
        cost = hss.cost(5, 6)
        assert len(calls) == cost["scan_calls"], (stack, calls)
        assert cost["scan_calls"] == cost["scans_per_direction"] - (
            stack and settings.get("path_mode") != "recurrence"
            and not settings.get("matrix_causal", False))


@pytest.mark.parametrize("flags", [dict(checkpoint_matrix=True),
                                   dict(checkpoint_block=True, checkpoint_matrix=False),
                                   dict(checkpoint_block=True)])
def test_hss_checkpointing_gives_the_same_gradients(flags):
    """Recomputing the matrix path or the whole block in the backward pass changes memory, not
    the gradients."""
    grads = []
    for settings in (flags, dict(checkpoint_matrix=False)):
        hss = make_hss(path_mode="sum", matrix_max_tokens=8, **settings)
        u = torch.randn(2, 4, 6, 16, dtype=torch.float64, generator=seeded(4), requires_grad=True)
        hss(u).square().sum().backward()
        grads.append([u.grad, *(p.grad for p in hss.parameters() if p.grad is not None)])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


FLAGS = [dict(path_mode="sum"), dict(path_mode="gate"), dict(path_mode="recurrence"),
         dict(path_mode="matrix"), dict(matrix_causal=True), dict(position_aware=False),
         dict(dwconv=False), dict(bc_norm=False), dict(bc_norm=False, position_aware=False),
         dict(plan=StagePlan("snake", 1)), dict(plan=StagePlan("zigzag", 4)),
         dict(matrix_max_tokens=7), dict(ngroups=2)]


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_hss_block_ablation_flags_run_and_train(flags):
    seeded()
    plan = flags.pop("plan", PLAN2) if "plan" in flags else PLAN2
    block = HSSBlock(16, plan, block_config(d_state=8, headdim=8, chunk_size=8, backend="torch",
                                            **flags))
    x = torch.randn(2, 4, 6, 16, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient reaches {missing}"


def test_hss_cost_reports_windowed_matrix():
    hss = HSS(16, StagePlan("hilbert", 8), block_config(headdim=8, matrix_max_tokens=64))
    cost = hss.cost(16, 16)
    assert cost["scanned_tokens"] == 256 * 8 and cost["matrix_window"] == 64
    assert cost["matrix_entries"] == 8 * 256 * 64
    # whole-sequence causal scan, windowed causal scan, windowed anticausal scan
    assert cost["scans_per_direction"] == 3 and hss.cost(8, 8)["scans_per_direction"] == 2
    assert cost["scan_calls"] == 3  # stack_scans off by default: one call per scan
    # stacked: the windowed pair in one call; one call for both paths when L <= W
    stacked = HSS(16, StagePlan("hilbert", 8), block_config(headdim=8, matrix_max_tokens=64,
                                                            stack_scans=True))
    assert stacked.cost(16, 16)["scan_calls"] == 2 and stacked.cost(8, 8)["scan_calls"] == 1
    recurrence = HSS(16, PLAN2, block_config(headdim=8, path_mode="recurrence")).cost(4, 4)
    assert recurrence["matrix_entries"] == 0 and recurrence["scans_per_direction"] == 1


def test_hss_bad_settings_raise():
    with pytest.raises(ValueError, match="path_mode"):
        block_config(headdim=8, path_mode="both")
    with pytest.raises(ValueError, match="matrix_impl"):
        block_config(headdim=8, matrix_impl="dense")
    with pytest.raises(ValueError, match="headdim"):
        HSS(12, PLAN2, block_config(headdim=16))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        HSS(16, PLAN2, block_config(headdim=8))(torch.randn(2, 16, 16))


# ---- SS2D / LSS (v1) and DSS -------------------------------------------------------------------

def test_ss2d_matches_per_direction_sequential_scan():
    seeded()
    ss2d = SS2D(8, PLAN2, d_state=4, backend="torch").double()
    u = torch.randn(1, 4, 5, 8, dtype=torch.float64)
    xz = ss2d.in_proj(u)
    x, z = xz.chunk(2, -1)
    x = F.silu(ss2d.conv2d(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).reshape(1, 20, -1)
    d_inner, R, N = x.shape[-1], ss2d.dt_rank, ss2d.d_state
    total = 0
    for k, order in enumerate(build_orders("hilbert", 4, 5, 2)):
        xs = x[:, order].transpose(1, 2)  # (1, d_inner, L)
        dbl = torch.einsum("bdl,cd->bcl", xs, ss2d.x_proj_weight[k])
        dt, B, C = dbl.split([R, N, N], dim=1)
        delta = torch.einsum("brl,dr->bdl", dt, ss2d.dt_projs_weight[k])
        sl = slice(k * d_inner, (k + 1) * d_inner)
        y = scans.selective_scan_sequential(
            xs, delta, -torch.exp(ss2d.A_logs[sl]), B, C, ss2d.Ds[sl],
            delta_bias=ss2d.dt_projs_bias[k], delta_softplus=True)[0]
        total = total + y.transpose(1, 2)[:, inverse(order)]
    expected = ss2d.out_proj(ss2d.out_norm(total.reshape(1, 4, 5, -1)) * F.silu(z))
    torch.testing.assert_close(ss2d(u), expected, atol=1e-9, rtol=1e-9)


def test_lss_and_dss_modules_shapes_and_residual():
    seeded()
    x = torch.randn(2, 4, 6, 16)
    lss = LSSModule(16, 2, PLAN2, block_config(d_state=4, backend="torch"))
    dss = DSSModule(16, 2, PLAN2, block_config(d_state=8, headdim=8, chunk_size=8,
                                               backend="torch"))
    for module in (lss, dss):
        assert module(x).shape == x.shape
        torch.nn.init.zeros_(module.fuse.weight)
        torch.nn.init.zeros_(module.fuse.bias)
        torch.testing.assert_close(module(x), x)  # residual: a zero fusion passes x through
    assert len(dss.blocks) == 2 and dss.freq.out_channels == 48
    assert lss.local.out_channels == 32


# ---- GPU: torch vs mamba-ssm -------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("settings", [dict(), dict(position_aware=False),
                                      dict(path_mode="recurrence"), dict(matrix_max_tokens=64)],
                         ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "v2")
def test_hss_block_torch_matches_mamba_ssm(settings):
    """The block on the Triton SSD kernel (TS.4) gives the pure-PyTorch block, forward and
    backward (TF32 dots: a relative tolerance)."""
    skip_unless_kernel("mamba_ssm_ssd")
    seeded()
    cfg = block_config(d_state=16, headdim=32, chunk_size=64, backend="torch", **settings)
    block = HSSBlock(64, StagePlan("hilbert", 8), cfg).cuda()
    results = []
    for backend in ("torch", "mamba_ssm"):
        block.hss.cfg = replace(cfg, backend=backend)
        torch.manual_seed(1)
        x = torch.randn(2, 16, 16, 64, device="cuda", requires_grad=True)
        block.zero_grad()
        y = block(x)
        y.square().mean().backward()
        results.append([y, x.grad, *(p.grad for p in block.parameters())])
    for ref, fast in zip(*results, strict=True):
        err = ((fast - ref).norm() / ref.norm()).item()
        assert err < 3e-3, f"relative L2 error {err:.3g} >= 3e-3"


@pytest.mark.cuda
def test_ss2d_torch_matches_mamba_ssm():
    skip_unless_kernel("mamba_ssm_s6")
    seeded()
    ss2d = SS2D(32, StagePlan("hilbert", 8), d_state=16).cuda()
    x = torch.randn(2, 16, 16, 32, device="cuda")
    ss2d.backend = "torch"
    reference = ss2d(x)
    ss2d.backend = "mamba_ssm"
    torch.testing.assert_close(ss2d(x), reference, atol=2e-3, rtol=6e-4)


@pytest.mark.parametrize("position_aware", [True, False])
def test_scan_float32_changes_nothing_without_autocast_and_nears_float32_under_it(
        position_aware):
    """`scan_float32`: without autocast the block is the same computation, output and every
    gradient (float64, exact); under bf16 autocast (CPU) its output is closer to the float32
    block's than the default bf16 route, whose scans cast q, k, xbar and their products to
    bf16."""
    plain, f32 = (make_hss(seed=7, position_aware=position_aware, scan_float32=flag)
                  for flag in (False, True))
    for a, b in zip(block_output_and_grads(plain), block_output_and_grads(f32), strict=True):
        assert torch.equal(a, b)
    plain, f32 = plain.float(), f32.float()
    u = torch.randn(2, 8, 8, 16, generator=seeded(8))
    with torch.no_grad():
        reference = plain(u)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            errors = [(block(u).float() - reference).abs().mean().item() for block in (plain, f32)]
    assert errors[1] < 0.9 * errors[0], errors  # measured: 0.85 (most bf16 error is the linears)
