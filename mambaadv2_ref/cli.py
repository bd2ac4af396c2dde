"""Command line: `python -m mambaadv2_ref {train,evaluate,predict,export,bench}` (also
`mambaadv2-ref`).

Each subcommand parses its arguments here and calls one function of the package:
train -> train.train, evaluate -> evaluate.evaluate, predict -> predict.predict, export ->
model.export.export_detector, bench scan ->
studies.scan_bench.run_scan_bench, bench model -> studies.speed.bench_model. Errors that come
from bad input (ValueError, TypeError, FileNotFoundError, unavailable pretrained weights) are
printed as one clean message with exit status 2, and so is a training stopped by a NaN loss
(its last good checkpoint kept); Ctrl-C during training saves a checkpoint, says how to resume
and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mambaadv2_ref.config import DETECTORS, MODELS, PROFILES, default_profile_name
from mambaadv2_ref.config_tools import parse_sets
from mambaadv2_ref.model.encoder import PretrainedWeightsUnavailable


def _classes(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    parser = argparse.ArgumentParser(
        prog="mambaadv2-ref",
        description="MambaADv2 reference: train, evaluate, predict, export, bench.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a detector (one model on all classes)",
                       description="Train mambaadv2 / mambaad, or fit the patchcore memory bank.")
    p.add_argument("--data", help="dataset root in the MVTec layout (default: embedded dataset)")
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="size preset (default: $MAMBAADV2_PROFILE, else paper on GPU, tiny on CPU)")
    p.add_argument("--model", choices=DETECTORS, default="mambaadv2")
    p.add_argument("--encoder", default=None, help="timm encoder name (default: the profile's)")
    n = p.add_mutually_exclusive_group()
    n.add_argument("--steps", type=_positive_int, default=None, help="optimisation steps")
    n.add_argument("--epochs", type=_positive_int, default=None,
                   help="epochs (converted to steps)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--classes", default=None, help="comma-separated classes (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    r = p.add_mutually_exclusive_group()
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out (an error when it has no checkpoint)")
    r.add_argument("--force", action="store_true",
                   help="replace the run in --out (deletes its checkpoint, metrics.json, maps/, "
                        "snapshots/)")
    p.add_argument("--extend", action="store_true",
                   help="with --resume: continue on a longer schedule (--steps/--epochs larger "
                        "than the steps done); the lr plan is recomputed and recorded")
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                   help="override a training or model config field (repeatable), typed by the "
                        "field: booleans true/false/1/0. A checkpoint is saved every "
                        "checkpoint_minutes (default 10), every checkpoint_every steps when set, "
                        "at the end and on Ctrl-C; snapshot_every=N also keeps the weights "
                        "every N steps in RUN/snapshots/ (evaluate each with --run); "
                        "balance_classes=true gives every batch and every rank's shard each "
                        "class in proportion to its share; statistics_holdout=K withholds K "
                        "good training images per class from training, for the statistics of "
                        "evaluate --readout z")

    p = sub.add_parser("evaluate", help="per-class metrics of a trained run",
                       description="Evaluate a run on the test split; writes RUN/metrics.json.")
    p.add_argument("--run", required=True,
                   help="run directory (holds checkpoint.json) or an exported FILE.safetensors "
                        "(then writes FILE.metrics.json and FILE.maps/)")
    p.add_argument("--data", default=None, help="dataset root (default: the one trained on)")
    p.add_argument("--classes", default=None, help="comma-separated classes (default: trained)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--save-maps", action="store_true", help="write RUN/maps/<class>.npz")
    p.add_argument("--pixel-method", choices=("exact", "binned"), default="exact",
                   help="exact: up to ~58 bytes per test pixel (MVTec AD at 256 px: ~6.5 GB); "
                        "binned: 4096-bin histograms, ~7 bytes per test pixel, within ~2e-3")
    p.add_argument("--aupro", choices=("mambaad", "mvtec"), default="mambaad",
                   help="AUPRO definition: mambaad (MambaAD/ADer: 100 thresholds, FPR rescaled "
                        "below 0.3) or mvtec (MVTec AD evaluation / anomalib: every threshold, "
                        "interpolated at FPR 0.3); recorded in metrics.json")
    p.add_argument("--readout", choices=("raw", "z"), default="raw",
                   help="raw: the model's maps (MambaAD's score, the max); z: each pixel's map "
                        "standardised by its mean and spread over the class's good training "
                        "images (test-set free), every metric read from it; writes "
                        "metrics_z.json (and maps_z/) beside metrics.json, and each class's "
                        "statistics to readout_z/ for predict --readout z; a run trained with "
                        "--set statistics_holdout=K takes them from its K held-out images")

    p = sub.add_parser("predict", help="anomaly heatmaps and scores for image files",
                       description="Score images with a trained run; writes overlays and "
                                   "scores.csv.")
    p.add_argument("--run", required=True,
                   help="run directory or an exported FILE.safetensors (its thresholds: "
                        "FILE.metrics.json)")
    p.add_argument("--images", required=True, help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--class", dest="cls", default=None,
                   help="class whose evaluation threshold decides is_anomalous")
    p.add_argument("--device", default="auto")
    p.add_argument("--readout", choices=("raw", "z"), default="raw",
                   help="raw: the model's maps; z: each map standardised with the class's "
                        "training statistics that `evaluate --readout z` saved (its threshold "
                        "and colour scale from metrics_z.json)")

    p = sub.add_parser(
        "export", help="a compact trained-detector file to share (no frozen encoder, no optimizer)",
        description="Write FILE.safetensors with the trained tensors only (the frozen encoder's "
                    "entries are left out when they are the pretrained weights installed here: "
                    "loading rebuilds the encoder and checks its SHA-256 fingerprint) and the "
                    "manifest FILE.json (model, config, step, training settings, history, "
                    "fingerprints); copies RUN/metrics.json, RUN/metrics_z.json and "
                    "RUN/readout_z/ to FILE.metrics.json, FILE.metrics_z.json and "
                    "FILE.readout_z/ when they are of the same step. `evaluate --run "
                    "FILE.safetensors`, `predict --run ...` and load_detector read it.")
    p.add_argument("--run", required=True, help="run directory (or RUN/snapshots/stepNNNNNNN)")
    p.add_argument("--out", required=True, help="the .safetensors file to write (FILE.json too)")

    p = sub.add_parser("bench", help="benchmarks (scan kernels, whole model)",
                       description="Benchmarks; results are printed and saved as JSON.")
    bsub = p.add_subparsers(dest="target", required=True)
    b = bsub.add_parser("scan", help="scan backends (see mambaadv2_ref.scans)")
    b.add_argument("--out", default="bench_scan.json", help="JSON file to write")
    b.add_argument("--device", default="auto")
    b = bsub.add_parser("model", help="training/inference images/s and peak memory")
    b.add_argument("--model", choices=MODELS, default="mambaadv2")
    b.add_argument("--profile", choices=sorted(PROFILES), default=None)
    b.add_argument("--encoder", default=None)
    b.add_argument("--device", default="auto")
    b.add_argument("--batch-size", type=int, default=None)
    b.add_argument("--iters", type=_positive_int, default=5,
                   help="timed iterations after 2 warm-ups")
    b.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE")
    b.add_argument("--out", default="bench_model.json", help="JSON file to write")
    return parser


def _train(args) -> None:
    from mambaadv2_ref.model.detectors import model_config_fields
    from mambaadv2_ref.train import train
    from mambaadv2_ref.train_config import TrainConfig, config_from_sets

    cfg = TrainConfig(out=args.out, data=args.data, model=args.model,
                      profile=args.profile or default_profile_name(), encoder=args.encoder,
                      steps=args.steps, epochs=args.epochs, classes=_classes(args.classes),
                      device=args.device, resume=args.resume, force=args.force,
                      extend=args.extend)
    cfg = config_from_sets(cfg, parse_sets(args.sets), model_config_fields(args.model))
    meta = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: one summary line
        print(f"trained {cfg.model}: step {meta['step']} of {meta['train']['num_steps']}, "
              f"{meta['train_seconds']:.1f} s; checkpoint {meta['checkpoint']}")


def _evaluate(args) -> None:
    from mambaadv2_ref.evaluate import evaluate

    evaluate(args.run, data=args.data, classes=_classes(args.classes), device=args.device,
             batch_size=args.batch_size, save_maps=args.save_maps,
             pixel_method=args.pixel_method, aupro_definition=args.aupro,
             readout=args.readout)


def _predict(args) -> None:
    from mambaadv2_ref.predict import predict

    predict(args.run, args.images, args.out, cls=args.cls, device=args.device,
            readout=args.readout)


def _export(args) -> None:
    from mambaadv2_ref.model.export import export_detector, sidecar_path

    path = export_detector(args.run, args.out)
    meta = json.loads(sidecar_path(path).read_text())
    encoder = meta["encoder"]
    print(f"exported {meta['model']} (step {meta['step']}) to {path} "
          f"({path.stat().st_size / 1e6:.2f} MB) and {sidecar_path(path)}; encoder "
          f"{encoder['name']}: {encoder['why']}; {meta['evaluation']}; {meta['readout_z']}")


def _bench(args) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.target == "scan":
        from mambaadv2_ref.studies.scan_bench import run_scan_bench

        run_scan_bench(args.device, out_path=args.out)  # prints and saves as it goes
    else:
        from mambaadv2_ref.model.detectors import model_config_fields
        from mambaadv2_ref.studies.speed import bench_model
        from mambaadv2_ref.train_config import typed_model_sets

        result = bench_model(args.model, profile=args.profile or default_profile_name(),
                             encoder=args.encoder, device=args.device,
                             batch_size=args.batch_size, iters=args.iters,
                             overrides=typed_model_sets(parse_sets(args.sets),
                                                        model_config_fields(args.model)))
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
    print(f"saved {args.out}")


COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export,
            "bench": _bench}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m mambaadv2_ref` and the `mambaadv2-ref` console script."""
    from mambaadv2_ref.run_safety import TrainingDiverged, TrainingInterrupted

    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, TypeError, PretrainedWeightsUnavailable,
            TrainingDiverged) as err:
        print(f"mambaadv2-ref {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:
        print(f"mambaadv2-ref {args.command}: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"mambaadv2-ref {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
