"""Evaluation: per-class metrics of a trained run.

`evaluate` first opens every test image and mask (data.check_dataset: a bad file is named before
any work), then runs `anomaly_map` over each class's test split, computes the seven metrics and
mAD (mambaadv2_ref.metrics), prints a per-class table and writes RUN_DIR/metrics.json (for an
exported detector FILE.safetensors: FILE.metrics.json, and FILE.maps/ below; model.export):

    {"classes": {cls: {"I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO",
                       "mAD"}},          null where undefined for the class (see "undefined")
     "mean": {same keys},                over the classes listed in "mean_classes"
     "mean_classes": {metric: [classes the mean covers]},
     "undefined": {cls: {metric: reason}} (only classes with an undefined metric),
     "aupro_definition": {"name": "mambaad" | "mvtec", "meaning": ...},
     "readout": {"name": "raw" | "z", "meaning": ...}, with z also what its statistics came
                 from (statistics_from, split, train_images per class, eps; for a run with
                 `statistics_holdout` also its held-out files),
     "pixel_method": "exact" | "binned",
     "image_thresholds": {cls: F1-optimal image-score threshold on the test set},
     "map_range": {cls: [min, max] of the test maps} (predict's common colour scale),
     "run": {images, seconds, images_per_s (model time only), device, data, image_size}}

With `readout="z"` (`evaluate --readout z`) every metric is read from the maps normalised by
the class's good training images, Z(u) = (A(u) - mu(u)) / (sigma(u) + eps) (eq. Z1 of
`model.readout`), the image score being max_u Z(u); it writes metrics_z.json (and maps_z/),
with a "readout" entry saying what the statistics came from, so the raw metrics.json is never
overwritten, and each class's statistics to readout_z/<cls>.npz for `predict --readout z`.
A run trained with `--set statistics_holdout=K` takes them from its K held-out good training
images per class instead (`data.holdout`: never trained on, so they are read as any new image
is); metrics_z.json says so ("readout": statistics_from, split "train (held out)", held_out), and
a held-out file missing on disk is an error naming it, before any work.

A NaN or infinite anomaly map is an error naming its images, never a number. With `save_maps`,
RUN_DIR/maps/<cls>.npz holds scores (N,), labels (N,), maps (N, H, W), masks (N, H, W) and paths
(N,), each written atomically (a hidden temp file, then os.replace); hidden temp files an
interrupted save left behind are removed first.

(The speed benchmark of a model is `studies.speed.bench_model`.)
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mambaadv2_ref.checkpoint import atomic_write, write_json
from mambaadv2_ref.data import MVTecDataset, check_dataset, embedded_dataset_root
from mambaadv2_ref.data.holdout import holdout_paths
from mambaadv2_ref.metrics import (
    AUPRO_DEFINITIONS,
    aggregate,
    compute_metrics,
    covered_classes,
    f1max_threshold,
    undefined_metrics,
)
from mambaadv2_ref.model.detectors import load_detector
from mambaadv2_ref.model.export import run_output
from mambaadv2_ref.model.readout import HOLDOUT_SPLIT, pixel_statistics, readout_record, z_maps
from mambaadv2_ref.runtime import resolve_device
from mambaadv2_ref.timing import synchronize

METRIC_KEYS = ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO", "mAD")
PIXEL_METHODS = {  # peak memory per test pixel: the kept maps and masks (5 bytes) + the metrics
    "exact": "every pixel value a threshold; up to ~58 bytes per test pixel (~80 for mvtec AUPRO)",
    "binned": "4096-bin histograms; ~7 bytes per test pixel",
}
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # checkpoint.atomic_write's temp files


def check_finite_maps(maps: np.ndarray, scores: np.ndarray, paths) -> None:
    """Raise naming the images whose anomaly map or score holds NaN/inf (a silent NaN otherwise
    turns every metric and threshold wrong).

    Args:
        maps: (N, H, W). scores: (N,). paths: (N,) image paths.
    """
    bad = ~np.isfinite(maps).reshape(len(maps), -1).all(axis=1) | ~np.isfinite(scores)
    if bad.any():
        names = [str(paths[i]) for i in np.flatnonzero(bad)]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise ValueError(f"the anomaly map of {len(names)} image(s) holds NaN/inf values: {shown}"
                         "; the model's weights or these inputs are broken")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the hidden temp files (.NAME.XXXXXXXX.tmp) an interrupted atomic write left in
    `folder`; return them."""
    stale = [p for p in Path(folder).iterdir() if p.is_file() and _TEMP_NAME.match(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_npz_atomic(path: Path, **arrays) -> None:
    """np.savez_compressed to `path` through a temp file in the same folder and os.replace, so
    a full disk or a kill never leaves a truncated .npz under the final name."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(Path(path), write)


@torch.no_grad()
def predict_split(model, dataset, device, batch_size: int = 8, desc: str = "") -> dict:
    """Anomaly maps and scores of every item of `dataset`.

    Args:
        model: anything with `anomaly_map(images) -> (maps (B,H,W), scores (B,))`.
        dataset: items with image (3,S,S), mask (1,S,S), label, path.

    Returns:
        dict scores (N,), labels (N,), maps (N,S,S) float32, masks (N,S,S) uint8, paths (N,),
        seconds (model time only).

    Raises:
        ValueError: a NaN/inf map or score, naming the images.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = {"scores": [], "labels": [], "maps": [], "masks": [], "paths": []}
    seconds = 0.0
    for batch in tqdm(loader, desc=desc, leave=False):
        images = batch["image"].to(device)
        synchronize(device)
        t0 = time.perf_counter()
        maps, scores = model.anomaly_map(images)
        synchronize(device)
        seconds += time.perf_counter() - t0
        out["scores"].append(scores.float().cpu().numpy())
        out["maps"].append(maps.float().cpu().numpy())
        out["labels"].append(np.asarray(batch["label"]))
        out["masks"].append(batch["mask"][:, 0].numpy().astype(np.uint8))
        out["paths"].extend(batch["path"])
    result = {k: np.concatenate(v) for k, v in out.items() if k != "paths"}
    result["paths"] = np.asarray(out["paths"])
    result["seconds"] = seconds
    check_finite_maps(result["maps"], result["scores"], result["paths"])
    return result


def evaluation_root(settings: dict, data=None) -> Path:
    """The dataset root a run is tested on: `data` when given, else the one it trained on (the
    embedded dataset, or the run's `data` path). `settings`: the manifest's "train" entry."""
    if data is not None:
        return Path(data)
    if settings.get("embedded"):
        return embedded_dataset_root()
    return Path(settings["data"])


def format_table(per_class: dict, mean: dict) -> str:
    """Per-class metrics as a fixed-width text table (percent, one decimal)."""
    width = max(8, *(len(c) for c in per_class))
    head = f"{'class':<{width}} " + " ".join(f"{k:>8}" for k in METRIC_KEYS)
    rows = [f"{c:<{width}} " + " ".join(
        f"{100 * m[k]:8.1f}" if math.isfinite(m[k]) else f"{'n/a':>8}" for k in METRIC_KEYS)
        for c, m in {**per_class, "mean": mean}.items()]
    return "\n".join([head, "-" * len(head), *rows])


READOUTS = {"raw": "A: MambaAD's anomaly map, eqs. (1)-(3)",
            "z": "Z = (A - mu) / (sigma + eps), mu and sigma per pixel over the class's good "
                 "training maps (model.readout, eq. Z1); image score max_u Z"}


def readout_output(name: str, readout: str, ext: str = "") -> str:
    """The name of an evaluate output for `readout`: NAME + ext for raw (metrics.json, maps/),
    NAME_READOUT + ext otherwise (metrics_z.json, maps_z/); predict reads the same names.

    Implements: no equation.
    """
    return f"{name}{'' if readout == 'raw' else f'_{readout}'}{ext}"


def training_statistics(model, dataset, device, batch_size: int, cls: str) -> dict:
    """`model.readout.pixel_statistics` of the maps of `dataset`, one class's good training
    images (train split, or the run's held-out ones): mu, sigma, eps of eq. (Z1)."""
    return pixel_statistics(predict_split(model, dataset, device, batch_size,
                                          desc=f"train {cls}")["maps"], cls)


def holdout_of(settings: dict) -> dict[str, list[str]] | None:
    """The good training images a run held out for its z statistics: {class: [paths relative
    to the dataset root]} (`train.statistics_holdout_files`), or None for a run without a
    hold-out (`statistics_holdout` 0 or absent: every run before the setting existed).

    Implements: no equation. Raises ValueError when the run says it held images out but does
    not list them (a damaged manifest): never a silent fallback to the training images.
    """
    count = settings.get("statistics_holdout", 0) or 0
    files = settings.get("statistics_holdout_files")
    if count == 0 and not files:
        return None
    if not files or any(len(v) != count for v in files.values()):
        raise ValueError(f"the run's settings say statistics_holdout={count} but list the "
                         f"held-out images as {files!r}: its manifest is damaged")
    return files


def statistics_dataset(root: Path, cls: str, image_size: int,
                       holdout: dict[str, list[str]] | None = None) -> MVTecDataset:
    """The images eq. (Z1)'s statistics of `cls` come from: the run's held-out good training
    images when it held some out (`holdout`, from `holdout_of`), else the class's train split.

    Implements: no equation. Raises ValueError naming every held-out file missing under `root`
    (`data.holdout.holdout_paths`).
    """
    if holdout is None:
        return MVTecDataset(root, classes=[cls], split="train", image_size=image_size)
    return MVTecDataset(root, classes=[cls], split="train", image_size=image_size,
                        only=holdout_paths(holdout, root, cls))


def z_readout(model, root: Path, cls: str, image_size: int, device, batch_size: int,
              res: dict, holdout: dict[str, list[str]] | None = None) -> tuple[dict, dict]:
    """A test split's maps read as Z, eq. (Z1) of `model.readout`.

    Args:
        model, device, batch_size: as for `predict_split`.
        root, cls, image_size: the dataset root, the class and the image size S.
        res: `predict_split` of the class's test split (maps A (N, S, S)).
        holdout: the run's held-out good training images (`holdout_of`); None = none.
    Returns:
        (res with maps Z (N, S, S) float32 and scores max_u Z (N,), the class's
        `pixel_statistics` of its good training maps: the held-out ones when the run has them,
        else the train split; never a test image).
    """
    train = statistics_dataset(root, cls, image_size, holdout)
    stats = training_statistics(model, train, device, batch_size, cls)
    maps = z_maps(res["maps"], stats, cls).astype(np.float32)
    return {**res, "maps": maps, "scores": maps.reshape(len(maps), -1).max(axis=1)}, stats


def readout_statistics_path(run_dir, cls: str) -> Path:
    """RUN/readout_z/<cls>.npz (FILE.readout_z/<cls>.npz beside an exported detector): the
    class's z statistics that `evaluate --readout z` saved for `predict --readout z`."""
    return run_output(run_dir, "readout_z") / f"{cls}.npz"


def save_readout_statistics(run_dir, cls: str, stats: dict, step: int,
                            held_out: bool = False) -> None:
    """Write a class's `pixel_statistics` (mu, sigma (S, S), eps, images) and the checkpoint's
    step to `readout_statistics_path`, atomically; with `held_out` (statistics of a run's
    held-out images) also split = HOLDOUT_SPLIT (a file without it: the train split)."""
    path = readout_statistics_path(run_dir, cls)
    path.parent.mkdir(exist_ok=True)
    remove_stale_temps(path.parent)
    extra = {"split": np.str_(HOLDOUT_SPLIT)} if held_out else {}
    save_npz_atomic(path, mu=stats["mu"], sigma=stats["sigma"], eps=np.float64(stats["eps"]),
                    images=np.int64(stats["images"]), step=np.int64(step), **extra)


def load_readout_statistics(run_dir, cls: str, step: int | None) -> dict:
    """The statistics `save_readout_statistics` wrote for `cls`, as `pixel_statistics` returns
    them, plus step and split ("train", or HOLDOUT_SPLIT for a run's held-out images).
    Raises ValueError naming the file when absent or saved at another training step."""
    path = readout_statistics_path(run_dir, cls)
    if not path.is_file():
        raise ValueError(f"{path}: no z statistics for class {cls!r}; run `evaluate --run "
                         f"{run_dir} --readout z` first")
    with np.load(path) as f:
        stats = {"mu": f["mu"], "sigma": f["sigma"], "eps": float(f["eps"]),
                 "images": int(f["images"]), "step": int(f["step"]),
                 "split": str(f["split"]) if "split" in f.files else "train"}
    if step is not None and stats["step"] != step:
        raise ValueError(f"{path} was computed at training step {stats['step']} but the "
                         f"checkpoint is at step {step}: run `evaluate --readout z` again")
    return stats


def _finite_or_none(metrics: dict) -> dict:
    return {k: float(v) if math.isfinite(v) else None for k, v in metrics.items()}


def evaluate(run_dir, data=None, classes: list[str] | None = None, device="auto",
             batch_size: int = 8, save_maps: bool = False, pixel_method: str = "exact",
             aupro_definition: str = "mambaad", readout: str = "raw") -> dict:
    """Evaluate the run in `run_dir` on the test split of each class; write metrics.json.

    Args:
        run_dir: run directory holding checkpoint.json, or an exported FILE.safetensors.
        data: dataset root; None = the one the run was trained on.
        classes: classes to evaluate; None = the trained ones.
        device: "auto", "cpu" or "cuda[:N]".
        batch_size: test batch size (>= 1).
        save_maps: also write RUN_DIR/maps/<cls>.npz (atomically).
        pixel_method: "exact" (up to ~58 bytes per test pixel at peak, measured: 1725 MVTec AD
            test images at 256 x 256 need ~6.5 GB) or "binned" (4096-bin histograms, ~7 bytes
            per test pixel, an approximation: P-AUROC/AP/F1max within ~2e-3 of exact in our
            tests); PIXEL_METHODS.
        aupro_definition: "mambaad" (default, comparable with MambaAD's tables) or "mvtec" (the
            MVTec AD evaluation's); AUPRO_DEFINITIONS. Written into metrics.json.
        readout: "raw" (the model's maps A) or "z" (READOUTS: the maps normalised by each
            class's good training images; writes metrics_z.json and maps_z/ instead).

    Returns:
        the metrics.json content.

    Raises:
        ValueError: bad arguments, or a bad test file (all named, before any model work), or a
            NaN/inf anomaly map (its images named).
    """
    if pixel_method not in PIXEL_METHODS:
        raise ValueError(f"pixel_method must be one of {sorted(PIXEL_METHODS)}, got "
                         f"{pixel_method!r}")
    if aupro_definition not in AUPRO_DEFINITIONS:
        raise ValueError(f"aupro_definition must be one of {sorted(AUPRO_DEFINITIONS)}, got "
                         f"{aupro_definition!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {sorted(READOUTS)}, got {readout!r}")
    run_dir = Path(run_dir)
    device = resolve_device(device)
    model, meta = load_detector(run_dir, device=device)
    settings = meta["train"]
    root = evaluation_root(settings, data)
    classes = classes or settings["classes"]
    holdout = holdout_of(settings) if readout == "z" else None
    if holdout is not None:  # every held-out file there, before any work
        for cls in classes:
            holdout_paths(holdout, root, cls)
    check_dataset(root, classes, splits=("test",) if readout == "raw" else ("test", "train"))
    maps_dir = run_output(run_dir, readout_output("maps", readout))
    if save_maps:
        maps_dir.mkdir(exist_ok=True)
        remove_stale_temps(maps_dir)
    per_class, undefined, thresholds, ranges, images, seconds = {}, {}, {}, {}, 0, 0.0
    statistics = {}
    for cls in classes:
        dataset = MVTecDataset(root, classes=[cls], split="test",
                               image_size=settings["image_size"])
        res = predict_split(model, dataset, device, batch_size, desc=f"eval {cls}")
        if readout == "z":
            res, statistics[cls] = z_readout(model, root, cls, settings["image_size"], device,
                                             batch_size, res, holdout)
            save_readout_statistics(run_dir, cls, statistics[cls], meta["step"],
                                    held_out=holdout is not None)
        m = compute_metrics(res["scores"], res["labels"], res["maps"], res["masks"], cls=cls,
                            undefined="mark", method=pixel_method,
                            aupro_definition=aupro_definition)
        per_class[cls] = {k: float(m[k]) for k in METRIC_KEYS}
        reasons = undefined_metrics(res["labels"], res["masks"])
        if reasons:
            undefined[cls] = reasons
        if "I-F1max" not in reasons:
            thresholds[cls] = f1max_threshold(res["scores"], res["labels"])[1]
        ranges[cls] = [float(res["maps"].min()), float(res["maps"].max())]
        images += len(dataset)
        seconds += res["seconds"]
        if save_maps:
            save_npz_atomic(maps_dir / f"{cls}.npz",
                            **{k: res[k] for k in ("scores", "labels", "maps", "masks", "paths")})
    mean = {k: float(v) for k, v in aggregate(per_class).items() if k in METRIC_KEYS}
    result = {"classes": {c: _finite_or_none(m) for c, m in per_class.items()},
              "mean": _finite_or_none(mean), "mean_classes": covered_classes(per_class),
              "undefined": undefined,
              "aupro_definition": {"name": aupro_definition,
                                   "meaning": AUPRO_DEFINITIONS[aupro_definition]},
              "readout": {"name": readout, "meaning": READOUTS[readout],
                          **(readout_record(statistics, holdout) if statistics else {})},
              "pixel_method": pixel_method, "image_thresholds": thresholds, "map_range": ranges,
              "run": {"images": images, "seconds": seconds, "images_per_s": images / seconds,
                      "device": str(device), "data": str(root.resolve()),
                      "image_size": settings["image_size"], "model": meta["model"],
                      "step": meta["step"]}}
    print(format_table(per_class, mean))
    for cls, reasons in undefined.items():
        print(f"class {cls!r}: undefined {', '.join(reasons)} ({next(iter(reasons.values()))}); "
              "the means leave it out for those metrics")
    print(f"AUPRO: {aupro_definition} definition ({AUPRO_DEFINITIONS[aupro_definition]})")
    print(f"readout: {readout} ({READOUTS[readout]})")
    print(f"{images} test images, {images / seconds:.1f} images/s on {device}")
    write_json(run_output(run_dir, readout_output("metrics", readout, ".json")), result)
    return result
