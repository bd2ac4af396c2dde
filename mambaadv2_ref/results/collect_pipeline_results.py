"""Collect the runs of pipeline_runs.sh into pipeline_results.json and pipeline_results.md.

Usage:
    python mambaadv2_ref/results/collect_pipeline_results.py RUNS_DIR [--out-dir DIR]
    python mambaadv2_ref/results/collect_pipeline_results.py --digest DATA_ROOT

RUNS_DIR/<dataset>/<model>/{checkpoint.json, metrics.json} and RUNS_DIR/<dataset>/bench_*.json,
hardware.txt are read; every number in the outputs comes from those files. `--digest` prints a
SHA-256 over the decoded pixels of every image of a dataset (to check that two machines built the
same embedded dataset, whatever their PNG encoders).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

KEYS = ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO", "mAD")
MODELS = ("mambaadv2", "mambaad", "patchcore")


def pixel_digest(root: Path) -> str:
    """SHA-256 of (relative path, decoded pixels) of every .png/.jpg under `root`, sorted."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in (".png", ".jpg")):
        h.update(str(path.relative_to(root)).encode())
        with Image.open(path) as img:
            h.update(np.asarray(img).tobytes())
    return h.hexdigest()


def collect_dataset(folder: Path) -> dict:
    """One dataset's runs: metrics, training settings and times, benchmark, hardware."""
    out = {"models": {}, "bench": {}, "hardware": (folder / "hardware.txt").read_text().split(
        "\n")[:3] if (folder / "hardware.txt").exists() else []}
    for model in MODELS:
        run = folder / model
        if not (run / "metrics.json").exists():
            continue
        metrics = json.loads((run / "metrics.json").read_text())
        ckpt = json.loads((run / "checkpoint.json").read_text())
        train = ckpt["train"]
        out["models"][model] = {
            "mean": metrics["mean"], "classes": metrics["classes"],
            "steps": ckpt["step"], "train_seconds": ckpt["train_seconds"],
            "image_size": train["image_size"], "batch_size": train["batch_size"],
            "num_train_images": train["num_train_images"],
            "final_loss": ckpt["history"][-1]["loss"] if ckpt["history"] else None,
            "eval_images_per_s": metrics["run"]["images_per_s"],
            "device": ckpt["device"], "profile": ckpt["profile"]["name"],
            "encoder": ckpt["model_config"]["encoder"],
            **({"memory_bank_size": train["memory_bank_size"]} if model == "patchcore" else {}),
        }
    for path in sorted(folder.glob("bench_*.json")):
        out["bench"][path.stem[len("bench_"):]] = json.loads(path.read_text())
    return out


def wins(models: dict) -> dict:
    """Per metric, which model is best (ties listed together)."""
    best = {}
    for key in KEYS:
        values = {m: r["mean"][key] for m, r in models.items()}
        top = max(values.values())
        best[key] = sorted(m for m, v in values.items() if abs(v - top) < 1e-9)
    return best


def markdown(results: dict) -> str:
    """The results as markdown tables (percent, one decimal)."""
    lines = [f"# Pipeline results ({results['date']})", "", results["setup"], ""]
    for name, ds in results["datasets"].items():
        lines += [f"## {name}", "", f"Hardware: {', '.join(ds['hardware'])}.", "",
                  "| model | " + " | ".join(KEYS) + " | steps | train s | eval img/s |",
                  "|---" * (len(KEYS) + 4) + "|"]
        for model, r in ds["models"].items():
            cells = " | ".join(f"{100 * r['mean'][k]:.1f}" for k in KEYS)
            lines.append(f"| {model} | {cells} | {r['steps']} | {r['train_seconds']:.0f} | "
                         f"{r['eval_images_per_s']:.0f} |")
        lines += ["", "Best per metric: " + "; ".join(
            f"{k}: {', '.join(v)}" for k, v in ds["wins"].items()), ""]
        classes = next(iter(ds["models"].values()))["classes"]
        if len(classes) > 1:
            lines += ["Per-class mAD:", "", "| class | " + " | ".join(ds["models"]) + " |",
                      "|---" * (len(ds["models"]) + 1) + "|"]
            for cls in classes:
                lines.append(f"| {cls} | " + " | ".join(
                    f"{100 * r['classes'][cls]['mAD']:.1f}" for r in ds["models"].values())
                    + " |")
            lines.append("")
        if ds["bench"]:
            lines += ["Throughput (`bench model`, random weights):", "",
                      "| model | params M | train img/s | infer img/s | train peak GiB |",
                      "|---|---|---|---|---|"]
            for model, b in ds["bench"].items():
                lines.append(f"| {model} | {b['parameters'] / 1e6:.2f} | "
                             f"{b['train_images_per_s']:.1f} | {b['infer_images_per_s']:.1f} | "
                             f"{b['train_peak_memory_bytes'] / 2**30:.2f} |")
            lines.append("")
    lines += ["## Reading", "", results["reading"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", help="RUNS_DIR of pipeline_runs.sh")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent))
    parser.add_argument("--digest", help="print the pixel digest of a dataset root and exit")
    parser.add_argument("--setup", default="", help="one paragraph on how the runs were made")
    parser.add_argument("--reading", default="", help="one paragraph: where v2 wins and not")
    args = parser.parse_args()
    if args.digest:
        print(pixel_digest(Path(args.digest)))
        return
    datasets = {}
    for folder in sorted(p for p in Path(args.runs).iterdir() if p.is_dir()):
        ds = collect_dataset(folder)
        if ds["models"]:
            ds["wins"] = wins(ds["models"])
            datasets[folder.name] = ds
    results = {"date": datetime.date.today().isoformat(), "setup": args.setup,
               "reading": args.reading, "metric_keys": list(KEYS), "datasets": datasets}
    out = Path(args.out_dir)
    (out / "pipeline_results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "pipeline_results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
