"""Checkpoints: safetensors tensors + one JSON manifest, written atomically, nothing pickled.

A run directory holds

    checkpoint.json                 the manifest (the commit point): model name and config,
                                    profile, step, RNG states, data settings, metrics history,
                                    optimizer scalars, and the names + SHA-256 of the files below
    weights-step<NNNNNNN>.safetensors     the model's full state dict (frozen encoder included, so
                                    evaluation never needs the pretrained weights again)
    optimizer-step<NNNNNNN>.safetensors   the optimizer's per-parameter tensors (AdamW moments)
    snapshots/step<NNNNNNN>/        weights kept along the way (`save_snapshot`): each one a run
                                    directory of its own (manifest + weights, no optimizer), so
                                    `evaluate --run RUN/snapshots/stepNNNNNNN` scores it and a
                                    metric-vs-steps curve needs no test-set model selection

To ship a trained detector, `model.export.export_detector` writes one compact file from a run
directory: the weights without the optimizer and without a pretrained frozen encoder.

`save_checkpoint` writes the tensor files under step-numbered names, then replaces
`checkpoint.json` in one `os.replace` (temp file in the same directory, fsync, rename, directory
fsync), and only then deletes the files of the previous step. A crash at any moment therefore
leaves a manifest that points at complete files: the previous checkpoint or the new one.

Glossary: `state` the model's state dict; `optim_tensors` / `optim_meta` the optimizer state dict
split into tensors (safetensors) and JSON scalars; `meta` the JSON manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mambaadv2_ref.config import DETECTORS
from mambaadv2_ref.config_tools import model_config_diff

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A checkpoint read back from a run directory.

    Args:
        meta: the JSON manifest (see module docstring).
        state: model state dict, name -> tensor.
        optimizer_state: optimizer state dict rebuilt from tensors + JSON, or None if not saved.
    """

    meta: dict
    state: dict[str, torch.Tensor]
    optimizer_state: dict | None = field(default=None)

    @property
    def step(self) -> int:
        return int(self.meta["step"])


