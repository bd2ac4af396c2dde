"""Collect the runs of `studies.pipeline_runs` into pipeline_results.json and .md.

Usage:
    python -m mambaadv2_ref.studies.pipeline_results [LABEL=]RUNS_DIR ...
        [--cpu-bench DIR] [--out-dir DIR] [--setup TEXT] [--reading TEXT]
    python -m mambaadv2_ref.studies.pipeline_results --digest DATA_ROOT

RUNS_DIR/<dataset>/<model>/{checkpoint.json, metrics.json} and RUNS_DIR/<dataset>/bench_*.json,
hardware.txt are read (and DIR/bench_*.json, hardware.txt of a CPU `bench model` run); every
number in the outputs comes from those files, and the comparison sentences are generated.
`--digest` prints a SHA-256 over the decoded pixels of every image of a dataset (to check that
two machines built the same embedded dataset, whatever their PNG encoders). `load_table(path)`
reads a committed pipeline_results.json back as one row per dataset and model.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mambaadv2_ref.config import DETECTORS
from mambaadv2_ref.evaluate import METRIC_KEYS as KEYS
from mambaadv2_ref.studies.results import RESULTS_DIR, read_json


def pixel_digest(root: Path) -> str:
    """SHA-256 of (relative path, decoded pixels) of every .png/.jpg under `root`, sorted."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in (".png", ".jpg")):
        h.update(str(path.relative_to(root)).encode())
        with Image.open(path) as img:
            h.update(np.asarray(img).tobytes())
    return h.hexdigest()


def read_hardware(folder: Path) -> str:
    """hardware.txt (lscpu model name, nproc, GPU name lines) as one phrase."""
    path = folder / "hardware.txt"
    if not path.exists():
        return "unknown"
    lines = [line.split(":", 1)[-1].strip() for line in path.read_text().splitlines()]
    cpu, cores, *gpu = [line for line in lines if line]
    return ", ".join([*gpu, f"{cpu} ({cores} cores)"])


def read_bench(folder: Path) -> dict:
    """bench_<model>.json files of a folder, by model."""
    return {p.stem[len("bench_"):]: json.loads(p.read_text())
            for p in sorted(folder.glob("bench_*.json"))}


def collect_dataset(folder: Path) -> dict:
    """One dataset's runs: metrics, training settings and times, benchmark, hardware."""
    out = {"models": {}, "bench": read_bench(folder), "hardware": read_hardware(folder)}
    for model in DETECTORS:
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
    return out


def wins(models: dict) -> dict:
    """Per metric, which model is best (ties listed together)."""
    best = {}
    for key in KEYS:
        values = {m: r["mean"][key] for m, r in models.items()}
        top = max(values.values())
        best[key] = sorted(m for m, v in values.items() if abs(v - top) < 1e-9)
    return best


def compare(models: dict, a: str, b: str) -> str:
    """'a vs b: higher on ..., lower on ..., equal on ...' over the 8 keys."""
    if a not in models or b not in models:
        return ""
    diff = {k: models[a]["mean"][k] - models[b]["mean"][k] for k in KEYS}
    parts = [f"{word} on {', '.join(k for k in KEYS if test(diff[k]))}"
             for word, test in (("higher", lambda d: d > 5e-4), ("lower", lambda d: d < -5e-4),
                                ("equal (to 0.05 points)", lambda d: abs(d) <= 5e-4))
             if any(test(diff[k]) for k in KEYS)]
    return f"{a} vs {b}: " + "; ".join(parts) + "."


def class_wins(models: dict, a: str, b: str) -> str:
    """'a has the higher mAD than b on n of m classes'."""
    if a not in models or b not in models or len(models[a]["classes"]) < 2:
        return ""
    classes = models[a]["classes"]
    n = sum(models[a]["classes"][c]["mAD"] > models[b]["classes"][c]["mAD"] for c in classes)
    return f"{a} has a higher mAD than {b} on {n} of {len(classes)} classes."


