"""What a training run is: `TrainConfig`, the keys `--set` may change, the keys a resume keeps.

`train.train(cfg)` runs one; `config_from_sets` applies `--set key=value` pairs to one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


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
        resume: continue from the checkpoint in `out`.
        model_overrides: model config fields to override (from `--set`).
        image_size, batch_size, lr: None = the profile's.
        seed: seeds python, numpy, torch and the data order.
        pretrained: load the encoder's pretrained weights.
        checkpoint_every: save every N steps (0 = only at the end).
        log_every: steps between history records.
        num_workers: DataLoader worker processes.
        weight_decay, clip_grad, lr_decay_at, lr_decay: the optimiser recipe (book appendix A.1).
        stop_at: stop after this many steps as if interrupted (time-boxed runs, resume tests).
        precision: "auto" (bf16 autocast on GPUs with native bf16, else float32), "bf16", "fp32".
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
    resume: bool = False
    model_overrides: dict = field(default_factory=dict)
    image_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 42
    pretrained: bool = True
    checkpoint_every: int = 500
    log_every: int = 10
    num_workers: int = 0
    weight_decay: float = 1e-4
    clip_grad: float = 5.0
    lr_decay_at: float = 0.8
    lr_decay: float = 0.1
    stop_at: int | None = None
    precision: str = "auto"


SETTABLE = ("image_size", "batch_size", "lr", "seed", "pretrained", "checkpoint_every",
            "log_every", "num_workers", "weight_decay", "clip_grad", "lr_decay_at", "lr_decay",
            "stop_at", "precision")
# settings that must not change when a run is resumed
RESUME_KEYS = ("data", "classes", "image_size", "batch_size", "lr", "seed", "num_steps",
               "weight_decay", "clip_grad", "lr_decay_at", "lr_decay", "world_size")


def config_from_sets(cfg: TrainConfig, sets: dict, model_fields: set[str]) -> TrainConfig:
    """Apply `--set key=value` pairs: training fields in SETTABLE, else model config fields.

    Args:
        cfg: the config to update (a copy is returned).
        sets: parsed key -> value.
        model_fields: names of the chosen model's config fields.
    """
    values = asdict(cfg)
    overrides = dict(cfg.model_overrides)
    for key, value in sets.items():
        if key in SETTABLE:
            values[key] = value
        elif key in model_fields:
            overrides[key] = value
        else:
            raise ValueError(f"--set {key}=...: unknown key. Training keys: {list(SETTABLE)}; "
                             f"model config keys: {sorted(model_fields)}")
    values["model_overrides"] = overrides
    return TrainConfig(**{f.name: values[f.name] for f in fields(TrainConfig)})
