"""Ablations: one flag at a time, each trained and evaluated by the same pipeline.

Every ablation is a name and a dict of model-config overrides (`ModelConfig` fields); the study
trains each with `train.train`, evaluates it with `evaluate.evaluate` and gathers the seven
metrics, mAD, training time and throughput into one table (JSON + markdown); `load_table(path)`
reads a committed table back.

    python -m mambaadv2_ref.studies.ablations --out runs/ablations --profile small --steps 300 \
        --data PATH/TO/bsdata --only v2,recurrence_only,matrix_only

`--z-readout` also evaluates every run with the z readout (`evaluate --readout z`: its
statistics from the good images that `--set statistics_holdout=K` keeps out of training, else
from the training images) into the row's `metrics_z`; rows already in the table without it get
it from their run folder, so the flag can be added to a finished table.

On a GPU machine lent in 10-minute commands the same ablations run as `gpu_sitting train` runs
(all at once, resumable across commands): `--gpu-runs RUNS.json` writes that list (one run
`ablation_NAME` each, the overrides as `train --set`), and `--collect DIR [DIR ...]` turns the
commands' train_ablation_NAME.json records into the same table (finished runs only; the others
are listed in `not_finished`):

    python -m mambaadv2_ref.studies.ablations --gpu-runs runs.json --profile paper --steps 1000 \
        --data .gpu_carry/data/bsdata --only v2,recurrence_only --set precision=fp32 \
        --v2-set compile_mixer=reduce-overhead --v1-set backend=mamba_ssm
    python -m mambaadv2_ref.studies.ablations --collect OUT1 OUT2 --out book/results/NAME.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mambaadv2_ref.checkpoint import read_manifest, write_json
from mambaadv2_ref.config_tools import parse_sets
from mambaadv2_ref.evaluate import METRIC_KEYS, evaluate
from mambaadv2_ref.studies.results import environment, read_json
from mambaadv2_ref.tables import markdown_table
from mambaadv2_ref.train import steady_images_per_s, train
from mambaadv2_ref.train_config import TrainConfig

# name -> (model, overrides of the model config, what it tests)
ABLATIONS: dict[str, tuple[str, dict, str]] = {
    "v2": ("mambaadv2", {}, "MambaADv2 as configured by the profile (both paths, summed)"),
    "recurrence_only": ("mambaadv2", {"path_mode": "recurrence"}, "dual path: recurrence only"),
    "matrix_only": ("mambaadv2", {"path_mode": "matrix"}, "dual path: matrix form only"),
    "gate_fusion": ("mambaadv2", {"path_mode": "gate"}, "dual path: learned gate, not a sum"),
    "causal_matrix": ("mambaadv2", {"matrix_causal": True}, "matrix path with a causal mask"),
    "no_fft": ("mambaadv2", {"use_fft": False}, "frequency branch without its FFT filter"),
    "no_position": ("mambaadv2", {"position_aware": False},
                    "no rotary angles / trapezoid (plain Mamba-2 SSD)"),
    "plan_uniform": ("mambaadv2", {"scan_plan": "uniform"},
                     "no progressive scan: hilbert x 8 at every stage (MambaAD v1)"),
    "plan_decay_deep": ("mambaadv2", {"scan_plan": "decay_deep"},
                        "progressive scan: 8,8,4,2 directions (deep to shallow)"),
    "plan_decay_shallow": ("mambaadv2", {"scan_plan": "decay_shallow"},
                           "progressive scan: 2,4,8,8 directions (deep to shallow)"),
    "plan_curve_decay": ("mambaadv2", {"scan_plan": "curve_decay"},
                         "progressive scan: hilbert, hilbert, snake, raster"),
    "directions_1": ("mambaadv2", {"num_directions": 1}, "one scan direction everywhere"),
    "directions_2": ("mambaadv2", {"num_directions": 2}, "two scan directions everywhere"),
    "directions_4": ("mambaadv2", {"num_directions": 4}, "four scan directions everywhere"),
    "mambaad_v1": ("mambaad", {}, "MambaAD v1 (Mamba-1 S6, LSS, Hilbert x 8)"),
}


def run_ablation(name: str, out: Path, data: str | None, profile: str, steps: int,
                 device: str = "auto", train_overrides: dict | None = None,
                 z_readout: bool = False) -> dict:
    """Train and evaluate one ablation; return its row (metrics, seconds, images/s).

    Args:
        name: a key of ABLATIONS.
        out: folder of this ablation's run.
        data: dataset root (None = the embedded dataset).
        profile: run profile.  steps: optimisation steps.  device: "auto", "cpu", "cuda".
        train_overrides: TrainConfig fields (e.g. pretrained, batch_size).
        z_readout: also evaluate with `readout="z"` (the row's `metrics_z`).
    """
    if name not in ABLATIONS:
        raise ValueError(f"ablation must be one of {sorted(ABLATIONS)}, got {name!r}")
    model, overrides, _ = ABLATIONS[name]
    cfg = TrainConfig(out=str(out), data=data, model=model, profile=profile, steps=steps,
                      device=device, model_overrides=dict(overrides), resume="auto",
                      **(train_overrides or {}))
    meta = train(cfg)
    return ablation_row(name, meta["train"]["num_steps"], meta["train_seconds"],
                        meta["history"], evaluate(out, device=device),
                        evaluate(out, device=device, readout="z") if z_readout else None,
                        meta["train"])


RUN_SETTINGS = ("seed", "statistics_holdout", "num_train_images")  # a row's training settings


def ablation_row(name: str, steps: int, train_seconds: float, history: list[dict],
                 metrics: dict, metrics_z: dict | None = None,
                 train_settings: dict | None = None) -> dict:
    """One row of the ablation table: the ablation, its schedule, training time and speed, the
    evaluation's speed and mean metrics (`metrics`: a metrics.json), and with `metrics_z` (a
    metrics_z.json, `evaluate --readout z`) the mean metrics of the z readout as `metrics_z`;
    `train_settings` (a run's meta["train"]) gives the row its RUN_SETTINGS."""
    model, overrides, what = ABLATIONS[name]
    row = {"ablation": name, "model": model, "overrides": overrides, "what": what,
           **{k: (train_settings or {}).get(k) for k in RUN_SETTINGS},
           "steps": steps, "train_seconds": train_seconds,
           "train_images_per_s": steady_images_per_s(history),
           "infer_images_per_s": metrics["run"]["images_per_s"],
           "final_loss": history[-1]["loss"],
           **{k: metrics["mean"][k] for k in METRIC_KEYS}}
    if metrics_z is not None:
        row["metrics_z"] = z_means(metrics_z)
    return row


def complete_row(row: dict, run_dir: Path, z_readout: bool, device: str = "auto") -> bool:
    """Fill what a row written by an earlier version of this study lacks, from its run folder:
    the RUN_SETTINGS (from its checkpoint) and, with `z_readout`, `metrics_z` (evaluated now).
    The row's metrics and timings stay as measured. Returns whether anything was added."""
    added = False
    if any(k not in row for k in RUN_SETTINGS):
        settings = read_manifest(run_dir)["train"]
        row.update({k: settings.get(k) for k in RUN_SETTINGS})
        added = True
    if z_readout and "metrics_z" not in row:
        row["metrics_z"] = z_means(evaluate(run_dir, device=device, readout="z"))
        added = True
    return added


def z_means(metrics_z: dict) -> dict:
    """The mean metrics of a z-readout evaluation (fractions), checked to be one: a metrics
    file of the raw readout here would pass the raw numbers off as the z readout's."""
    readout = (metrics_z.get("readout") or {}).get("name")
    if readout != "z":
        raise ValueError(f"metrics_z must be an evaluation with readout 'z', got {readout!r}")
    return {k: metrics_z["mean"][k] for k in METRIC_KEYS}


GPU_RUN_PREFIX = "ablation_"  # gpu_sitting run names: ablation_NAME


def setting_text(key: str, value) -> str:
    """`key=value` as `train --set` reads it back (`parse_sets`: a Python literal, else text)."""
    return f"{key}={value}" if isinstance(value, str) else f"{key}={value!r}"


def gpu_runs(names: list[str], data: str | None, profile: str, steps: int,
             sets: list[str] = (), v2_sets: list[str] = (), v1_sets: list[str] = ()) -> list[dict]:
    """The `gpu_sitting train --runs` list of the ablations `names`: {name: ablation_NAME, args:
    the `train` arguments}, each ablation's model overrides as `--set`, then `sets` (every run),
    then `v2_sets` or `v1_sets` by the ablation's model (compute settings such as compile_mixer
    exist for one model only)."""
    unknown = sorted(set(names) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"unknown ablations {unknown}; choose from {sorted(ABLATIONS)}")
    runs = []
    for name in names:
        model, overrides, _ = ABLATIONS[name]
        pairs = [setting_text(k, v) for k, v in overrides.items()]
        pairs += [*sets, *(v2_sets if model == "mambaadv2" else v1_sets)]
        runs.append({"name": GPU_RUN_PREFIX + name, "args": [
            *(["--data", data] if data else []), "--model", model, "--profile", profile,
            "--steps", str(steps), *[a for pair in pairs for a in ("--set", pair)]]})
    return runs


def rows_from_records(records: list[dict]) -> tuple[list[dict], list[str]]:
    """Ablation rows (as `run_ablation` returns them) from `gpu_sitting train` records
    (train_ablation_NAME.json) of runs that finished their schedule and were evaluated at its
    last step; returns (rows, names of the runs that did not)."""
    rows, unfinished = [], []
    for record in records:
        name = record["name"].removeprefix(GPU_RUN_PREFIX)
        metrics, train_info = record.get("metrics") or {}, record.get("train") or {}
        if (name not in ABLATIONS or record.get("step") != train_info.get("num_steps")
                or (metrics.get("run") or {}).get("step") != record.get("step")):
            unfinished.append(name)
            continue
        environment = record.get("environment") or {}
        rows.append({**ablation_row(name, train_info["num_steps"], record["train_seconds"],
                                    record["history"], metrics, record.get("metrics_z"),
                                    train_info),
                     "measured": environment.get("date"), "device_name": environment.get("gpu"),
                     "command_args": record.get("args")})
    return rows, unfinished


def collect_records(folders: list[Path], out: Path) -> dict:
    """OUT (.json, and .md beside it): the ablation table of the train_ablation_*.json records
    in `folders` (commands in order: a run met again keeps its latest record)."""
    latest = {}
    for folder in folders:
        for path in sorted(Path(folder).glob(f"train_{GPU_RUN_PREFIX}*.json")):
            record = json.loads(path.read_text())
            latest[record["name"]] = record
    if not latest:
        raise ValueError(f"no train_{GPU_RUN_PREFIX}*.json in {[str(f) for f in folders]}")
    rows, unfinished = rows_from_records(list(latest.values()))
    first = next(iter(latest.values()))
    train_info = first.get("train") or {}
    result = {"environment": first.get("environment"),
              "profile": (first.get("model_config") or {}).get("profile"),
              "steps": train_info.get("num_steps"), "data": train_info.get("data") or "embedded",
              "rows": rows, "not_finished": sorted(unfinished)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    out.with_suffix(".md").write_text(markdown(rows))
    return result


Z_COLUMNS = ("I-AUROC", "AUPRO", "mAD")  # the z readout's metrics a table shows


def against_seed_spread(rows: list[dict], spread: dict, metric: str = "mAD",
                        k: float = 2.0) -> list[dict]:
    """Screen each ablation against the seed-to-seed noise of the reference configuration (v2).

    Implements: d = mean_seeds(m_ablation) - mean_seeds(m_v2), flagged when |d| > k s_v2, with
    s_v2 the sample standard deviation of v2's metric over its seeds (the noise of one run).
    A screen for which ablations deserve more seeds, not a significance test.

    Args:
        rows: ablation rows (metrics as fractions); several rows of one ablation are its seeds;
            a row's `metrics_z` gives the z readout.
        spread: {readout: {"mean", "std", "n"}} of v2's `metric` in percent over its seeds, for
            "raw" and optionally "z" (e.g. holdout_readout's summary).
        metric: the metric compared.  k: the band's half-width in seed standard deviations.
    Returns:
        one dict per ablation (first-seen order): ablation, seeds, and for each readout of
        `spread`: "{readout} {metric}" (mean over its seeds, percent), "{readout} d" and
        "{readout} beyond" (|d| > k s_v2; None where no row of the ablation has that readout).
    """
    if "raw" not in spread:
        raise ValueError(f"spread needs the raw readout's mean and std, got {sorted(spread)}")
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["ablation"], []).append(row)
    out = []
    for name, runs in by_name.items():
        entry = {"ablation": name, "seeds": [r.get("seed") for r in runs]}
        for readout, ref in spread.items():
            values = [100 * (r[metric] if readout == "raw" else r["metrics_z"][metric])
                      for r in runs if readout == "raw" or "metrics_z" in r]
            mean = sum(values) / len(values) if values else None
            d = None if mean is None else mean - ref["mean"]
            entry.update({f"{readout} {metric}": mean, f"{readout} d": d,
                          f"{readout} beyond": None if d is None else abs(d) > k * ref["std"]})
        out.append(entry)
    return out


def table_rows(rows: list[dict]) -> list[dict]:
    """Ablation rows as table rows: the metrics in percent, training time and speed, then (for
    rows that have `metrics_z`) the z readout's I-AUROC, AUPRO and mAD as `z I-AUROC` etc."""
    return [{"ablation": r["ablation"], **{k: 100 * r[k] for k in METRIC_KEYS},
             "train s": r["train_seconds"], "train img/s": r["train_images_per_s"],
             "infer img/s": r["infer_images_per_s"],
             **{f"z {k}": 100 * r["metrics_z"][k] for k in Z_COLUMNS if "metrics_z" in r}}
            for r in rows]


def load_table(path) -> list[dict]:
    """The table rows (`table_rows`) of a committed ablations JSON."""
    return table_rows(read_json(path)["rows"])


def markdown(rows: list[dict]) -> str:
    """The ablation table as markdown: metrics in percent (one decimal), then training time and
    speed."""
    formats = {**{k: ".1f" for k in METRIC_KEYS}, "train s": ".0f", "train img/s": ".1f",
               "infer img/s": ".1f", **{f"z {k}": ".1f" for k in Z_COLUMNS}}
    return markdown_table(table_rows(rows), formats=formats) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for the runs and the table (with --collect: "
                                       "the table's .json file)")
    parser.add_argument("--data", default=None, help="MVTec-layout root (default: embedded)")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", default=None, help="comma-separated ablation names")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="TrainConfig field for every run, e.g. batch_size=16")
    parser.add_argument("--notes", default=None,
                        help="text kept in the table's JSON as `notes` (what a reader of the "
                             "numbers must know, e.g. what shared the machine)")
    parser.add_argument("--z-readout", action="store_true",
                        help="also evaluate every run with the z readout (evaluate --readout z); "
                             "rows already in the table get it from their run folder")
    parser.add_argument("--gpu-runs", type=Path, default=None, metavar="RUNS.json",
                        help="write the gpu_sitting train --runs list instead of training")
    parser.add_argument("--v2-set", action="append", default=[], metavar="KEY=VALUE",
                        help="--gpu-runs: a --set for the mambaadv2 runs only")
    parser.add_argument("--v1-set", action="append", default=[], metavar="KEY=VALUE",
                        help="--gpu-runs: a --set for the mambaad run only")
    parser.add_argument("--collect", type=Path, nargs="+", default=None, metavar="DIR",
                        help="gpu_sitting train output folders to turn into the table --out")
    args = parser.parse_args(argv)
    if args.collect:
        if not args.out or not args.out.endswith(".json"):
            parser.error("--collect needs --out FILE.json (the table to write)")
        try:
            result = collect_records(args.collect, Path(args.out))
        except ValueError as err:
            parser.error(str(err))
        print(markdown(result["rows"]) + f"not finished: {result['not_finished']}")
        return 0
    if args.steps is None or args.steps < 1:
        parser.error(f"--steps must be a positive number of steps, got {args.steps}")
    names = args.only.split(",") if args.only else list(ABLATIONS)
    unknown = sorted(set(names) - set(ABLATIONS))
    if unknown:
        parser.error(f"unknown ablations {unknown}; choose from {sorted(ABLATIONS)}")
    if args.gpu_runs:
        write_json(args.gpu_runs, gpu_runs(names, args.data, args.profile, args.steps,
                                           args.sets, args.v2_set, args.v1_set))
        print(f"{len(names)} runs -> {args.gpu_runs}")
        return 0
    if not args.out:
        parser.error("--out is required to train the ablations")
    out = Path(args.out)
    table_path = out / "ablations.json"
    result = json.loads(table_path.read_text()) if table_path.exists() else {"rows": []}
    done = {r["ablation"]: r for r in result["rows"]}
    if args.notes is not None and result.get("notes") != args.notes:
        result["notes"] = args.notes
        if result["rows"]:  # a table with no row yet is written with its first run
            write_json(table_path, result)
    for name in names:
        if name in done:
            if complete_row(done[name], out / name, args.z_readout, args.device):
                print(f"{name}: completed from {out / name}")
                write_json(table_path, result)
                (out / "ablations.md").write_text(markdown(result["rows"]))
            else:
                print(f"{name}: already in {table_path}, skipped")
            continue
        t0 = time.perf_counter()
        row = run_ablation(name, out / name, args.data, args.profile, args.steps, args.device,
                           parse_sets(args.sets), args.z_readout)
        print(f"{name}: mAD {100 * row['mAD']:.1f} ({time.perf_counter() - t0:.0f} s)")
        result["rows"].append(row)
        result.update(environment=environment(), profile=args.profile, steps=args.steps,
                      data=args.data or "embedded")
        write_json(table_path, result)  # after every run: a crash loses at most one
        (out / "ablations.md").write_text(markdown(result["rows"]))
    print(markdown(result["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
