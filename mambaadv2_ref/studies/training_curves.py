"""Metric-vs-steps curves of GPU training runs, mean +- std over seeds, and the rows of the runs
that finished their schedule (the `converged_*` results files).

    python -m mambaadv2_ref.studies.training_curves --train C1 C2 C3 --results book/results
        [--tag TAG] [--earlier training_curves_X_gpu.json --earlier-runs RUN1,RUN2
         [--earlier-converged converged_X_gpu.json]]

C1, C2, ...: folders of `gpu_sitting train` commands, in order (each holds train_RUN.json with the
run's evaluated snapshots, `curve`, and its latest metrics). A run met in several commands keeps
the union of its snapshots; the latest record gives its step and schedule. Writes, per (dataset,
profile):

- training_curves_DATASET_PROFILE_gpu.json: one row per (run, snapshot step) with dataset, model,
  profile, encoder, seed, step, schedule_steps, steps_done (where the run stopped),
  num_train_images, epochs, device_name, images_per_s (the run's last logged throughput),
  command (the `train` command that reproduces the run: paper-profile weights are too big for
  git), the metrics in percent, and
  the summary over seeds per (model, encoder, step): mean, std (sample, n-1) and n;
  PatchCore fits (no steps) as reference rows; plus the .png of the curves.
- converged_DATASET_PROFILE_gpu.json: one row per run whose last checkpoint is the end of its
  schedule (fixed schedule, last checkpoint, no model selection), with train_s, and metrics_z
  (the same checkpoint read out by `evaluate --readout z`; z_readout: its statistics' source, eps,
  the range of Z over the test maps and the thresholds) where the command recorded it, and the
  training loss at each snapshot step (`loss_at`); written only when such runs exist.

A snapshot is scored like any checkpoint (`evaluate --run RUN/snapshots/stepN`): its step is fixed
in advance (`snapshot_every`), so comparing models at a step selects nothing on the test set.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from matplotlib.figure import Figure

from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.evaluate import METRIC_KEYS
from mambaadv2_ref.studies.results import read_json

PLOTTED = ("I-AUROC", "AUPRO", "mAD")


def merge_records(folders: list[Path]) -> dict[str, dict]:
    """name -> the latest train_NAME.json record, its `curve` the union over all commands."""
    runs: dict[str, dict] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("train_*.json")):
            record = json.loads(path.read_text())
            curve = {p["step"]: p for p in runs.get(record["name"], {}).get("curve", [])}
            curve.update({p["step"]: p for p in record.get("curve", [])})
            runs[record["name"]] = {**record, "curve": [curve[s] for s in sorted(curve)]}
    return runs


def percent(mean: dict) -> dict:
    """The metrics of `mean` (fractions) in percent, None where missing."""
    return {k: None if mean.get(k) is None else 100 * mean[k] for k in METRIC_KEYS}


def run_info(record: dict) -> dict:
    """The fields every row of a run shares: dataset, model, profile, encoder, seed, device."""
    args, train = record["args"], record.get("train") or {}
    config = record.get("model_config") or {}
    return {"run": record["name"], "dataset": "bsdata" if "--data" in args else "embedded",
            "model": args[args.index("--model") + 1],
            "profile": config.get("profile") or (
                args[args.index("--profile") + 1] if "--profile" in args else None),
            "encoder": config.get("encoder"), "seed": train.get("seed"),
            "schedule_steps": train.get("num_steps"), "steps_done": record.get("step"),
            "num_train_images": train.get("num_train_images"),
            "device_name": record["environment"].get("gpu"),
            "images_per_s": (record.get("history") or [{}])[-1].get("images_per_s"),
            "date": record["environment"].get("date"),
            "command": " ".join(["python -m mambaadv2_ref train --out", f"runs/{record['name']}",
                                 *args])}


def epochs_at(step: int, train: dict) -> float | None:
    """Epochs done after `step` steps of a run's `train` settings (None without its data size)."""
    if not train.get("num_train_images"):
        return None
    return round(step * train["batch_size"] / train["num_train_images"], 1)


def curve_rows(record: dict) -> list[dict]:
    """One row per evaluated snapshot of a run (PatchCore: one row of its fit, step 0)."""
    info, train = run_info(record), record.get("train") or {}
    if info["model"] == "patchcore":
        metrics = (record.get("metrics") or {}).get("mean")
        return [] if metrics is None else [{**info, "step": 0, "epochs": None,
                                            "metrics": percent(metrics)}]
    return [{**info, "step": p["step"], "epochs": epochs_at(p["step"], train),
             "metrics": percent(p["mean"])} for p in record.get("curve", [])]


