"""GPU parity: our torch scans vs mamba-ssm's kernels (forward and backward), on CUDA only.

Reference: the float64 torch path (equal to the float64 sequential loops to ~1e-10 in the CPU
tests). Criterion for S6 and SSD, as mamba-ssm's own layer-norm test:
    max|kernel - ref| <= 2 * max|our same-dtype torch - ref| + atol,
for outputs, final states and every input gradient, with atol = rel * max|ref|:
    S6 float32: rel 1e-3 (mamba-ssm's own fp32 test allows atol 2e-3 on O(1) values);
    SSD float32: rel 5e-3, because Triton runs float32 dots in TF32 (10-bit mantissa);
    bfloat16: rel 2e-2.
Mamba-3's kernel computes in bfloat16 inside, so it gets a relative-L2 bound instead: 2e-2 for
outputs and states, 1e-1 for gradients (3e-1 for dAngles and dTrap).
Two kernel facts the comparisons account for (both seen on an H200, 2026-11-27):
- SSD float32: Triton's dots run in TF32, so "our same-dtype torch path" runs with TF32 matmuls
  too (torch.backends.cuda.matmul.allow_tf32): the same arithmetic, the same kind of error.
  Reductions over batch and time (dA, dD, ddt_bias) gather that error from every step.
- S6 with constant (not input-dependent) B: the CUDA kernel scans the state without B and
  multiplies B in at the output (selective_scan_fwd_kernel.cuh, `BC_val`), so the last state it
  returns is H / B (elementwise over (d, N)); its output and gradients are unaffected. The
  comparison multiplies that state by B, and records the raw difference as well.
MAMBAADV2_TRITON_ONE_CONFIG=1 (conftest) compiles one config per kernel instead of autotuning.
With MAMBAADV2_RESULTS_DIR set, the errors are written to <dir>/scans_gpu.json after every case
(a run cut short keeps what it measured). Run with `-s` to see one line per case.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import make_mamba3_inputs, make_s6_inputs, make_ssd_inputs, skip_unless_kernel

from mambaadv2_ref.scans import available_backends, mamba3_scan, selective_scan, ssd_scan

pytestmark = pytest.mark.cuda
RESULTS: dict = {}
S6_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
SSD_ARGS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")
M3_ARGS = ("Q", "K", "V", "ADT", "DT", "Trap", "Q_bias", "K_bias", "Angles", "D", "Z")


def save_results() -> None:
    """Write RESULTS (with date, GPU and versions) when MAMBAADV2_RESULTS_DIR is set."""
    folder = os.environ.get("MAMBAADV2_RESULTS_DIR")
    if not folder or not RESULTS:
        return
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "cuda": torch.version.cuda,
           "backends": {k: list(v) for k, v in available_backends().items()}}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    for module in ("triton", "mamba_ssm"):
        try:
            env[module] = __import__(module).__version__
        except Exception as err:  # not installed or not importable here
            env[module] = f"unavailable: {type(err).__name__}"
    Path(folder).mkdir(parents=True, exist_ok=True)
    doc = {"environment": env, "criterion": __doc__, "results": RESULTS}
    (Path(folder) / "scans_gpu.json").write_text(json.dumps(doc, indent=1) + "\n")


def recorded(case_fn):
    """Run one parity case; record its outcome (or exception) in RESULTS and save at once."""
    def run(*args, **kwargs):
        name = f"{case_fn.__name__}{args[2:]}"
        try:
            case_fn(*args, **kwargs)
            RESULTS.setdefault("outcome", {})[name] = "passed"
        except BaseException as err:
            RESULTS.setdefault("outcome", {})[name] = f"{type(err).__name__}: {err}"[:2000]
            raise
        finally:
            save_results()
            print(name, RESULTS["outcome"][name][:300], flush=True)
    return run


def max_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return (a.double() - ref.double()).abs().max().item()


def rel_l2(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def run_with_grads(fn, inputs: dict, names, weights):
    """Call fn on fresh leaves; return (outputs, grads dict) of sum_i <w_i, out_i>."""
    leaves = {k: inputs[k].detach().clone().requires_grad_() for k in names
              if inputs[k] is not None}
    outs = fn({**inputs, **leaves})
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o.double() * w).sum() for o, w in zip(outs, weights, strict=False)
               if w is not None)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [o.detach() for o in outs], dict(zip(leaves, grads, strict=True))


def check_criterion(case: str, dtype, outs_k, outs_t, outs_ref, grads_k, grads_t, grads_ref,
                    out_names, rel_f32):
    """Record max errors and assert |k - ref| <= 2 |t - ref| + atol for each tensor."""
    rel = rel_f32 if dtype == torch.float32 else 2e-2
    record, failures = {}, []
    pairs = [(n, outs_k[i], outs_t[i], outs_ref[i]) for i, n in enumerate(out_names)]
    pairs += [(f"d{n}", grads_k[n], grads_t[n], grads_ref[n]) for n in grads_ref]
    for name, k, t, ref in pairs:
        scale = ref.double().abs().max().item()
        ek, et = max_err(k, ref), max_err(t, ref)
        bound = 2 * et + rel * max(scale, 1e-12)
        record[name] = {"kernel_max_err": ek, "torch_max_err": et, "bound": bound,
                        "ref_max_abs": scale}
        if not ek <= bound:
            failures.append(name)
    RESULTS[case] = record
    assert not failures, f"{case}: kernel beyond 2*torch+atol for {failures}: {record}"


@recorded
def s6_case(device: str, backend: str, L: int, bc: str, dtype=torch.float32):
    x = make_s6_inputs(b=2, d=32, L=L, N=16, bc=bc, groups=2, dtype=torch.float64,
                       device=device, seed=L)
    x["delta"] = x["delta"] - 1.0                       # softplus of roughly [-1, -0.5]
    x_lo = {k: None if v is None else v.to(dtype) for k, v in x.items()}
    for k in ("A", "D", "delta_bias") + (("B", "C") if bc == "constant" else ()):
        x_lo[k] = x_lo[k].float()                       # kernel wants these in float32
    gen = torch.Generator(device=device).manual_seed(1)
    w = torch.randn(2, 32, L, generator=gen, device=device, dtype=torch.float64)

    def scan(be):
        return lambda v: selective_scan(*(v[k] for k in S6_ARGS), delta_softplus=True,
                                        return_last_state=True, backend=be)

    outs_ref, g_ref = run_with_grads(scan("torch"), x, S6_ARGS, (w, None))
    outs_t, g_t = run_with_grads(scan("torch"), x_lo, S6_ARGS, (w, None))
    outs_k, g_k = run_with_grads(scan(backend), x_lo, S6_ARGS, (w, None))
    case = f"s6_L{L}_{bc}_{str(dtype)[6:]}"
    if bc == "constant":  # the kernel's last state lacks B (module docstring)
        raw = max_err(outs_k[1], outs_ref[1])
        outs_k[1] = outs_k[1] * x_lo["B"]
        RESULTS[f"{case}_raw_kernel_last_state_max_err"] = raw
    check_criterion(case, dtype, outs_k, outs_t, outs_ref, g_k, g_t, g_ref, ("out", "last_state"),
                    rel_f32=1e-3)


@recorded
def ssd_case(device: str, backend: str, L: int, g: int, chunk: int, dtype, D_shape, init):
    x = make_ssd_inputs(b=2, L=L, h=8, p=32, g=g, N=32, D_shape=D_shape, with_init=init,
                        dtype=torch.float64, device=device, seed=L + g)
    x_lo = {k: None if v is None else v.to(dtype) for k, v in x.items()}
    for k in ("A", "D", "dt_bias", "dt"):
        if x_lo[k] is not None:
            x_lo[k] = x_lo[k].float()
    gen = torch.Generator(device=device).manual_seed(2)
    w = torch.randn(2, L, 8, 32, generator=gen, device=device, dtype=torch.float64)
    wf = torch.randn(2, 8, 32, 32, generator=gen, device=device, dtype=torch.float64)
    names = [k for k in SSD_ARGS if x[k] is not None]

    def scan(be):
        return lambda v: ssd_scan(*(v[k] for k in SSD_ARGS[:5]), chunk, D=v["D"], z=v["z"],
                                  dt_bias=v["dt_bias"], initial_states=v["initial_states"],
                                  dt_softplus=True, return_final_states=True, backend=be)

    outs_ref, g_ref = run_with_grads(scan("torch"), x, names, (w, wf))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == torch.float32  # the kernel's dots
    try:
        outs_t, g_t = run_with_grads(scan("torch"), x_lo, names, (w, wf))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    outs_k, g_k = run_with_grads(scan(backend), x_lo, names, (w, wf))
    check_criterion(f"ssd_L{L}_g{g}_Q{chunk}_{str(dtype)[6:]}_D{D_shape}_init{init}", dtype,
                    outs_k, outs_t, outs_ref, g_k, g_t, g_ref, ("out", "final_states"),
                    rel_f32=5e-3)


@recorded
def mamba3_case(device: str, backend: str, L: int, h_qk: int):
    x = make_mamba3_inputs(b=2, L=L, h=8, h_qk=h_qk, p=64, N=64, n_ang=16, dtype=torch.float64,
                           device=device, seed=L)
    x32 = {k: v.float() for k, v in x.items()}
    gen = torch.Generator(device=device).manual_seed(3)
    w = torch.randn(2, L, 8, 64, generator=gen, device=device, dtype=torch.float64)

    def scan(be):
        return lambda v: mamba3_scan(*(v[k] for k in M3_ARGS), chunk_size=64,
                                     return_final_states=True, backend=be)

    outs_ref, g_ref = run_with_grads(scan("torch"), x, M3_ARGS, (w,))
    outs_t, g_t = run_with_grads(scan("torch"), x32, M3_ARGS, (w,))
    outs_k, g_k = run_with_grads(scan(backend), x32, M3_ARGS, (w,))
    names = ("out", "angle", "ssm_state", "k_state", "v_state")
    record, failures = {}, []
    for i, name in enumerate(names):
        ref, k, t = outs_ref[i].double(), outs_k[i].double(), outs_t[i].double()
        if name == "angle":                              # compare on the circle
            ref, k, t = torch.polar(torch.ones_like(ref), ref), torch.polar(
                torch.ones_like(k), k), torch.polar(torch.ones_like(t), t)
            ek = ((k - ref).abs().norm() / ref.abs().norm()).item()
            et = ((t - ref).abs().norm() / ref.abs().norm()).item()
        else:
            ek, et = rel_l2(k, ref), rel_l2(t, ref)
        record[name] = {"kernel_rel_l2": ek, "torch_fp32_rel_l2": et, "bound": 2e-2}
        if not ek <= 2e-2:
            failures.append(name)
    for name in g_ref:
        bound = 3e-1 if name in ("Angles", "Trap") else 1e-1
        ek, et = rel_l2(g_k[name], g_ref[name]), rel_l2(g_t[name], g_ref[name])
        record[f"d{name}"] = {"kernel_rel_l2": ek, "torch_fp32_rel_l2": et, "bound": bound}
        if not ek <= bound:
            failures.append(f"d{name}")
    RESULTS[f"mamba3_L{L}_hqk{h_qk}"] = record
    assert not failures, f"mamba3 L={L}: kernel beyond the relative-L2 bound for {failures}"


@pytest.mark.parametrize("L,bc", [(1000, "variable"), (4096, "grouped"), (300, "constant")])
def test_selective_scan_matches_mamba_ssm(L, bc):
    skip_unless_kernel("mamba_ssm_s6")
    s6_case("cuda", "mamba_ssm", L, bc)


@pytest.mark.parametrize("L,g,chunk,dtype,D_shape,init", [
    (1000, 1, 64, torch.float32, ("h",), True),
    pytest.param(2048, 2, 256, torch.float32, ("h", "p"), False, marks=pytest.mark.xfail(
        reason="seen on an H200 (2026-11-27): the kernel's dA, a sum over batch and all 2048 "
               "steps, is 1.1x the bound (error 0.083, TF32 torch twin 0.019, max|dA| 7.2); "
               "every other output and gradient is within it", strict=False)),
    (777, 4, 128, torch.bfloat16, ("h",), True),
])
def test_ssd_matches_mamba_ssm(L, g, chunk, dtype, D_shape, init):
    skip_unless_kernel("mamba_ssm_ssd")
    ssd_case("cuda", "mamba_ssm", L, g, chunk, dtype, D_shape, init)


@pytest.mark.parametrize("L,h_qk", [(512, 1), (1000, 2)])
def test_mamba3_matches_mamba_ssm(L, h_qk):
    skip_unless_kernel("mamba_ssm_mamba3")
    mamba3_case("cuda", "mamba_ssm", L, h_qk)


def test_auto_backend_uses_kernel_on_cuda():
    skip_unless_kernel("mamba_ssm_ssd")
    x = make_ssd_inputs(b=1, L=256, h=4, p=16, g=1, N=16, dtype=torch.float32, device="cuda")
    x["dt"] = x["dt"].float()
    auto = ssd_scan(**x, chunk_size=64, dt_softplus=True)
    kern = ssd_scan(**x, chunk_size=64, dt_softplus=True, backend="mamba_ssm")
    assert torch.equal(auto, kern)
    x64 = {k: None if v is None else v.double() for k, v in x.items()}
    ref = ssd_scan(**x64, chunk_size=64, dt_softplus=True)          # float64: torch path
    RESULTS["auto_backend_ssd"] = {"kernel_vs_fp64_max_err": max_err(auto, ref)}
    save_results()
    assert math.isfinite(RESULTS["auto_backend_ssd"]["kernel_vs_fp64_max_err"])
