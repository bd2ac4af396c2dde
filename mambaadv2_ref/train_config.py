"""What a training run is: `TrainConfig`, the keys `--set` may change, the keys a resume keeps.

`train.train(cfg)` runs one; `config_from_sets` applies `--set key=value` pairs to one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from mambaadv2_ref.config import PRECISIONS
from mambaadv2_ref.config_tools import coerce_setting, field_types
from mambaadv2_ref.data.holdout import check_holdout_count


@dataclass
class TrainConfig:
    """Everything a training run needs; `--set key=value` reaches the fields marked settable.

    Args:
        out: run directory (checkpoints, logs).
        data: dataset root in the MVTec layout; None = the embedded dataset.
        model: "mambaadv2", "mambaad" or "patchcore".
        profile: "tiny", "small" or "paper" (image size, batch size, default steps, lr).
        encoder: encoder name; None = the model's default.
        steps: number of optimisation steps; None = from `epochs`, else the profile's.
        epochs: number of epochs (converted to steps); exclusive with `steps`.
        classes: class names; None = all classes of the dataset.
        device: "auto", "cpu" or "cuda[:N]".
        resume: True = continue the checkpoint in `out` (an error when there is none); "auto" =
            continue it when there is one, else start; False = a new run (an error when `out`
            already holds a run, unless `force`).
        force: with resume False, replace the run in `out` (its checkpoint, metrics.json and
            maps/ are deleted first; other files are left alone).
        extend: with resume, continue the run on a new, longer schedule (`steps` / `epochs`
            larger than the steps it has done): the learning-rate plan is recomputed for the
            new length (MambaAD's x0.1 at 80 % of it; a run extended after its decay goes back
            to the base rate until the new decay step) and each schedule is recorded in the
            run's JSON (`train.lr_plan`, `train.schedules`).
        model_overrides: model config fields to override (from `--set`).
        image_size, batch_size, lr: None = the profile's.
        seed: seeds python, numpy, torch and the data order.
        pretrained: load the encoder's pretrained weights.
        checkpoint_every: also save every N steps (None or 0: no step interval).
        snapshot_every: also keep the weights every N steps as RUN/snapshots/step<N>
            (`checkpoint.save_snapshot`; None or 0: none), for a metric-vs-steps curve.
        checkpoint_minutes: save when this many minutes passed since the last save (0: never
            by time); a checkpoint is also written at the end and on Ctrl-C.
        log_every: steps between history records (>= 1).
        num_workers: DataLoader worker processes.
        weight_decay, clip_grad, lr_decay_at, lr_decay: the optimiser recipe (book appendix A.1).
        stop_at: stop after this many steps as if interrupted (time-boxed runs, resume tests).
        precision: "auto" (bf16 autocast on GPUs with native bf16, else float32), "bf16",
            "fp32", or "tf32" (float32 with TF32 matrix products on CUDA, `runtime.tf32_matmuls`).
        balance_classes: the class-balanced data order (`sampler.StepBatchSampler` given every
            image's class): each epoch, every global batch and every rank's shard holds each
            class in proportion to its share of the training images, within one image. False,
            the default, keeps the shuffled order earlier runs used, so their results stay the
            same and their checkpoints resume (a checkpoint without the key is a False run); a
            resume cannot change it, since it changes which images every step sees.
        statistics_holdout: good training images per class withheld from training (0, the
            default, withholds none: earlier runs' behaviour, and a checkpoint without the key
            is a 0 run), so that `evaluate --readout z` takes its per-pixel statistics from
            images the model never trained on (a model reconstructs its own training images
            better than any new one, so their statistics understate a new image's map and
            spread). A count per class, not a fraction: exact, and the same for every class of
            a multi-class run. Which ones is fixed, independent of the seed: evenly spaced in
            each class's sorted file order (`data.holdout`, eq. H1); the run's JSON lists them
            (`train.statistics_holdout_files`) and `num_train_images` counts only the trained
            ones. 1 is refused (sigma needs 2 images), as is a value that leaves a class fewer
            than 8 training images (`data.holdout.MIN_TRAIN_IMAGES`); PatchCore accepts it
            (the held-out images stay out of its memory bank). A resume cannot change it.
    """

    out: str
    data: str | None = None
    model: str = "mambaadv2"
    profile: str = "tiny"
    encoder: str | None = None
    steps: int | None = None
    epochs: int | None = None
    classes: list[str] | None = None
    device: str = "auto"
    resume: bool | str = False
    force: bool = False
    extend: bool = False
    model_overrides: dict = field(default_factory=dict)
    image_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 42
    pretrained: bool = True
    checkpoint_every: int | None = None
    snapshot_every: int | None = None
    checkpoint_minutes: float = 10.0
    log_every: int = 10
    num_workers: int = 0
    weight_decay: float = 1e-4
    clip_grad: float = 5.0
    lr_decay_at: float = 0.8
    lr_decay: float = 0.1
    stop_at: int | None = None
    precision: str = "auto"
    balance_classes: bool = False
    statistics_holdout: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first setting with a bad value (types as declared)."""
        for key, tp in field_types(TrainConfig).items():
            if key not in ("out", "classes", "model_overrides"):
                setattr(self, key, coerce_setting(key, getattr(self, key), tp))
        positive = ("image_size", "batch_size", "steps", "epochs", "log_every", "stop_at")
        for key in positive:
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be a positive int (>= 1), got {value}")
        for key in ("seed", "num_workers", "checkpoint_every", "snapshot_every"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        for key in ("lr", "clip_grad", "lr_decay"):
            value = getattr(self, key)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{key} must be a positive number, got {value}")
        if self.weight_decay < 0 or self.checkpoint_minutes < 0:
            raise ValueError(f"weight_decay and checkpoint_minutes must be >= 0, got "
                             f"{self.weight_decay} and {self.checkpoint_minutes}")
        if not 0.0 <= self.lr_decay_at <= 1.0:
            raise ValueError(f"lr_decay_at must be in [0, 1], got {self.lr_decay_at}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got "
                             f"{self.precision!r}")
        if self.resume not in (True, False, "auto"):
            raise ValueError(f"resume must be True, False or 'auto', got {self.resume!r}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        check_holdout_count(self.statistics_holdout)


SETTABLE = ("image_size", "batch_size", "lr", "seed", "pretrained", "checkpoint_every",
            "snapshot_every", "checkpoint_minutes", "log_every", "num_workers", "weight_decay",
            "clip_grad", "lr_decay_at", "lr_decay", "stop_at", "precision", "balance_classes",
            "statistics_holdout")
# keys with a flag of their own: `--set` refuses them and names the flag
FLAGS = {"model": "--model", "profile": "--profile", "encoder": "--encoder", "out": "--out",
         "data": "--data", "steps": "--steps", "epochs": "--epochs", "classes": "--classes",
         "device": "--device", "resume": "--resume", "force": "--force"}
# settings that must not change when a run is resumed
RESUME_KEYS = ("data", "data_fingerprint", "classes", "image_size", "batch_size", "lr", "seed",
               "num_steps", "weight_decay", "clip_grad", "lr_decay_at", "lr_decay", "world_size",
               "balance_classes", "statistics_holdout", "statistics_holdout_files")
# the value a checkpoint written before a resume key existed had for it (and, for
# statistics_holdout_files, a run without a hold-out, which records none)
RESUME_DEFAULTS = {"balance_classes": False, "statistics_holdout": 0,
                   "statistics_holdout_files": {}}


def _refuse_flag_keys(sets: dict) -> None:
    for key in sets:
        if key in FLAGS:
            raise ValueError(f"--set {key}=...: {key} is not a --set key; use {FLAGS[key]}")


def typed_model_sets(sets: dict, model_fields: Mapping[str, object]) -> dict:
    """`--set` pairs of model config fields only (bench model), typed like config_from_sets."""
    _refuse_flag_keys(sets)
    for key in sets:
        if key not in model_fields:
            raise ValueError(f"--set {key}=...: unknown key; model config keys: "
                             f"{sorted(model_fields)}")
    return {k: coerce_setting(k, v, model_fields[k]) for k, v in sets.items()}


def config_from_sets(cfg: TrainConfig, sets: dict,
                     model_fields: Mapping[str, object] | set[str]) -> TrainConfig:
    """Apply `--set key=value` pairs: training fields in SETTABLE, else model config fields,
    each converted to its field's type (`config_tools.coerce_setting`).

    Args:
        cfg: the config to update (a copy is returned).
        sets: parsed key -> value (text or typed).
        model_fields: {name: type} of the chosen model's config fields
            (`model.detectors.model_config_fields`); a plain set of names skips their typing.

    Raises:
        ValueError: a key with its own flag (names the flag), an unknown key, or a value of the
            wrong type (names the key).
    """
    values = asdict(cfg)
    overrides = dict(cfg.model_overrides)
    train_types = field_types(TrainConfig)
    _refuse_flag_keys(sets)
    for key, value in sets.items():
        if key in SETTABLE:
            values[key] = coerce_setting(key, value, train_types[key])
        elif key in model_fields:
            typed = isinstance(model_fields, Mapping)
            overrides[key] = coerce_setting(key, value, model_fields[key]) if typed else value
        else:
            raise ValueError(f"--set {key}=...: unknown key. Training keys: {list(SETTABLE)}; "
                             f"model config keys: {sorted(model_fields)}")
    values["model_overrides"] = overrides
    return TrainConfig(**{f.name: values[f.name] for f in fields(TrainConfig)})