def summarise(rows: list[dict]) -> list[dict]:
    """Mean, std (n-1; 0 for one seed) and n over seeds per (model, encoder, step)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["encoder"], r["step"]), []).append(r)
    out = []
    for (model, encoder, step), members in sorted(groups.items()):
        entry = {"model": model, "encoder": encoder, "step": step, "n": len(members),
                 "seeds": sorted(m["seed"] for m in members if m["seed"] is not None)}
        for k in METRIC_KEYS:
            values = [m["metrics"][k] for m in members if m["metrics"][k] is not None]
            entry[k] = {"mean": statistics.fmean(values) if values else None,
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        out.append(entry)
    return out


def loss_at(steps: list[int], history: list[dict], window: int = 100) -> list[dict]:
    """[{step, loss}]: the training loss around each of `steps`, the mean of the logged losses
    (history: {step, loss}) in the `window` steps up to it; steps with no logged loss are left
    out. The loss beside the metric curve: does the metric follow the loss?"""
    out = []
    for step in steps:
        logged = [h["loss"] for h in history if step - window < h["step"] <= step]
        if logged:
            out.append({"step": step, "loss": statistics.fmean(logged)})
    return out


def converged_row(record: dict) -> dict | None:
    """The row of a run whose latest checkpoint ends its schedule, else None."""
    info, train = run_info(record), record.get("train") or {}
    metrics = (record.get("metrics") or {}).get("mean")
    if info["model"] == "patchcore" or metrics is None or record["step"] != train.get(
            "num_steps"):
        return None
    row = {**info, "steps": record["step"], "epochs": epochs_at(record["step"], train),
           "train_s": record.get("train_seconds"), "metrics": percent(metrics)}
    losses = loss_at([p["step"] for p in record.get("curve", [])], record.get("history") or [])
    if losses:
        row["loss"] = losses
    z = record.get("metrics_z") or {}
    if z.get("mean") is not None and z.get("run", {}).get("step") == record["step"]:
        row["metrics_z"] = percent(z["mean"])  # `evaluate --readout z` at the same checkpoint
        row["z_readout"] = {**z.get("readout", {}), "map_range": z.get("map_range"),
                            "image_thresholds": z.get("image_thresholds")}
    return row


def plot_curves(summary: list[dict], title: str, metrics=PLOTTED) -> Figure:
    """One panel per metric: mean over seeds against steps, error bars +- std; PatchCore fits
    (step 0) as dashed horizontal lines."""
    fig = Figure(figsize=(4.2 * len(metrics), 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics))
    curves = sorted({(s["model"], s["encoder"]) for s in summary if s["step"] > 0})
    for ax, key in zip(axes, metrics, strict=True):
        for model, encoder in curves:
            pts = [s for s in summary if (s["model"], s["encoder"]) == (model, encoder)
                   and s["step"] > 0 and s[key]["mean"] is not None]
            n = max(p["n"] for p in pts)
            ax.errorbar([p["step"] for p in pts], [p[key]["mean"] for p in pts],
                        yerr=[p[key]["std"] for p in pts], marker="o", capsize=3,
                        label=f"{model}, {encoder} ({n} seed{'s' * (n > 1)})")
        for s in summary:
            if s["step"] == 0 and s[key]["mean"] is not None:
                ax.axhline(s[key]["mean"], ls="--", lw=1, color="grey")
                ax.annotate(f"{s['model']}, {s['encoder']}", (0, s[key]["mean"]), fontsize=7,
                            xycoords=("axes fraction", "data"), va="bottom", color="grey")
        ax.set(xlabel="training step", ylabel=f"{key} (%)", title=key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return fig


def rows_of_runs(results_file: Path, runs: list[str]) -> list[dict]:
    """The rows of a committed results file (training_curves_* or converged_*) whose run is
    one of `runs`."""
    return [r for r in read_json(results_file)["rows"] if r["run"] in runs]


def earlier_rows(curves_file: Path, runs: list[str]) -> list[dict]:
    """The rows of `runs` in a committed training_curves_*.json (runs of an earlier sitting whose
    train records were not kept); an error names a run the file does not hold."""
    rows = rows_of_runs(curves_file, runs)
    missing = sorted(set(runs) - {r["run"] for r in rows})
    if missing:
        raise ValueError(f"--earlier {curves_file}: no rows of run(s) {missing}")
    return rows


def earlier_converged(converged_file: Path, runs: list[str]) -> list[dict]:
    """The rows of `runs` in a committed converged_*.json (those of them that finished their
    schedule in an earlier sitting; a run that did not finish has no row and is skipped)."""
    return rows_of_runs(converged_file, runs)


def collect(folders: list[Path], results: Path, note: str = "", tag: str = "",
            earlier: list[dict] = (), earlier_done: list[dict] = ()) -> list[Path]:
    """Write the curves and converged files of every (dataset, profile); return their paths.

    Args:
        folders: outputs of the sitting's train commands, in order.
        results: the results folder.
        note: how the runs were made (machine sharing, stops), appended to each file's notes.
        tag: files named ..._DATASET_PROFILE_TAG_gpu (a new file beside the earlier ones).
        earlier: curve rows of runs from earlier sittings (`earlier_rows`), added to their
            (dataset, profile) curves and summaries; run names must not repeat the folders'.
    """
    runs = merge_records(folders)
    clash = sorted({r["run"] for r in [*earlier, *earlier_done]} & set(runs))
    if clash:
        raise ValueError(f"earlier rows and the train folders both hold run(s) {clash}")
    results.mkdir(parents=True, exist_ok=True)
    by_group: dict[tuple, list[dict]] = {}
    for record in runs.values():
        info = run_info(record)
        by_group.setdefault((info["dataset"], info["profile"]), []).append(record)
    older: dict[tuple, list[dict]] = {}
    for row in earlier:
        older.setdefault((row["dataset"], row["profile"]), []).append(row)
        by_group.setdefault((row["dataset"], row["profile"]), [])
    written = []
    for (dataset, profile), records in sorted(by_group.items()):
        rows = older.get((dataset, profile), []) + [
            row for record in records for row in curve_rows(record)]
        summary = summarise(rows)
        stem = f"{dataset}_{profile}{'_' + tag if tag else ''}_gpu"
        if any(r["step"] > 0 for r in rows):
            write_json(results / f"training_curves_{stem}.json", {
                "rows": rows, "summary": summary,
                "notes": "Snapshots at fixed steps (snapshot_every), each scored on the test "
                         "split; mean +- std over seeds per step. A run may have stopped before "
                         "its schedule's end (schedule_steps): its last learning-rate step "
                         "(x0.1 at 80 %) is then not in the curve. " + note})
            fig = plot_curves(summary, f"{dataset}, {profile} profile: metric vs steps")
            fig.savefig(results / f"training_curves_{stem}.png", dpi=110)
            written += [results / f"training_curves_{stem}.json",
                        results / f"training_curves_{stem}.png"]
        finished = [r for r in earlier_done if (r["dataset"], r["profile"]) == (dataset, profile)]
        finished += [row for record in records if (row := converged_row(record))]
        if finished:
            write_json(results / f"converged_{stem}.json", {
                "rows": finished,
                "notes": "Runs that finished their fixed schedule; metrics of the last "
                         "checkpoint (no model selection on the test split). " + note})
            written.append(results / f"converged_{stem}.json")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True,
                        help="folders of gpu_sitting train commands' outputs, in order")
    parser.add_argument("--results", type=Path, default=Path("book/results"))
    parser.add_argument("--note", default="", help="how the runs were made (into the notes)")
    parser.add_argument("--tag", default="", help="files named ..._DATASET_PROFILE_TAG_gpu")
    parser.add_argument("--earlier", type=Path, default=None,
                        help="a committed training_curves_*.json holding runs of an earlier "
                             "sitting to include (with --earlier-runs)")
    parser.add_argument("--earlier-converged", type=Path, default=None,
                        help="a committed converged_*.json whose rows of --earlier-runs are kept "
                             "in the converged file written")
    parser.add_argument("--earlier-runs", default="",
                        help="comma list of the run names to take from --earlier")
    args = parser.parse_args(argv)
    names = [n for n in args.earlier_runs.split(",") if n]
    if bool(args.earlier) != bool(names):
        parser.error("--earlier and --earlier-runs go together")
    if args.earlier_converged and not names:
        parser.error("--earlier-converged needs --earlier-runs")
    earlier = earlier_rows(args.earlier, names) if args.earlier else []
    done = earlier_converged(args.earlier_converged, names) if args.earlier_converged else []
    for path in collect(args.train, args.results, args.note, args.tag, earlier, done):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
