"""Decoder time and memory against resolution: state space decoders against an attention one.

The same fusion + decoder is run at image sizes from 128 to 512 px on random encoder-shaped
features, for MambaADv2, MambaAD (v1) and a same-width attention decoder (MambaADv2 with
scaled dot-product attention in place of both SSM paths, `attention_baseline.with_attention`).
The growth exponent is measured as the slope of log(time) against log(tokens): near 1 is
linear, near 2 quadratic. `load_table(path)` reads a committed scaling.json back, one row per
decoder and size.

    python -m mambaadv2_ref.studies.scaling --out runs/scaling --profile paper
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.config import BACKENDS
from mambaadv2_ref.model.factory import build_model
from mambaadv2_ref.runtime import resolve_device
from mambaadv2_ref.studies.attention_baseline import with_attention
from mambaadv2_ref.studies.results import environment, read_json
from mambaadv2_ref.timing import (
    peak_memory_bytes,
    reset_peak_memory,
    seconds_per_call,
)

# name -> (model, overrides)
DECODERS = {
    "mambaadv2": ("mambaadv2", {}),
    "mambaad": ("mambaad", {}),
    # attention ignores the order of tokens, so one direction is enough
    "attention": ("mambaadv2", {"num_directions": 1}),
}
STRIDES = (4, 8, 16)


def decoder_cost(name: str, profile: str, size: int, batch_size: int, device: torch.device,
                 iters: int = 3, backend: str = "auto") -> dict:
    """Forward and forward+backward time and peak memory of fusion + decoder at `size` px.

    Returns:
        dict size, tokens (of the largest decoder stage), forward_s, train_s, peak bytes; or
        `error` ("out of memory") when the size does not fit.
    """
    model, overrides = DECODERS[name]
    net = build_model(model, profile=profile, pretrained=False, image_size=size,
                      backend=backend, **overrides).to(device)
    if name == "attention":  # the same decoder with softmax attention as its token mixer
        with_attention(net)
    feats = [torch.randn(batch_size, c, size // s, size // s, device=device)
             for c, s in zip(net.encoder.channels, STRIDES, strict=True)]

    def forward():
        with torch.no_grad():
            net.decoder(net.fusion(feats))

    def train_step():
        loss = sum(d.float().square().mean() for d in net.decoder(net.fusion(feats)))
        loss.backward()

    row = {"decoder": name, "size": size, "tokens": (size // STRIDES[0]) ** 2,
           "batch_size": batch_size}
    try:
        row["forward_s"] = seconds_per_call(forward, device, warmup=1, iters=iters)
        reset_peak_memory(device)
        row["train_s"] = seconds_per_call(train_step, device, warmup=1, iters=iters)
        row["train_peak_memory_bytes"] = peak_memory_bytes(device)
    except torch.OutOfMemoryError:
        row["error"] = "out of memory"
    return row


def growth_exponent(rows: list[dict], key: str = "train_s", largest: int | None = None) -> float:
    """Least-squares slope of log(time) against log(tokens) over the measured sizes, or over the
    `largest` largest ones only: at small sizes a GPU step is mostly fixed launch overhead, so
    the slope over all sizes understates how the cost grows."""
    pts = sorted((math.log(r["tokens"]), math.log(r[key])) for r in rows if key in r)
    pts = pts[-largest:] if largest else pts
    if len(pts) < 2:
        return float("nan")
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def growth_exponents(rows: list[dict], largest: int | None = None) -> dict[str, float]:
    """`growth_exponent` of the training step of every decoder in `rows` (sorted by name)."""
    return {name: growth_exponent([r for r in rows if r["decoder"] == name], largest=largest)
            for name in sorted({r["decoder"] for r in rows})}


def load_table(path) -> list[dict]:
    """One row per (decoder, size) of a committed scaling.json: decoder, size, tokens, batch,
    forward_ms, train_ms, train_peak_GiB (or the reason in `note`)."""
    rows = []
    for r in read_json(path)["rows"]:
        row = {"decoder": r["decoder"], "size": r["size"], "tokens": r["tokens"],
               "batch": r["batch_size"]}
        if "train_s" in r:
            row.update(forward_ms=1e3 * r["forward_s"], train_ms=1e3 * r["train_s"],
                       train_peak_GiB=r["train_peak_memory_bytes"] / 2**30)
        else:
            row["note"] = r.get("error", "")
        rows.append(row)
    return rows


def plot_scaling(rows: list[dict], path: Path) -> None:
    """Log-log time and memory against tokens, one line per decoder, slope in the legend."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in DECODERS:
        mine = [r for r in rows if r["decoder"] == name and "train_s" in r]
        if not mine:
            continue
        t = [r["tokens"] for r in mine]
        axes[0].loglog(t, [r["train_s"] for r in mine], "o-",
                       label=f"{name} (slope {growth_exponent(mine):.2f}, "
                             f"largest 3: {growth_exponent(mine, largest=3):.2f})")
        axes[1].loglog(t, [r["train_peak_memory_bytes"] / 2**30 for r in mine], "o-",
                       label=name)
    axes[0].set(xlabel="tokens of the largest stage", ylabel="decoder train step (s)",
                title="time")
    axes[1].set(xlabel="tokens of the largest stage", ylabel="peak memory (GiB)", title="memory")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--sizes", default="128,192,256,320,384,448,512")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decoders", default=",".join(DECODERS))
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="scan backend of the state space decoders")
    parser.add_argument("--no-plot", action="store_true", help="JSON only (no matplotlib)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.decoders.split(",")
    unknown = sorted(set(names) - set(DECODERS))
    if unknown:
        parser.error(f"--decoders: unknown {unknown}; choose from {sorted(DECODERS)}")
    rows, failed = [], set()
    for size in (int(s) for s in args.sizes.split(",")):  # small sizes first for every decoder
        for name in names:
            if name in failed:
                continue  # it ran out of memory at a smaller size
            row = decoder_cost(name, args.profile, size, args.batch_size, device, args.iters,
                               args.backend)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
            if "error" in row:
                failed.add(name)
            slopes, top3 = growth_exponents(rows), growth_exponents(rows, largest=3)
            write_json(out / "scaling.json", {  # after every row: a cut-short run keeps them
                "environment": environment(), "profile": args.profile, "backend": args.backend,
                "rows": rows,
                "growth_exponent_train": slopes, "growth_exponent_train_largest3": top3})
    if not args.no_plot:
        plot_scaling(rows, out / "scaling.png")
    print("growth exponent (train step time vs tokens):", slopes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
