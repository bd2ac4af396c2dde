"""The three detectors by name: build one, or rebuild one from a checkpoint.

`build_detector` builds mambaadv2 / mambaad (`build_model`) or PatchCore by name;
`rebuild_detector` builds the one a manifest describes; `load_detector` rebuilds one from a run
directory's manifest (the encoder weights come from the checkpoint, never downloaded again) and
loads its state, or reads an exported detector file (`model.export`); `model_config_fields`
lists the config fields of a detector (what `--set` may override).
"""

from __future__ import annotations

import torch

from mambaadv2_ref.checkpoint import load_checkpoint
from mambaadv2_ref.config import DETECTORS, ModelConfig, preset
from mambaadv2_ref.config_tools import field_types, model_config_diff
from mambaadv2_ref.model.factory import build_model
from mambaadv2_ref.model.patchcore import PatchCore, PatchCoreConfig


def _check_name(model: str) -> None:
    if model not in DETECTORS:
        raise ValueError(f"model must be one of {list(DETECTORS)}, got {model!r}")


def model_config_fields(model: str) -> dict[str, object]:
    """{name: type} of the config fields of detector `model` (what `--set` may override)."""
    _check_name(model)
    return field_types(PatchCoreConfig if model == "patchcore" else ModelConfig)


def build_detector(model: str, profile: str = "tiny", encoder: str | None = None,
                   pretrained: bool = True, overrides: dict | None = None) -> torch.nn.Module:
    """Build a detector by name: `build_model` for mambaadv2/mambaad, else `PatchCore`.

    Args:
        model: one of config.DETECTORS.
        profile: size preset; PatchCore takes the preset's encoder and image size.
        encoder: encoder name (None = the preset's).
        pretrained: load the encoder's ImageNet weights.
        overrides: config fields to override.
    """
    _check_name(model)
    overrides = dict(overrides or {})
    if model != "patchcore":
        return build_model(model=model, profile=profile, encoder=encoder, pretrained=pretrained,
                           **overrides)
    base = preset(profile)
    values = {"encoder": encoder or base.encoder, "image_size": base.image_size, **overrides}
    return PatchCore(PatchCoreConfig.from_dict(values), pretrained=pretrained)


def rebuild_detector(meta: dict, pretrained: bool, source) -> torch.nn.Module:
    """Build the (untrained) detector a manifest describes and check its config is the stored one.

    Args:
        meta: a manifest holding "model" (one of DETECTORS) and "model_config" (a run's
            checkpoint.json, or an exported detector's sidecar).
        pretrained: load the encoder's pretrained weights (False: random, to be overwritten).
        source: the run directory or file the manifest came from (named in errors).

    The rebuilt model runs its HSS mixers eagerly (`compile_mixer="off"`, so no
    `compile_memory_budget` either), whatever the run trained with.

    Raises:
        ValueError: the rebuilt config differs from the stored one (the differences listed).
    """
    stored = dict(meta["model_config"])
    name = meta["model"]
    if name == "patchcore":  # a config stored before an option existed: that option's default
        stored = PatchCoreConfig.complete(stored)
        fixed = {}
        rest = stored
    else:
        fixed = {k: stored.pop(k) for k in ("profile", "encoder") if k in stored}
        stored.pop("model", None)
        rest = {k: v for k, v in stored.items() if k != "pretrained"}
        # a rebuilt detector runs eagerly: compiling its mixers (a compute-only setting, the
        # same function) pays back over many training steps, not in one evaluation
        rest["compile_mixer"] = "off"
        rest["compile_memory_budget"] = None  # a budget of compiled mixers: none compiled
    model = build_detector(name, profile=fixed.get("profile", "tiny"),
                           encoder=fixed.get("encoder"), pretrained=pretrained, overrides=rest)
    reference = stored if name == "patchcore" else meta["model_config"]
    diff = [d for d in model_config_diff(reference, model.config.to_dict())
            if not d.startswith("pretrained:")]
    if diff:
        raise ValueError(f"the model rebuilt from {source} differs from its stored config: "
                         + "; ".join(diff))
    return model


def load_detector(run_dir, device="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained detector: from a run directory, or from an exported .safetensors file.

    A run directory's checkpoint holds the whole state dict (frozen encoder included, so nothing
    is downloaded); an exported file (`model.export`) is handed to `export.load_exported`, which
    rebuilds the pretrained encoder and checks its fingerprint.

    Args:
        run_dir: run directory holding checkpoint.json, or an exported FILE.safetensors.
        device: where the model goes.

    Returns:
        (model in eval mode on `device`, the manifest).
    """
    from mambaadv2_ref.model import export

    if export.is_exported(run_dir):
        return export.load_exported(run_dir, device=device)
    ckpt = load_checkpoint(run_dir)
    model = rebuild_detector(ckpt.meta, pretrained=False, source=run_dir)
    try:
        model.load_state_dict(ckpt.state)
    except RuntimeError as err:
        raise ValueError(f"weights in {run_dir} do not fit model {ckpt.meta['model']!r}: "
                         f"{err}") from err
    return model.to(device).eval(), ckpt.meta
