"""Turn the outputs of `gpu_sitting` commands into the committed results files of the book.

    python -m mambaadv2_ref.studies.collect_sitting --speed S1 --train S2 S3 --results book/results

S1: the folder of a `speed` command's outputs (speed_TAG.json, speed_TAG.log, profile_*.txt,
scaling.json); S2, S3...: folders of `train` commands (train_RUN.json). Writes
speed_paper_gpu.{json,png} (or --speed-name), scaling_paper_gpu.{json,png}, profiles/*.txt and
training_snapshots_gpu.json (one row per run and command: dataset, model, profile, encoder,
seed, steps done of the schedule's, device, seconds, the seven metrics and mAD in percent).
A speed row whose JSON did not come back from the GPU machine (it returns at most 8 files) is
read from the line the command printed for it, and says so in `source`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.studies.gpu_sitting import SPEED_ROWS, WARM_TAG
from mambaadv2_ref.studies.results import read_json
from mambaadv2_ref.studies.scaling import plot_scaling
from mambaadv2_ref.studies.speed import plot_speed
from mambaadv2_ref.studies.training_curves import epochs_at, percent, run_info

PRINTED_ROW = re.compile(r"^(?P<label>.+): train (?P<train>[\d.]+) img/s, infer (?P<infer>[\d.]+)"
                         r" img/s, peak (?P<peak>[\d.]+) GiB, first step (?P<first>[\d.]+) s$")


def printed_rows(log: Path, environment: dict) -> list[dict]:
    """Speed rows from the lines a `speed` command printed (label, images/s, GiB, seconds)."""
    rows = []
    for line in log.read_text().splitlines():
        m = PRINTED_ROW.match(line.strip())
        if m and m["label"] in SPEED_ROWS:
            model, backend, precision, overrides = SPEED_ROWS[m["label"]]
            rows.append({"label": m["label"], "model": model, "backend": backend,
                         "precision": precision, "overrides": overrides, "profile": "paper",
                         "device_name": environment.get("gpu"), "image_size": 256,
                         "batch_size": 16, "train_images_per_s": float(m["train"]),
                         "infer_images_per_s": float(m["infer"]),
                         "train_peak_memory_bytes": int(float(m["peak"]) * 2**30),
                         "first_step_s": float(m["first"]),
                         "source": f"printed log {log.name} (1 decimal)"})
    return rows


FIRST_SITTING_NOTES = (
    "One sitting on one H200 (fp32 and bf16, paper profile, batch 16, 256 px, random weights; "
    "train = train.train_step). 'before' = the materialised matrix path and the uniform plan, "
    "the paper preset until 2026-12-01. The bf16 mamba_ssm rows ran the kernel route on bf16 "
    "operands, since changed to float32 operands (its dt gradient was 26 % off in bf16).")


def collect_speed(folder: Path, results: Path, name: str = "speed_paper_gpu",
                  notes: str = FIRST_SITTING_NOTES) -> None:
    """NAME.json/png (the speed rows, each command's folder file speed_TAG.json),
    scaling_paper_gpu.json/png and the profiler tables. Warm-up files (speed_warmN.json) are
    left out: their cold compile seconds are already in the timed rows. Each row names its
    file (`speed_file`); `environments` holds each file's environment (the processes of one
    command can differ: a CUDA extension built between them), `environment` the first's."""
    files = sorted(f for f in folder.glob("speed_*.json")
                   if not f.stem.startswith(f"speed_{WARM_TAG}"))
    docs = {f.name: json.loads(f.read_text()) for f in files}
    environments = {name: doc["environment"] for name, doc in docs.items()}
    environment = environments[files[0].name] if files else {}
    rows = [dict(row, speed_file=name) for name, doc in docs.items() for row in doc["rows"]]
    labels = {r["label"] for r in rows}
    for log in sorted(folder.glob("speed_*.log")):
        rows += [r for r in printed_rows(log, environment) if r["label"] not in labels]
    order = list(SPEED_ROWS)
    rows.sort(key=lambda r: order.index(r["label"]))
    write_json(results / f"{name}.json", {"environment": environment,
                                          "environments": environments, "rows": rows,
                                          "notes": notes})
    plot_speed([r for r in rows if "train_images_per_s" in r], results / f"{name}.png")
    if (folder / "scaling.json").exists():
        shutil.copy(folder / "scaling.json", results / "scaling_paper_gpu.json")
        plot_scaling(json.loads((folder / "scaling.json").read_text())["rows"],
                     results / "scaling_paper_gpu.png")
    (results / "profiles").mkdir(exist_ok=True)
    for f in folder.glob("profile_*.txt"):
        shutil.copy(f, results / "profiles" / f.name)


def training_row(record: dict, command: str) -> dict:
    """One row of training_snapshots_gpu.json from a train_RUN.json record."""
    info, train = run_info(record), record.get("train") or {}
    return {"run": info["run"], "command": command, "dataset": info["dataset"],
            "model": info["model"], "profile": (record.get("model_config") or {}).get("profile"),
            "encoder": info["encoder"], "seed": info["seed"],
            "steps": record.get("step"), "schedule_steps": info["schedule_steps"],
            "epochs": epochs_at(record["step"], train) if train.get("num_steps") else None,
            "device_name": info["device_name"], "train_s": record.get("train_seconds"),
            "metrics": percent((record.get("metrics") or {}).get("mean", {})),
            "date": info["date"]}


def load_table(path) -> list[dict]:
    """The rows of a committed training_snapshots_gpu.json, flat: run, command, dataset, model,
    seed, steps, schedule_steps, epochs and the metrics in percent."""
    rows = []
    for r in read_json(path)["rows"]:
        rows.append({k: r[k] for k in ("run", "command", "dataset", "model", "seed", "steps",
                                       "schedule_steps", "epochs")} | r["metrics"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=Path, help="folder of a speed command's outputs")
    parser.add_argument("--train", type=Path, nargs="*", default=[],
                        help="folders of train commands' outputs, in order")
    parser.add_argument("--results", type=Path, default=Path("book/results"))
    parser.add_argument("--speed-name", default="speed_paper_gpu",
                        help="stem of the speed results files (NAME.json, NAME.png)")
    parser.add_argument("--speed-notes", default=FIRST_SITTING_NOTES,
                        help="the notes field of NAME.json: how and where the rows were run")
    args = parser.parse_args(argv)
    if args.speed:
        collect_speed(args.speed, args.results, args.speed_name, args.speed_notes)
    rows = [training_row(json.loads(f.read_text()), folder.name)
            for folder in args.train for f in sorted(folder.glob("train_*.json"))]
    if rows:
        write_json(args.results / "training_snapshots_gpu.json", {
            "rows": rows, "notes": "Snapshots, NOT converged: each command trained from "
            "scratch (a new machine has no runs), several runs at once on one H200, stopped "
            "by the 10-minute command limit before the schedule's end."})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
