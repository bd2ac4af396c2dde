"""Does the z readout need good images the model never trained on? Two runs, one question.

The z readout (`model.readout`, eq. Z1) standardises a test map by the per-pixel mean and spread
of good images' maps. Taken over the training images, those statistics come from images the
model has learnt to reconstruct, so they understate a new good image's map: on a long GPU run
every test pixel's Z lay above 0 and the pixel metrics fell. This study trains the same detector
twice, identical but for `statistics_holdout` (0, then K good training images per class kept out
of training, `data.holdout`), and evaluates each with both readouts:

    python -m mambaadv2_ref.studies.holdout_readout --data DATA/bsdata --profile tiny \
        --steps 500 --holdout 16 --seeds 42,0,1 --runs runs/holdout \
        --json book/results/holdout_readout_bsdata_tiny_cpu.json

The pair is trained once per seed. A finished run in --runs is reused (`train`'s resume
"auto"); every evaluation is redone. One row per (seed, run, readout): statistics_holdout, the
images trained on, the readout and what its statistics came from, the range of Z over the test
maps, and the seven metrics and mAD in percent; with the hardware and the date. The summary
gives, per (holdout, readout), each metric's mean and sample std over the seeds, and per
holdout the z-minus-raw difference of each metric over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.evaluate import METRIC_KEYS, evaluate
from mambaadv2_ref.studies.results import environment
from mambaadv2_ref.train import TrainConfig, train


def run_pair_member(data: str, out: Path, holdout: int, profile: str, steps: int, seed: int,
                    device: str, model: str = "mambaadv2", train_overrides: dict | None = None,
                    model_overrides: dict | None = None) -> list[dict]:
    """Train (or reuse) one run with `statistics_holdout=holdout` and evaluate it raw and z.

    Implements: no equation (the readouts are eqs. (1)-(3) and (Z1)).

    Args:
        data: dataset root (MVTec layout). out: the run's folder. holdout: K (0: none).
        profile, steps, seed, device, model: as for `train`. train_overrides, model_overrides:
            further TrainConfig fields and model config fields (both runs alike).
    Returns:
        two rows (readout "raw", then "z"), see the module docstring.
    """
    t0 = time.perf_counter()
    meta = train(TrainConfig(out=str(out), data=data, model=model, profile=profile, steps=steps,
                             seed=seed, device=device, resume="auto",
                             statistics_holdout=holdout,
                             model_overrides=dict(model_overrides or {}),
                             **(train_overrides or {})))
    settings = meta["train"]
    rows = []
    for readout in ("raw", "z"):
        metrics = evaluate(out, device=device, readout=readout)
        record = metrics["readout"]
        rows.append({
            "run": out.name, "dataset": Path(data).name, "model": model, "profile": profile,
            "seed": seed, "steps": meta["step"], "statistics_holdout": holdout,
            "num_train_images": settings["num_train_images"], "readout": readout,
            "statistics_from": record.get("statistics_from"),
            "statistics_images": record.get("train_images"),
            "map_range": metrics["map_range"], "train_s": meta.get("train_seconds"),
            "metrics": {k: 100 * metrics["mean"][k] for k in METRIC_KEYS}})
    rows[-1]["seconds"] = time.perf_counter() - t0
    return rows


def mean_std(values: Sequence[float]) -> dict:
    """{mean, std, n}: the sample standard deviation (n - 1), 0 for a single value."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def summarise(rows: list[dict]) -> dict:
    """Over the seeds: per (holdout, readout) each metric's `mean_std`, and per holdout the
    z-minus-raw difference of each metric, seed by seed, as `mean_std` (rows of `study`).

    Implements: no equation.
    """
    by = {(r["seed"], r["statistics_holdout"], r["readout"]): r["metrics"] for r in rows}
    holdouts = sorted({k for _, k, _ in by})
    seeds = sorted({s for s, _, _ in by})
    return {
        "seeds": seeds,
        "metrics": [{"statistics_holdout": k, "readout": readout,
                     **{m: mean_std([by[(s, k, readout)][m] for s in seeds])
                        for m in METRIC_KEYS}}
                    for k in holdouts for readout in ("raw", "z")],
        "z_minus_raw": [{"statistics_holdout": k,
                         **{m: mean_std([by[(s, k, "z")][m] - by[(s, k, "raw")][m]
                                         for s in seeds]) for m in METRIC_KEYS}}
                        for k in holdouts]}


def study(data: str, runs: Path, holdout: int, profile: str, steps: int, seeds: Sequence[int],
          device: str = "cpu", **overrides) -> dict:
    """Both runs (statistics_holdout 0 and `holdout`) for each seed, their rows and their
    summary over the seeds (`summarise`); see the module docstring. `overrides`:
    train_overrides / model_overrides of `run_pair_member`.

    Implements: no equation.
    """
    if holdout < 2:
        raise ValueError(f"--holdout must be >= 2 (the run it is compared with holds out 0), "
                         f"got {holdout}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must name at least one seed, each once, got {list(seeds)}")
    name = Path(data).name
    rows = [row for seed in seeds for k in (0, holdout)
            for row in run_pair_member(data, runs / f"{name}_{profile}_seed{seed}_holdout{k}",
                                       k, profile, steps, seed, device, **overrides)]
    return {"environment": environment(), "rows": rows, "summary": summarise(rows),
            "notes": f"{name}, {profile} profile, MambaADv2, seeds {list(seeds)}, {steps} "
                     f"steps; for each seed trained twice, identical but for "
                     f"statistics_holdout (0 and {holdout} good training "
                     "images per class kept out of training, data.holdout eq. H1); each run "
                     "evaluated with the raw readout and the z readout, whose statistics come "
                     "from the training images (holdout 0) or from the held-out ones. The test "
                     "split is never used for a statistic. summary: mean and sample std over "
                     "the seeds."}


def parse_seeds(text: str) -> list[int]:
    """`--seeds 42,0,1` -> [42, 0, 1]; a clear error for anything else."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers such as 42,0,1, "
                         f"got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset root (MVTec layout)")
    parser.add_argument("--runs", type=Path, required=True, help="folder of the two runs")
    parser.add_argument("--holdout", type=int, default=16, help="K of the second run")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", default="42", help="comma-separated seeds, e.g. 42,0,1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, required=True, help="results file to write")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        result = study(args.data, args.runs, args.holdout, args.profile, args.steps, seeds,
                       args.device)
    except ValueError as err:
        parser.error(str(err))
    write_json(args.json, result)
    for r in result["rows"]:
        low, high = (min(v[0] for v in r["map_range"].values()),
                     max(v[1] for v in r["map_range"].values()))
        print(f"seed {r['seed']:>3} holdout {r['statistics_holdout']:>3} {r['readout']:>3}: "
              + " ".join(f"{k} {r['metrics'][k]:.1f}" for k in ("I-AUROC", "P-AP", "AUPRO",
                                                                 "mAD"))
              + f"  map range [{low:.2f}, {high:.2f}]")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
