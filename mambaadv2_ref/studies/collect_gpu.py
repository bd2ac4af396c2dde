"""Turn the archives of the GPU sittings into the results files the book reads.

`gpu_session.sh` and `gpu_training.sh` pack everything they measured into one archive each (the
device machine returns few files). This module unpacks one, merges what parallel processes wrote
separately, and writes JSON, markdown and figures under `book/results/` (`RESULTS_DIR`):

    session  -> scans_gpu.json (parity of the three parity processes), scan_bench_gpu.json,
                speed_paper_gpu.{json,png}, scaling_paper_gpu.{json,png}; benchmark shapes and
                speed rows that a sitting did not measure are kept from the existing files
    training -> ablations_{bsdata,embedded}_small_gpu.{json,md}, gpu_training.{json,md}
                (paper-profile runs on one GPU and with DDP on two, throughput factors); rows
                and runs of earlier sittings that a sitting did not redo are kept

    python -m mambaadv2_ref.studies.collect_gpu session ARCHIVE.tgz
    python -m mambaadv2_ref.studies.collect_gpu training ARCHIVE.tgz
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
import tempfile
from pathlib import Path

from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.evaluate import METRIC_KEYS
from mambaadv2_ref.studies.ablations import markdown as ablation_markdown
from mambaadv2_ref.studies.results import RESULTS_DIR as RESULTS
from mambaadv2_ref.studies.results import read_json
from mambaadv2_ref.train import steady_images_per_s

PYTEST_SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|skipped|error).*?)\s*=*$")


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _pytest_summary(log: Path) -> str:
    """The last pytest summary line of a log ("3 passed, 1 failed in 80s"), or why there is none."""
    if not log.exists():
        return "no log"
    lines = [m.group(1) for m in map(PYTEST_SUMMARY.match, log.read_text().splitlines()) if m]
    return lines[-1] if lines else "no summary line: the process was cut by its time box"


def _merged(old: dict | None, new: dict, field: str, key) -> list:
    """`new[field]` (each item stamped with its run's date) over the items of an earlier file
    that it does not measure again: a sitting that re-times some shapes keeps the others."""
    date = new.get("environment", {}).get("date")
    fresh = [{**item, "measured": item.get("measured", date)} for item in new[field]]
    seen = {key(item) for item in fresh}
    kept = [item for item in (old or {}).get(field, []) if key(item) not in seen]
    stamp = (old or {}).get("environment", {}).get("date")
    return [{**item, "measured": item.get("measured", stamp)} for item in kept] + fresh


def collect_session(folder: Path, results: Path = RESULTS) -> dict:
    """Merge the parity JSONs, copy the benchmarks and draw the speed and scaling figures.

    Returns:
        dict of the files written (name -> path).
    """
    from mambaadv2_ref.studies.scaling import growth_exponents, plot_scaling
    from mambaadv2_ref.studies.speed import plot_speed

    results.mkdir(parents=True, exist_ok=True)
    written = {}
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("parity"))
    parity = _load(results / "scans_gpu.json") if subs else None  # earlier sittings' cases stay
    if not parity or "processes" not in parity:
        parity = {"environment": None, "criterion": None, "processes": {}, "results": {}}
    for sub in subs:
        doc = _load(sub / "scans_gpu.json") or {}
        parity["environment"] = doc.get("environment") or parity["environment"]
        parity["criterion"] = doc.get("criterion") or parity["criterion"]
        parity.setdefault("environments", {})[sub.name] = doc.get("environment")
        for key, value in doc.get("results", {}).items():
            if key == "outcome":
                parity["results"].setdefault("outcome", {}).update(value)
            else:
                parity["results"][key] = value
        parity["processes"][sub.name] = _pytest_summary(folder / f"{sub.name}.log")
    if parity["results"]:
        write_json(results / "scans_gpu.json", parity)
        written["scans_gpu"] = results / "scans_gpu.json"
    bench = _load(folder / "scan_bench_gpu.json")
    if bench:
        bench["shapes"] = _merged(_load(results / "scan_bench_gpu.json"), bench, "shapes",
                                  lambda e: json.dumps(e["shape"], sort_keys=True))
        write_json(results / "scan_bench_gpu.json", bench)
        written["scan_bench_gpu"] = results / "scan_bench_gpu.json"
    speed = _load(folder / "speed.json")
    if speed:
        speed["rows"] = _merged(_load(results / "speed_paper_gpu.json"), speed, "rows",
                                lambda r: (r["model"], r["backend"], r["precision"]))
        write_json(results / "speed_paper_gpu.json", speed)
        plot_speed(speed["rows"], results / "speed_paper_gpu.png")
        written["speed"] = results / "speed_paper_gpu.json"
    scaling = _load(folder / "scaling.json")
    if scaling:
        scaling["growth_exponent_train"] = growth_exponents(scaling["rows"])
        scaling["growth_exponent_train_largest3"] = growth_exponents(scaling["rows"], largest=3)
        write_json(results / "scaling_paper_gpu.json", scaling)
        plot_scaling(scaling["rows"], results / "scaling_paper_gpu.png")
        written["scaling"] = results / "scaling_paper_gpu.json"
    return written


def _run_summary(run: Path) -> dict | None:
    """Settings, speed and metrics of one training run folder (None if it never checkpointed)."""
    manifest = _load(run / "checkpoint.json")
    if manifest is None:
        return None
    history = manifest["history"]
    metrics = _load(run / "metrics.json")
    return {
        "run": run.name, "device": manifest.get("device"),
        "world_size": manifest["train"]["world_size"],
        "batch_size_per_gpu": manifest["train"]["batch_size"],
        "global_batch": manifest["train"]["batch_size"] * manifest["train"]["world_size"],
        "image_size": manifest["train"]["image_size"], "steps": manifest["step"],
        "planned_steps": manifest["train"]["num_steps"],
        "train_seconds": manifest["train_seconds"],
        "train_images_per_s": steady_images_per_s(history),
        "final_loss": history[-1]["loss"],
        **({k: metrics["mean"][k] for k in METRIC_KEYS} if metrics else {}),
        **({"eval_images_per_s": metrics["run"]["images_per_s"]} if metrics else {}),
    }


def _training_markdown(doc: dict) -> str:
    head = ["run", "GPUs", "batch", "steps", *METRIC_KEYS, "train img/s", "measured"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["runs"]:
        cells = [r["run"], str(r["world_size"]), f"{r['world_size']} x {r['batch_size_per_gpu']}",
                 f"{r['steps']}/{r['planned_steps']}",
                 *(f"{100 * r[k]:.1f}" if k in r else "-" for k in METRIC_KEYS),
                 f"{r['train_images_per_s']:.1f}", str(r.get("measured"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key, value in doc["data_parallel"].items():
        lines.append(f"- {key}: {value if isinstance(value, str) else f'{value:.3f}'}")
    return "\n".join(lines) + "\n"


def collect_training(folder: Path, results: Path = RESULTS) -> dict:
    """Merge the per-process ablation tables; summarise the paper-profile and DDP runs."""
    results.mkdir(parents=True, exist_ok=True)
    written = {}
    for data in ("bsdata", "embedded"):
        parts = sorted((folder / f"ablations_{data}").glob("*/ablations.json"))
        docs = [_load(p) for p in parts]
        rows = [row for d in docs for row in d["rows"]]
        if not rows:
            continue
        merged = {key: docs[0][key] for key in ("environment", "profile", "steps", "data")}
        stem = f"ablations_{data}_{merged['profile']}_gpu"
        merged["rows"] = rows = _merged(_load(results / f"{stem}.json"), {**merged, "rows": rows},
                                        "rows", lambda r: r["ablation"])
        merged["not_finished"] = sorted({p.name for p in (folder / f"ablations_{data}").iterdir()}
                                        - {r["ablation"] for r in rows})
        write_json(results / f"{stem}.json", merged)
        (results / f"{stem}.md").write_text(ablation_markdown(rows))
        written[stem] = results / f"{stem}.json"
    runs = {p.name: s for p in sorted(folder.iterdir()) if p.is_dir()
            and (s := _run_summary(p)) is not None and not p.name.startswith("ablations")}
    if runs:
        environment = _load(folder / "environment.json") or {}
        runs = {r["run"]: r for r in _merged(_load(results / "gpu_training.json"), {
            "environment": environment, "runs": list(runs.values())}, "runs", lambda r: r["run"])}
        one, two = runs.get("throughput_1gpu_b16"), runs.get("paper_bsdata_ddp2")
        weak = runs.get("throughput_ddp2_b16")
        parallel = {}
        def batch(r):
            return f"{r['world_size']} x {r['batch_size_per_gpu']}"

        if one and two:
            parallel[f"strong scaling (same global batch: {batch(two)} vs {batch(one)}), "
                     "images/s factor"] = two["train_images_per_s"] / one["train_images_per_s"]
        if one and weak:
            parallel[f"weak scaling ({batch(weak)} vs {batch(one)}), images/s factor"] = \
                weak["train_images_per_s"] / one["train_images_per_s"]
        single = runs.get("paper_bsdata_1gpu")
        if single and two and "mAD" in single and "mAD" in two:
            key = f"mAD difference, DDP {batch(two)} minus one GPU {batch(single)} (points)"
            parallel[key] = 100 * (two["mAD"] - single["mAD"]) if single["steps"] == two["steps"] \
                else (f"not comparable: the one-GPU run stopped at step {single['steps']}, the "
                      f"DDP run at {two['steps']}")
        doc = {"runs": list(runs.values()), "data_parallel": parallel,
               "environment": environment,
               "setup": (folder / "setup.log").read_text() if (folder / "setup.log").exists()
               else ""}
        write_json(results / "gpu_training.json", doc)
        (results / "gpu_training.md").write_text(_training_markdown(doc))
        written["gpu_training"] = results / "gpu_training.json"
    return written


def load_training_table(path) -> list[dict]:
    """One row per run of a committed gpu_training.json (already flat: run, world_size, batches,
    steps, seconds, images/s, final loss, the eight metrics)."""
    return [dict(r) for r in read_json(path)["runs"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("session", "training"))
    parser.add_argument("archive", help="gpu_session.tgz / gpu_training.tgz, or its folder")
    parser.add_argument("--results", default=str(RESULTS), help="where to write")
    args = parser.parse_args(argv)
    source = Path(args.archive)
    if not source.exists():
        parser.error(f"archive: {source} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        if source.is_file():
            with tarfile.open(source) as tar:
                tar.extractall(tmp, filter="data")
            source = Path(tmp)
        collect = collect_session if args.kind == "session" else collect_training
        written = collect(source, Path(args.results))
    for name, path in written.items():
        print(f"{name}: {path}")
    if not written:
        print(f"nothing to collect in {args.archive}")
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())