# ----------------------------------------------------------------------------- atomic files
def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry (the rename) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Write `path` atomically: `write(tmp_path)` fills a temp file, then fsync + os.replace.

    Args:
        path: final file path.
        write: callable taking the temporary path (same directory) and writing the content.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json(path: Path, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(obj, indent=1) + "\n"))


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of the bytes of file `path`, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """Python, NumPy and torch (CPU, CUDA) RNG states as JSON-ready lists."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(py_state), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states written by `rng_state`."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ----------------------------------------------------------------------------- optimizer state
def split_optimizer_state(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and JSON scalars.

    Args:
        sd: {"state": {param_id: {key: tensor | number}}, "param_groups": [...]}.

    Returns:
        tensors: "state.<param_id>.<key>" -> tensor; meta: {"scalars": {...}, "param_groups"}.
    """
    tensors, scalars = {}, {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            name = f"state.{pid}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().contiguous().cpu()
            elif isinstance(value, (bool, int, float)) or value is None:
                scalars[name] = value
            else:
                raise TypeError(f"optimizer state {name} has unsupported type {type(value)}")
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of `split_optimizer_state`."""
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------- save / load
def save_checkpoint(run_dir, model: torch.nn.Module, optimizer=None, *, step: int,
                    meta: dict) -> Path:
    """Save model (+ optimizer) state and `meta` to `run_dir`, atomically (module docstring).

    Args:
        run_dir: run directory (created if missing).
        model: the detector; its full `state_dict()` is saved.
        optimizer: optional torch optimizer.
        step: number of optimisation steps done.
        meta: JSON-ready dict; must hold "model" (one of DETECTORS) and "model_config".

    Returns:
        path of the manifest.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if meta.get("model") not in DETECTORS:
        raise ValueError(f"meta['model'] must be one of {DETECTORS}, got {meta.get('model')!r}")
    files = {}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    files["weights"] = _save_tensors(run_dir, f"weights-step{step:07d}.safetensors", state)
    optim_meta = None
    if optimizer is not None:
        tensors, optim_meta = split_optimizer_state(optimizer.state_dict())
        files["optimizer"] = _save_tensors(run_dir, f"optimizer-step{step:07d}.safetensors",
                                           tensors)
    manifest = {**meta, "format": FORMAT_VERSION, "step": int(step), "rng": rng_state(),
                "optimizer": optim_meta,
                "files": {k: {"name": p.name, "sha256": file_sha256(p)} for k, p in files.items()}}
    write_json(run_dir / MANIFEST, manifest)
    keep = {p.name for p in files.values()}
    for stale in [*run_dir.glob("weights-step*.safetensors"),
                  *run_dir.glob("optimizer-step*.safetensors")]:
        if stale.name not in keep:  # the previous step's files, or a crashed save's
            stale.unlink(missing_ok=True)
    return run_dir / MANIFEST


SNAPSHOTS = "snapshots"


def save_snapshot(run_dir) -> Path:
    """Keep the weights of the checkpoint now in `run_dir` as RUN/snapshots/step<NNNNNNN>.

    The snapshot is a run directory that `load_detector` / `evaluate` read like any other: the
    manifest with `optimizer` None and only the weights file, hard-linked to the checkpoint's
    (copied where links are not possible), so it costs no disk until the run moves on. Written
    atomically (manifest last); an existing snapshot of the same step is left as it is.

    Returns:
        the snapshot directory.
    """
    run_dir = Path(run_dir)
    meta = read_manifest(run_dir)
    snap = run_dir / SNAPSHOTS / f"step{int(meta['step']):07d}"
    if (snap / MANIFEST).is_file():
        return snap
    snap.mkdir(parents=True, exist_ok=True)
    entry = meta["files"]["weights"]
    source, target = run_dir / entry["name"], snap / entry["name"]
    if not target.exists():
        tmp = snap / f".{entry['name']}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or no hard links: a copy
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    write_json(snap / MANIFEST, {**meta, "optimizer": None, "snapshot_of": str(run_dir),
                                 "files": {"weights": entry}})
    return snap


def list_snapshots(run_dir) -> list[Path]:
    """The complete snapshots of `run_dir` (those with a manifest), by step."""
    folder = Path(run_dir) / SNAPSHOTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step*") if (p / MANIFEST).is_file())


def _save_tensors(run_dir: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    path = run_dir / name
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    return path


def read_manifest(run_dir: Path) -> dict:
    """The manifest (checkpoint.json) of `run_dir` as a dict, without reading any tensors;
    a missing or unreadable manifest is an error naming the file."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir}: {MANIFEST} is missing "
                                "(train a model there first: python -m mambaadv2_ref train "
                                f"--out {run_dir})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    return meta


def load_checkpoint(run_dir, *, model_name: str | None = None,
                    model_config: dict | None = None, with_optimizer: bool = False) -> Checkpoint:
    """Read and validate the checkpoint of `run_dir`.

    Args:
        run_dir: run directory holding `checkpoint.json`.
        model_name: if given, the stored model name must equal it.
        model_config: if given, the stored model config must equal it (differences are listed),
            except for the compute-only `config.COMPUTE_SETTINGS`.
        with_optimizer: also read the optimizer tensors.

    Returns:
        a `Checkpoint`. Raises FileNotFoundError / ValueError with the reason otherwise.
    """
    run_dir = Path(run_dir)
    meta = read_manifest(run_dir)
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{run_dir / MANIFEST}: format {meta.get('format')!r} is not "
                         f"{FORMAT_VERSION}")
    for key in ("model", "model_config", "step", "files"):
        if key not in meta:
            raise ValueError(f"{run_dir / MANIFEST} lacks the key {key!r}")
    if meta["model"] not in DETECTORS:
        raise ValueError(f"checkpoint model {meta['model']!r} is not one of {DETECTORS}")
    if model_name is not None and meta["model"] != model_name:
        raise ValueError(f"checkpoint in {run_dir} holds model {meta['model']!r}, "
                         f"not {model_name!r}")
    if model_config is not None:
        diff = model_config_diff(meta["model_config"], model_config)
        if diff:
            raise ValueError(f"model config differs from the checkpoint in {run_dir}: "
                             + "; ".join(diff))
    state = _load_tensors(run_dir, meta["files"]["weights"])
    optimizer_state = None
    if with_optimizer and meta.get("optimizer") is not None:
        tensors = _load_tensors(run_dir, meta["files"]["optimizer"])
        optimizer_state = join_optimizer_state(tensors, meta["optimizer"])
    return Checkpoint(meta=meta, state=state, optimizer_state=optimizer_state)


def _load_tensors(run_dir: Path, entry: dict) -> dict[str, torch.Tensor]:
    path = run_dir / entry["name"]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} named in {MANIFEST} is missing")
    if file_sha256(path) != entry["sha256"]:
        raise ValueError(f"checkpoint file {path} does not match the SHA-256 in {MANIFEST} "
                         "(corrupted or overwritten)")
    return load_file(str(path))
