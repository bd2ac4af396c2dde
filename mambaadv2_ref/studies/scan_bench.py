"""Scan benchmark: sequential loop vs chunked (eager, torch.compile) vs mamba-ssm kernels.

Forward passes only, under no_grad, float32 inputs. Every number is measured (median of a few
repetitions after a warm-up); nothing is extrapolated. When a shape gives `sequential_batch`,
the sequential loop is timed at that smaller batch and the JSON says so. Results are printed
and written as JSON after every measurement, so a run cut short keeps what it measured.

Shape keys: scan ("s6", "ssd", "mamba3"), batch, length, heads, headdim, d_state, chunk (SSD and
Mamba-3), sequential_batch (optional). For S6 the channel count is D = heads * headdim.
Command line: `python -m mambaadv2_ref.studies.scan_bench --device cuda --out bench.json`;
`load_table(path)` reads a committed result back as one row per shape and method.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from mambaadv2_ref.runtime import resolve_device
from mambaadv2_ref.scans import available_backends
from mambaadv2_ref.scans.mamba3 import mamba3_chunked, mamba3_scan, mamba3_sequential
from mambaadv2_ref.scans.s6 import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_sequential,
)
from mambaadv2_ref.scans.ssd import ssd_chunked, ssd_scan, ssd_sequential
from mambaadv2_ref.studies.results import environment, read_json
from mambaadv2_ref.timing import seconds_per_call

DECODER = dict(batch=128, length=4096, heads=4, headdim=32, d_state=16)
GPU_SHAPES = [
    dict(scan="ssd", **DECODER, chunk=256),
    dict(scan="ssd", **DECODER, chunk=64),
    dict(scan="ssd", batch=128, length=1024, heads=8, headdim=32, d_state=16, chunk=256),
    dict(scan="s6", **DECODER),
    dict(scan="mamba3", **DECODER, chunk=64),
]
CPU_SHAPES = [
    dict(scan="s6", batch=1, length=4096, heads=1, headdim=16, d_state=16),
    dict(scan="s6", batch=2, length=4096, heads=2, headdim=32, d_state=16),
    dict(scan="ssd", batch=2, length=4096, heads=4, headdim=32, d_state=16, chunk=32),
    dict(scan="mamba3", batch=2, length=4096, heads=4, headdim=32, d_state=16, chunk=32),
]
KERNELS = {"s6": "mamba_ssm_s6", "ssd": "mamba_ssm_ssd", "mamba3": "mamba_ssm_mamba3"}


def _inputs(shape: dict, batch: int, device) -> dict:
    """Random float32 inputs for one scan at one batch size (seeded)."""
    g = torch.Generator().manual_seed(0)
    b, L, h, p, N = batch, shape["length"], shape["heads"], shape["headdim"], shape["d_state"]

    def rnd(*s, kind="randn"):
        return getattr(torch, kind)(*s, generator=g).to(device)

    if shape["scan"] == "s6":
        d = h * p
        return dict(u=rnd(b, d, L), delta=rnd(b, d, L, kind="rand") * 0.1,
                    A=-rnd(d, N, kind="rand") - 0.5, B=rnd(b, N, L), C=rnd(b, N, L))
    if shape["scan"] == "ssd":
        return dict(x=rnd(b, L, h, p), dt=rnd(b, L, h, kind="rand") * 0.1,
                    A=-rnd(h, kind="rand") - 0.5, B=rnd(b, L, 1, N), C=rnd(b, L, 1, N))
    DT = rnd(b, h, L, kind="rand") * 0.1
    return dict(Q=rnd(b, L, 1, N), K=rnd(b, L, 1, N), V=rnd(b, L, h, p), ADT=-DT,
                DT=DT, Trap=rnd(b, h, L), Q_bias=rnd(h, N), K_bias=rnd(h, N),
                Angles=rnd(b, L, h, N // 4))


def _runners(shape: dict) -> dict[str, Callable[[dict], object]]:
    """method name -> function of the inputs dict."""
    scan, Q = shape["scan"], shape.get("chunk")
    if scan == "s6":
        return {"sequential": lambda x: selective_scan_sequential(**x),
                "chunked_eager": lambda x: selective_scan_chunked(**x),
                "mamba_ssm": lambda x: selective_scan(**x, backend="mamba_ssm")}
    if scan == "ssd":
        return {"sequential": lambda x: ssd_sequential(**x),
                "chunked_eager": lambda x: ssd_chunked(**x, chunk_size=Q),
                "mamba_ssm": lambda x: ssd_scan(**x, chunk_size=Q, backend="mamba_ssm")}
    return {"sequential": lambda x: mamba3_sequential(**x),
            "chunked_eager": lambda x: mamba3_chunked(**x, chunk_size=Q),
            "mamba_ssm": lambda x: mamba3_scan(**x, chunk_size=Q, backend="mamba_ssm")}


def _compiled(shape: dict) -> Callable[[dict], object]:
    """torch.compile of the chunked form (SSD and Mamba-3; S6's chunk loops are not compiled)."""
    fn = torch.compile(ssd_chunked if shape["scan"] == "ssd" else mamba3_chunked, dynamic=False)
    return lambda x: fn(**x, chunk_size=shape["chunk"])


def _measure(run: Callable[[dict], object], shape: dict, batch: int, device: torch.device,
             repeats: int) -> dict:
    """{ms, batch, total_s} of one method at one shape, or {error, traceback_tail} when it
    fails (out of memory, a compile failure): the benchmark records it and goes on."""
    try:
        x = _inputs(shape, batch, device)
        with torch.no_grad():
            start = time.perf_counter()
            ms = 1e3 * seconds_per_call(lambda: run(x), device, warmup=1, iters=1,
                                        repeats=repeats)
        return {"ms": ms, "batch": batch, "total_s": time.perf_counter() - start}
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"[:500],
                "traceback_tail": traceback.format_exc()[-1500:]}
    finally:
        x = None  # free the inputs before empty_cache
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _ratios(methods: dict) -> dict:
    ms = {k: v["ms"] for k, v in methods.items() if "ms" in v}
    out = {}
    if "sequential" in ms and "chunked_eager" in ms \
            and methods["sequential"]["batch"] == methods["chunked_eager"]["batch"]:
        out["sequential_over_chunked_eager"] = ms["sequential"] / ms["chunked_eager"]
    if "sequential" in ms and "chunked_compile" in ms \
            and methods["sequential"]["batch"] == methods["chunked_compile"]["batch"]:
        out["sequential_over_chunked_compile"] = ms["sequential"] / ms["chunked_compile"]
    for fast in ("chunked_compile", "mamba_ssm"):
        if fast in ms and "chunked_eager" in ms:
            out[f"chunked_eager_over_{fast}"] = ms["chunked_eager"] / ms[fast]
    if "chunked_compile" in ms and "mamba_ssm" in ms:
        out["chunked_compile_over_mamba_ssm"] = ms["chunked_compile"] / ms["mamba_ssm"]
    return out


