"""Shared test fixtures: seeded input factories for the scans and the CUDA/mamba-ssm skip helper."""

from __future__ import annotations

import os

import pytest
import torch

from mambaadv2_ref.scans import available_backends


def _triton_cheapest_config_only() -> None:
    """With MAMBAADV2_TRITON_ONE_CONFIG=1, every Triton autotuner keeps only its cheapest config.

    For the GPU parity tests: autotuning only picks the fastest of configs that compute the same
    thing, and compiling every config of mamba-ssm's SSD and Mamba-3 kernels takes many minutes.
    The cost is mamba-ssm's own (`utils.determinism`: product of the BLOCK_SIZE_* values times
    num_stages). Runs at conftest import, before mamba_ssm's decorators run.
    """
    if os.environ.get("MAMBAADV2_TRITON_ONE_CONFIG") != "1":
        return
    try:
        import triton
    except ImportError:
        return
    autotune = triton.autotune

    def cost(config) -> int:
        size = 1
        for key, value in config.kwargs.items():
            if key.startswith("BLOCK_SIZE_"):
                size *= value
        return size * (config.num_stages or 1)

    def cheapest(configs, key, *args, **kwargs):
        return autotune([min(configs, key=cost)] if configs else configs, key, *args, **kwargs)

    triton.autotune = cheapest


_triton_cheapest_config_only()


def skip_unless_kernel(kernel: str):
    """pytest.skip (with the reason) unless CUDA and the named mamba-ssm kernel are usable."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    ok, reason = available_backends()[kernel]
    if not ok:
        pytest.skip(f"{kernel} unavailable: {reason}")


def make_s6_inputs(b=2, d=4, L=37, N=5, bc="variable", groups=2, with_D=True, with_z=True,
                   with_bias=True, dtype=torch.float64, device="cpu", seed=0):
    """Random S6 inputs (mamba-ssm test distribution: A = -0.5 rand, delta = 0.5 rand)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, kind="randn"):
        t = getattr(torch, kind)(*shape, generator=g, dtype=torch.float64) * scale
        return t.to(dtype=dtype, device=device)

    shapes = {"constant": (d, N), "variable": (b, N, L), "grouped": (b, groups, N, L)}
    return dict(
        u=rnd(b, d, L), delta=rnd(b, d, L, scale=0.5, kind="rand"),
        A=rnd(d, N, scale=-0.5, kind="rand"), B=rnd(*shapes[bc]), C=rnd(*shapes[bc]),
        D=rnd(d) if with_D else None, z=rnd(b, d, L) if with_z else None,
        delta_bias=rnd(d, scale=0.5, kind="rand") if with_bias else None)


def make_ssd_inputs(b=2, L=37, h=4, p=3, g=2, N=5, D_shape=("h",), with_z=True, with_init=True,
                    dtype=torch.float64, device="cpu", seed=0):
    """Random SSD inputs; dt pre-softplus around Mamba-2's init, A in -[1, 16)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, kind="randn"):
        return getattr(torch, kind)(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype,
                                                                                 device=device)

    D = None if D_shape is None else rnd(*[{"h": h, "p": p}[s] for s in D_shape])
    return dict(
        x=rnd(b, L, h, p), dt=rnd(b, L, h) - 3.0, A=-(1 + 15 * rnd(h, kind="rand")),
        B=rnd(b, L, g, N), C=rnd(b, L, g, N), D=D, z=rnd(b, L, h, p) if with_z else None,
        dt_bias=rnd(h) * 0.5, initial_states=rnd(b, h, p, N) if with_init else None)


def make_mamba3_inputs(b=2, L=37, h=4, h_qk=2, p=4, N=8, n_ang=2, with_D=True, with_Z=True,
                       dtype=torch.float64, device="cpu", seed=0):
    """Random Mamba-3 SISO inputs: DT = softplus(...) in ~[1e-3, 0.3], ADT = -A DT with A > 0."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, kind="randn"):
        return getattr(torch, kind)(*shape, generator=gen, dtype=torch.float64)

    DT = torch.nn.functional.softplus(rnd(b, h, L) - 3.0)
    ADT = -(0.5 + rnd(b, h, L, kind="rand")) * DT
    out = dict(Q=rnd(b, L, h_qk, N), K=rnd(b, L, h_qk, N), V=rnd(b, L, h, p), ADT=ADT, DT=DT,
               Trap=rnd(b, h, L), Q_bias=rnd(h, N) * 0.1 + 1, K_bias=rnd(h, N) * 0.1 + 1,
               Angles=rnd(b, L, h, n_ang), D=rnd(h) if with_D else None,
               Z=rnd(b, L, h, p) if with_Z else None)
    return {k: None if v is None else v.to(dtype=dtype, device=device) for k, v in out.items()}


@pytest.fixture
def s6_inputs():
    return make_s6_inputs


@pytest.fixture
def ssd_inputs():
    return make_ssd_inputs


@pytest.fixture
def mamba3_inputs():
    return make_mamba3_inputs


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the tests use small tensors, and on a shared 2-core machine more
    threads only spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# a minuscule MambaADv2 (narrow decoder, 2 scan directions) and a 2-step CPU run at 64 px with
# a random encoder: the settings of the tests that train real runs end to end
SMALL_MODEL = {"dims": (16, 8, 8, 8), "headdim": 8, "d_state": 4, "num_directions": 2}
FAST_RUN = {"image_size": 64, "batch_size": 2, "log_every": 1, "checkpoint_minutes": 0.0,
            "steps": 2, "device": "cpu", "profile": "tiny", "pretrained": False}
