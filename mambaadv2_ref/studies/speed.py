"""Training and inference speed of the whole model, per model, scan backend and precision.

`bench_model` times `train.train_step` (the step `train` runs: forward, loss, backward,
clipping, AdamW) and anomaly-map inference of one model; random weights and images (speed does
not depend on them). `speed_grid` runs it for every combination and stores images/s and peak
memory; `plot_speed` draws one bar chart; `load_table` reads a committed speed.json back.

`compare_setting` times the training step of one model under two values of a compute-only
setting (`config.COMPUTE_SETTINGS`, e.g. `stack_scans`) in one run, on the same weights and
images, the repetitions interleaved; `comparison_grid` runs it for several (profile, batch)
cases and saves `<setting>_<cpu|gpu>.json`; `load_comparison_table` reads one back.

    python -m mambaadv2_ref.studies.speed --out runs/speed --profile paper
    python -m mambaadv2_ref.studies.speed --out book/results --compare stack_scans \
        --cases tiny:8,small:2,small:8 --repeats 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from mambaadv2_ref.blocks.compiled import compile_notice
from mambaadv2_ref.blocks.hss import HSS
from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.config import COMPUTE_SETTINGS, MODELS, PRECISIONS, get_profile, stage_sizes
from mambaadv2_ref.model.factory import build_model
from mambaadv2_ref.recipe import make_optimizer
from mambaadv2_ref.runtime import resolve_device, tf32_matmuls, use_bf16
from mambaadv2_ref.scans import available_backends
from mambaadv2_ref.scans.common import check_positive_int
from mambaadv2_ref.studies.results import environment, read_json
from mambaadv2_ref.timing import (
    peak_memory_bytes,
    reset_peak_memory,
    seconds_per_call,
    synchronize,
)
from mambaadv2_ref.train import train_step
from mambaadv2_ref.train_config import TrainConfig

GRID_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")  # the grid names them explicitly
TRAIN_DEFAULTS = TrainConfig(out="")  # the recipe's lr-independent settings (wd, clipping)
# the mamba-ssm kernel each model's scan needs
KERNEL_OF = {"mambaadv2": "mamba_ssm_ssd", "mambaad": "mamba_ssm_s6"}
COMPARISON_NOTE = ("train.train_step (forward, loss, backward, clipping, AdamW) of two "
                   "models with the same weights and images, one per value of the setting; one "
                   "warm-up step each, then rounds of one step per value, the order alternating "
                   "between rounds; ratio = median over rounds of step(values[1]) / "
                   "step(values[0])")


def bench_model(model: str = "mambaadv2", profile: str = "tiny", encoder: str | None = None,
                device="auto", batch_size: int | None = None, iters: int = 5,
                overrides: dict | None = None, precision: str = "auto") -> dict:
    """Training and inference throughput (images/s) and peak memory of `build_model`.

    Training step = `train.train_step` with the recipe's optimizer, weight decay and clipping,
    under bf16 autocast on CUDA when `precision="bf16"` (or "auto" on a GPU with native bf16, as
    `train`), in float32 with `precision="fp32"`, and in float32 with TF32 matrix products with
    `precision="tf32"` (`runtime.tf32_matmuls`); inference = `anomaly_map` (float32, TF32
    products under "tf32").

    Returns:
        dict with model, profile, device, image_size, batch_size, parameters,
        train_images_per_s, infer_images_per_s, first_step_s and first_infer_s (the first
        training step and inference, kernel compilation included), peak memory (CUDA bytes,
        else process max RSS).
    """
    check_positive_int("iters", iters)
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    device = resolve_device(device)
    bf16 = use_bf16(device, precision)
    prof = get_profile(profile)
    batch_size = batch_size or prof.batch_size
    net = build_model(model=model, profile=profile, encoder=encoder, pretrained=False,
                      **(overrides or {})).to(device)
    size = net.config.image_size
    images = torch.randn(batch_size, 3, size, size, device=device)
    optimizer = make_optimizer(net, prof.lr, TRAIN_DEFAULTS.weight_decay)

    def timed(fn, warmup: int = 2) -> float:
        return batch_size / seconds_per_call(fn, device, warmup=warmup, iters=iters)

    def step():
        train_step(net, optimizer, images, TRAIN_DEFAULTS.clip_grad, bf16)

    with tf32_matmuls(precision):  # float32 products on TF32 tensor cores for "tf32"
        reset_peak_memory(device)
        net.train()
        notice = compile_notice(net.config)
        if notice:
            print(notice, flush=True)
        t0 = time.perf_counter()  # the first step holds kernel compilation (Triton, torch.compile)
        step()
        synchronize(device)
        first_step_s = time.perf_counter() - t0
        train_ips = timed(step, warmup=1)  # the first step was the first warm-up
        train_peak = peak_memory_bytes(device)
        reset_peak_memory(device)
        t0 = time.perf_counter()  # the first inference compiles its own (no-grad) graphs
        net.anomaly_map(images)
        synchronize(device)
        first_infer_s = time.perf_counter() - t0
        infer_ips = timed(lambda: net.anomaly_map(images), warmup=1)
    return {"model": model, "profile": profile, "precision": precision, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu", "image_size": size, "batch_size": batch_size, "iters": iters,
            "parameters": sum(p.numel() for p in net.parameters()),
            "trainable_parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
            "train_images_per_s": train_ips, "infer_images_per_s": infer_ips,
            "first_step_s": first_step_s, "first_infer_s": first_infer_s,
            "train_peak_memory_bytes": train_peak,
            "infer_peak_memory_bytes": peak_memory_bytes(device),
            "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda"
            else "process max RSS (whole process, cumulative)"}


def speed_grid(profile: str, device: str = "auto", iters: int = 10,
               batch_size: int | None = None, encoder: str | None = None,
               out_json: Path | None = None, models: tuple[str, ...] = MODELS) -> list[dict]:
    """Bench every (model, backend, precision); a backend that cannot run is recorded, not
    dropped silently. With `out_json`, the rows so far are saved after each combination.

    Returns:
        one dict per combination: bench_model's fields plus backend and precision, or
        `skipped` with the reason, or `error` (out of memory, a kernel that failed).
    """
    backends = available_backends()
    rows = []
    for model, backend, precision in itertools.product(models, ("torch", "mamba_ssm"),
                                                       GRID_PRECISIONS):
        row = {"model": model, "backend": backend, "precision": precision}
        usable, reason = backends[KERNEL_OF[model]] if backend == "mamba_ssm" else (True, "")
        if not usable:
            rows.append({**row, "skipped": reason})
            continue
        try:
            result = bench_model(model, profile=profile, encoder=encoder, device=device,
                                 batch_size=batch_size, iters=iters, precision=precision,
                                 overrides={"backend": backend})
        except RuntimeError as err:  # out of memory (a RuntimeError), a kernel: the grid goes on
            result = {"error": f"{type(err).__name__}: {err}"[:500]}
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        rows.append({**row, **result})
        if out_json is not None:
            write_json(out_json, {"environment": environment(), "rows": rows})
        if "error" in result:
            print(f"{model:10s} {backend:9s} {precision}: {result['error'][:200]}")
            continue
        print(f"{model:10s} {backend:9s} {precision}: train {result['train_images_per_s']:.1f}"
              f" img/s, inference {result['infer_images_per_s']:.1f} img/s, peak "
              f"{result['train_peak_memory_bytes'] / 2**30:.2f} GiB")
    return rows


def hss_scan_calls(net) -> int:
    """Causal-scan calls of one forward pass through the decoder's HSS blocks at the model's
    image size (`HSS.cost`; 0 for v1)."""
    sizes = stage_sizes(net.config.image_size, len(net.decoder.stages))
    return sum(m.cost(*size)["scan_calls"] for stage, size in zip(net.decoder.stages, sizes,
                                                                  strict=True)
               for m in stage.modules() if isinstance(m, HSS))


def compare_setting(setting: str, values: tuple = (True, False), model: str = "mambaadv2",
                    profile: str = "tiny", batch_size: int | None = None, device="auto",
                    repeats: int = 10, overrides: dict | None = None,
                    precision: str = "fp32") -> dict:
    """Training-step time of one model under each value of a compute-only setting, in one run.

    Both models are built with the same seed (the same weights: the setting changes how they
    compute, not what) and step on the same random images with the recipe's optimizer
    (`train.train_step`, under bf16 autocast by `precision` as in `bench_model`). After one
    warm-up step each, every round times one step per value, the order alternating between
    rounds (A B, B A, ...) so that the machine's drift (load, clocks) falls on every value
    alike.

    Args:
        setting: a name in `config.COMPUTE_SETTINGS`. values: its two values, the first the
            reference of the ratio. model, profile, batch_size (None: the profile's), device.
        repeats: rounds. overrides: further ModelConfig fields for both models.
        precision: "fp32", "bf16", "tf32" or "auto" (`runtime.use_bf16`, `runtime.tf32_matmuls`).
    Returns:
        dict with model, profile, setting, values, precision, image_size, batch_size, repeats,
        step_s
        {str(value): seconds of each round}, median_step_s {str(value)}, hss_scan_calls
        {str(value): `hss_scan_calls`}, and ratio: the median over rounds of
        step(values[1]) / step(values[0]) (> 1: the first value is faster).
    """
    if setting not in COMPUTE_SETTINGS:
        raise ValueError(f"setting must be one of {list(COMPUTE_SETTINGS)} (the same weights "
                         f"only compute the same function under those), got {setting!r}")
    if len(values) != 2:
        raise ValueError(f"values must be two values of {setting}, got {values!r}")
    check_positive_int("repeats", repeats)
    device = resolve_device(device)
    bf16 = use_bf16(device, precision)
    prof = get_profile(profile)
    batch_size = check_positive_int("batch_size", batch_size or prof.batch_size)
    steps = {}
    for value in values:
        torch.manual_seed(0)
        net = build_model(model=model, profile=profile, pretrained=False,
                          **{**(overrides or {}), setting: value}).to(device)
        net.train()
        optimizer = make_optimizer(net, prof.lr, TRAIN_DEFAULTS.weight_decay)
        steps[value] = (net, optimizer)
    size = steps[values[0]][0].config.image_size
    images = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    images = images.to(device)

    def step(value) -> None:
        net, optimizer = steps[value]
        with tf32_matmuls(precision):
            train_step(net, optimizer, images, TRAIN_DEFAULTS.clip_grad, bf16)

    times = {value: [] for value in values}
    for value in values:
        step(value)  # warm-up: allocation (and Triton compilation on a GPU)
    for r in range(repeats):
        for value in (values if r % 2 == 0 else values[::-1]):
            times[value].append(seconds_per_call(lambda v=value: step(v), device, warmup=0,
                                                 iters=1))
    first, second = values
    return {"model": model, "profile": profile, "setting": setting, "values": list(values),
            "precision": "bf16" if bf16 else ("tf32" if precision == "tf32" else "fp32"),
            "device": str(device),
            "image_size": size, "batch_size": batch_size,
            "repeats": repeats, "step_s": {str(v): t for v, t in times.items()},
            "median_step_s": {str(v): statistics.median(t) for v, t in times.items()},
            "hss_scan_calls": {str(v): hss_scan_calls(net) for v, (net, _) in steps.items()},
            "ratio": statistics.median(b / a for a, b in zip(times[first], times[second],
                                                              strict=True))}


def comparison_grid(setting: str, cases: list[tuple[str, int]], values: tuple = (True, False),
                    device="auto", repeats: int = 10, out_json: Path | None = None,
                    overrides: dict | None = None, precision: str = "fp32") -> dict:
    """`compare_setting` for every (profile, batch) case (with `overrides` and `precision`);
    with `out_json` the JSON (environment, setting, rows) is saved after each case, so a run cut
    short keeps what it measured."""
    device = resolve_device(device)
    result = {"environment": environment(device), "setting": setting, "values": list(values),
              "note": COMPARISON_NOTE,
              "rows": []}
    for profile, batch_size in cases:
        row = compare_setting(setting, values, profile=profile, batch_size=batch_size,
                              device=device, repeats=repeats, overrides=overrides,
                              precision=precision)
        result["rows"].append(row)
        if out_json is not None:
            write_json(out_json, result)
        ms = {v: f"{1e3 * t:.0f} ms" for v, t in row["median_step_s"].items()}
        print(f"{profile} batch {batch_size}: {setting} {ms}, step({values[1]}) / "
              f"step({values[0]}) = {row['ratio']:.3f} (median of {repeats} paired rounds)",
              flush=True)
    return result


def parse_values(text: str) -> tuple:
    """`--values A,B`: two JSON values (true, 64, "scan"); an error names the argument."""
    parts = text.split(",")
    try:
        values = tuple(json.loads(part) for part in parts)
    except json.JSONDecodeError as err:
        raise ValueError(f"--values: each of {parts} must be a JSON value (true, 64, "
                         f'"scan"): {err}') from err
    if len(values) != 2:
        raise ValueError(f"--values takes two values A,B, got {text!r}")
    return values


def load_comparison_table(path) -> list[dict]:
    """One row per case of a committed `comparison_grid` JSON: profile, batch, image size, the
    median step in ms and the HSS scan calls of a forward pass per value, and the paired
    ratio."""
    data = read_json(path)
    rows = []
    for r in data["rows"]:
        row = {"profile": r["profile"], "batch": r["batch_size"], "image_size": r["image_size"]}
        row.update({f"{data['setting']}={v} ms": 1e3 * t for v, t in r["median_step_s"].items()})
        row.update({f"{data['setting']}={v} scan calls": n
                    for v, n in r.get("hss_scan_calls", {}).items()})
        row["ratio"] = r["ratio"]
        rows.append(row)
    return rows


def load_table(path) -> list[dict]:
    """The rows of a committed speed.json, one per measured (model, backend, precision): model,
    backend, precision, train / infer images/s, train peak GiB, batch; skipped or failed
    combinations keep their reason in `note`."""
    rows = []
    for r in read_json(path)["rows"]:
        row = {k: r[k] for k in ("label", "model", "backend", "precision") if k in r}
        if "train_images_per_s" in r:
            row.update(batch=r["batch_size"], train_img_s=r["train_images_per_s"],
                       infer_img_s=r["infer_images_per_s"],
                       train_peak_GiB=r["train_peak_memory_bytes"] / 2**30)
        else:
            row["note"] = r.get("skipped") or r.get("error", "")
        rows.append(row)
    return rows


def plot_speed(rows: list[dict], path: Path) -> None:
    """Horizontal grouped bars of training and inference images/s per configuration, one
    configuration per line (readable for a whole grid), in the rows' order from the top."""
    import matplotlib.pyplot as plt

    done = [r for r in rows if "skipped" not in r and "error" not in r]
    labels = [r["label"] if "label" in r else f"{r['model']} {r['backend']} {r['precision']}"
              for r in done]
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.42 * len(done) + 1.2)))
    y = range(len(done))
    ax.barh([i - 0.2 for i in y], [r["train_images_per_s"] for r in done], 0.4,
            label="training")
    ax.barh([i + 0.2 for i in y], [r["infer_images_per_s"] for r in done], 0.4,
            label="inference (with anomaly maps)")
    for i, r in enumerate(done):
        for dy, key in ((-0.2, "train_images_per_s"), (0.2, "infer_images_per_s")):
            ax.text(r[key], i + dy, f" {r[key]:.0f}", va="center", fontsize=7)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()  # the first row on top
    ax.set_xlabel("images / s")
    device = done[0]["device_name"] if done else "?"
    ax.set_title(f"speed at profile {done[0]['profile'] if done else '?'} on {device}")
    top = max([r["infer_images_per_s"] for r in done] + [r["train_images_per_s"] for r in done],
              default=1.0)
    ax.set_xlim(0, 1.15 * top)  # room for the value labels
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=8,
              frameon=False)  # below the axes: never over a bar or its value
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for speed.json and speed.png")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--no-plot", action="store_true", help="JSON only (no matplotlib)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of models")
    parser.add_argument("--compare", default=None, metavar="SETTING",
                        help="instead of the grid: compare_setting of this compute-only "
                             "setting, saved as <out>/SETTING_<cpu|gpu>.json")
    parser.add_argument("--values", default="true,false", metavar="A,B",
                        help="with --compare: its two values as JSON (the first is the "
                             "reference of the ratio), e.g. 64,32 for chunk_size")
    parser.add_argument("--cases", default="tiny:8,small:2",
                        help="with --compare: comma list of profile:batch")
    parser.add_argument("--repeats", type=int, default=10, help="with --compare: rounds")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="with --compare: training precision")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare:
        try:  # before any work: a bad --values is named at once
            values = parse_values(args.values)
        except ValueError as err:
            parser.error(str(err))
        cases = [(name, int(batch)) for name, batch in
                 (case.split(":") for case in args.cases.split(","))]
        device = resolve_device(args.device)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        kind = "gpu" if device.type == "cuda" else "cpu"
        out_json = Path(args.out) / f"{args.compare}_{kind}.json"
        comparison_grid(args.compare, cases, values=values,
                        device=device, repeats=args.repeats, out_json=out_json,
                        precision=args.precision)
        print(f"saved {out_json}")
        return 0
    models = tuple(args.models.split(","))
    if set(models) - set(MODELS):
        parser.error(f"--models: unknown {sorted(set(models) - set(MODELS))}; choose from "
                     f"{list(MODELS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = speed_grid(args.profile, args.device, args.iters, args.batch_size, args.encoder,
                      out / "speed.json", models)
    write_json(out / "speed.json", {"environment": environment(), "rows": rows})
    if not args.no_plot:
        plot_speed(rows, out / "speed.png")
    print(f"saved {out / 'speed.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