def run_scan_bench(device: str | torch.device = "auto", shapes: list[dict] | None = None,
                   out_path: str | Path | None = None, reps: int = 5,
                   compile_chunked: bool = True, scans: tuple[str, ...] | None = None) -> dict:
    """Time the scans at the given shapes and save the results as JSON.

    Args:
        device: "auto", "cpu" or "cuda[:N]".
        shapes: list of shape dicts (module docstring); default GPU_SHAPES on CUDA, else
            CPU_SHAPES.
        out_path: JSON file written after every measurement (None: not written).
        reps: timed repetitions of the fast methods (the sequential loop is timed once).
        compile_chunked: also time torch.compile of the chunked SSD / Mamba-3 forms.
        scans: keep only the shapes of these scans ("s6", "ssd", "mamba3"); None = all.
    Returns:
        dict with "environment" and one entry per shape: methods -> {ms, batch, ...} or
        {error}, and ratios (sequential / chunked at equal batch, chunked / compiled,
        chunked / mamba-ssm).
    """
    device = resolve_device(device)
    shapes = shapes or (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    if scans is not None:
        unknown = sorted(set(scans) - set(KERNELS))
        if unknown:
            raise ValueError(f"scans must be among {sorted(KERNELS)}, got {unknown}")
        shapes = [s for s in shapes if s["scan"] in scans]
    result = {"environment": environment(device), "note": __doc__.split("\n\n")[1],
              "shapes": []}

    def save():
        if out_path is not None:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            Path(out_path).write_text(json.dumps(result, indent=1) + "\n")

    kernels_ok = available_backends()
    for shape in shapes:
        entry = {"shape": shape, "methods": {}}
        result["shapes"].append(entry)
        runners = _runners(shape)
        if compile_chunked and shape["scan"] != "s6":
            runners["chunked_compile"] = _compiled(shape)
        elif compile_chunked:
            entry["methods"]["chunked_compile"] = {
                "error": "not timed: S6's chunked form is Python loops (~3 sqrt(L) steps) "
                         "that torch.compile would unroll into a very large graph"}
        for method, run in runners.items():
            batch = shape.get("sequential_batch", shape["batch"]) if method == "sequential" \
                else shape["batch"]
            usable, reason = kernels_ok[KERNELS[shape["scan"]]]
            if method == "mamba_ssm" and not (usable and device.type == "cuda"):
                entry["methods"][method] = {"error": reason}
            else:
                entry["methods"][method] = _measure(
                    run, shape, batch, device, 1 if method == "sequential" else reps)
            entry["ratios"] = _ratios(entry["methods"])
            save()
            print(shape["scan"], method, entry["methods"][method], flush=True)
        print(shape, entry["ratios"], flush=True)
    return result


def load_table(path) -> list[dict]:
    """One row per (shape, method) of a committed scan benchmark: scan, batch, length, heads,
    headdim, d_state, chunk, method, ms (or the reason it was not timed in `note`)."""
    rows = []
    for entry in read_json(path)["shapes"]:
        shape = {k: v for k, v in entry["shape"].items() if k != "sequential_batch"}
        for method, m in entry["methods"].items():
            row = {**shape, "method": method}
            if "ms" in m:
                row.update(ms=m["ms"], batch=m["batch"])
            else:
                row["note"] = m.get("error", "")
            rows.append(row)
    return rows


def run_benchmark(device: str | torch.device = "auto") -> dict:
    """Default benchmark for `python -m mambaadv2_ref bench scan` (the caller saves the JSON)."""
    return run_scan_bench(device)


def main(argv: list[str] | None = None) -> int:
    """Command line: --device, --out, --reps, --no-compile, --threads, --scans."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="scan_bench.json")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--scans", default=None, help="comma list of s6, ssd, mamba3 (all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_scan_bench(args.device, out_path=args.out, reps=args.reps,
                   compile_chunked=not args.no_compile,
                   scans=tuple(args.scans.split(",")) if args.scans else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