def bench_table(bench: dict) -> list[str]:
    """Markdown rows of `bench model` results."""
    lines = ["| model | device | image px | batch | params M | train img/s | infer img/s | "
             "train peak GiB |", "|---" * 8 + "|"]
    for model, b in bench.items():
        lines.append(f"| {model} | {b['device_name']} | {b['image_size']} | {b['batch_size']} | "
                     f"{b['parameters'] / 1e6:.2f} | {b['train_images_per_s']:.2f} | "
                     f"{b['infer_images_per_s']:.2f} | "
                     f"{b['train_peak_memory_bytes'] / 2**30:.2f} |")
    return lines


def markdown(results: dict) -> str:
    """The results as markdown tables (percent, one decimal)."""
    lines = [f"# Pipeline results ({results['date']})", "", results["setup"], ""]
    for name, ds in results["datasets"].items():
        lines += [f"## {name}", "", f"Hardware: {ds['hardware']}.", "",
                  "| model | " + " | ".join(KEYS) + " | steps | train s | eval img/s |",
                  "|---" * (len(KEYS) + 4) + "|"]
        for model, r in ds["models"].items():
            cells = " | ".join(f"{100 * r['mean'][k]:.1f}" for k in KEYS)
            lines.append(f"| {model} | {cells} | {r['steps']} | {r['train_seconds']:.0f} | "
                         f"{r['eval_images_per_s']:.0f} |")
        lines += ["", "Best per metric: " + "; ".join(
            f"{k}: {', '.join(v)}" for k, v in ds["wins"].items()) + ".", ""]
        lines += [f"- {s}" for s in ds["comparisons"] if s] + [""]
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
            lines += ["Throughput of this profile (`bench model`, random weights, random images):",
                      "", *bench_table(ds["bench"]), ""]
    if results.get("cpu_bench"):
        cpu = results["cpu_bench"]
        lines += ["## CPU throughput", "", f"Hardware: {cpu['hardware']}, one intra-op thread "
                  "(the machine is shared).", "", *bench_table(cpu["bench"]), ""]
    lines += ["## Reading", "", results["reading"], ""]
    return "\n".join(lines)


def load_table(path) -> list[dict]:
    """One row per (dataset, model) of a committed pipeline_results.json: dataset, model, the
    eight metrics (fractions), steps, train_s, eval_img_s."""
    rows = []
    for name, ds in read_json(path)["datasets"].items():
        for model, r in ds["models"].items():
            rows.append({"dataset": name, "model": model, **r["mean"], "steps": r["steps"],
                         "train_s": r["train_seconds"], "eval_img_s": r["eval_images_per_s"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="[LABEL=]RUNS_DIR of studies.pipeline_runs")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    parser.add_argument("--digest", help="print the pixel digest of a dataset root and exit")
    parser.add_argument("--cpu-bench", help="folder of a CPU `bench model` run")
    parser.add_argument("--setup", default="", help="one paragraph on how the runs were made")
    parser.add_argument("--reading", default="", help="one paragraph: where v2 wins and not")
    args = parser.parse_args(argv)
    if args.digest:
        print(pixel_digest(Path(args.digest)))
        return
    datasets = {}
    for spec in args.runs:
        label, _, runs = spec.rpartition("=")
        for folder in sorted(p for p in Path(runs).iterdir() if p.is_dir()):
            ds = collect_dataset(folder)
            if ds["models"]:
                ds["wins"] = wins(ds["models"])
                ds["comparisons"] = [compare(ds["models"], "mambaadv2", "mambaad"),
                                     compare(ds["models"], "mambaadv2", "patchcore"),
                                     class_wins(ds["models"], "mambaadv2", "mambaad"),
                                     class_wins(ds["models"], "mambaadv2", "patchcore")]
                datasets[f"{folder.name} ({label})" if label else folder.name] = ds
    results = {"date": datetime.date.today().isoformat(), "setup": args.setup,
               "reading": args.reading, "metric_keys": list(KEYS), "datasets": datasets}
    if args.cpu_bench:
        folder = Path(args.cpu_bench)
        results["cpu_bench"] = {"hardware": read_hardware(folder), "bench": read_bench(folder)}
    out = Path(args.out_dir)
    (out / "pipeline_results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "pipeline_results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
