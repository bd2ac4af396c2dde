"""Prediction: anomaly heatmap overlays, image scores and normal/anomalous decisions for files.

`predict(run_dir, images, out)` prints what it is about to do at once, then for every image
appends a row to `scores.csv` (flushed per image, so an interruption keeps every row done) with
columns path, score, threshold and is_anomalous (score >= threshold; both empty when no threshold
is stored), and writes `<name>_overlay.png` (the input beside the input overlaid with its anomaly
map, drawn by `overlay.plot_heatmap_overlay`, pixels above the threshold outlined). Every file
is written atomically (temp file + os.replace); stale temp files of an interrupted run are
removed first. A file that cannot be read is skipped and named (at once, and in predict.json); a
NaN/inf anomaly map stops with an error naming the image.

Threshold: the F1-optimal image threshold that `evaluate` stored in RUN_DIR/metrics.json for the
chosen class (`cls`), or for the run's only evaluated class (for an exported detector
FILE.safetensors: FILE.metrics.json, see model.export); refused when metrics.json was
computed at another training step than the checkpoint's. Colour scale: every overlay uses ONE
scale, the [min, max] of the class's test maps stored by `evaluate` (all classes' when no class
is chosen), else the [min, max] over this call's maps (then the overlays are drawn after all
images are scored). `predict.json` records the threshold, the scale and the skipped files.

With `readout="z"` (`predict --readout z`) each map is read as Z(u) = (A(u) - mu(u)) /
(sigma(u) + eps) with the class's statistics that `evaluate --readout z` saved (eq. Z1 of
`model.readout`, from the good training images), the score is max_u Z, and the threshold and
colour scale come from metrics_z.json; it needs one class (`cls`, or a run evaluated on one).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mambaadv2_ref.checkpoint import atomic_write, write_json
from mambaadv2_ref.data.mvtec import IMAGE_EXTENSIONS
from mambaadv2_ref.data.transforms import denormalise, load_image
from mambaadv2_ref.evaluate import (
    READOUTS,
    check_finite_maps,
    load_readout_statistics,
    readout_output,
    remove_stale_temps,
)
from mambaadv2_ref.model.detectors import load_detector
from mambaadv2_ref.model.export import run_output
from mambaadv2_ref.model.readout import z_maps
from mambaadv2_ref.overlay import plot_heatmap_overlay
from mambaadv2_ref.runtime import resolve_device

FIELDS = ("path", "score", "threshold", "is_anomalous")


def list_images(images) -> list[Path]:
    """An image file, or the (non-hidden) png/jpg files directly inside a folder, sorted."""
    path = Path(images)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        raise FileNotFoundError(f"images: {str(path)!r} is neither a file nor a folder")
    if not files:
        raise ValueError(f"images: no {'/'.join(IMAGE_EXTENSIONS)} files in {str(path)!r}")
    return files


def _evaluation(run_dir: Path, step: int | None, readout: str = "raw") -> dict:
    """RUN_DIR/metrics.json or FILE.metrics.json (metrics_z.json for readout z; {} when
    absent); an evaluation of another step is an error."""
    path = run_output(run_dir, readout_output("metrics", readout, ".json"))
    if not path.exists():
        return {}
    metrics = json.loads(path.read_text())
    evaluated = metrics.get("run", {}).get("step")
    if step is not None and evaluated is not None and evaluated != step:
        raise ValueError(f"{path} was computed at training step {evaluated} but the checkpoint "
                         f"is at step {step}: its thresholds are stale; run evaluate again")
    return metrics


def stored_threshold(run_dir: Path, cls: str | None, step: int | None = None,
                     readout: str = "raw") -> tuple[str | None, float | None, str]:
    """(class, threshold, note) from RUN_DIR/metrics.json; threshold None when unavailable.

    Args:
        run_dir: run directory or exported file.
        cls: class whose threshold to use (None: the only one).
        step: the checkpoint's step; a metrics.json of another step is refused.
        readout: "raw" (metrics.json) or "z" (metrics_z.json).

    Returns:
        the class, its threshold, and one sentence saying where the threshold comes from or why
        there is none.

    Raises:
        ValueError: `cls` given but the evaluation has no threshold for it, or stale metrics.
    """
    thresholds = _evaluation(run_dir, step, readout).get("image_thresholds", {})
    metrics_path = run_output(run_dir, readout_output("metrics", readout, ".json"))
    evaluate_first = "run evaluate" + ("" if readout == "raw" else f" --readout {readout}")
    if cls is not None:
        if cls not in thresholds:
            raise ValueError(f"--class {cls!r}: no stored threshold in "
                             f"{metrics_path} (evaluated "
                             f"classes: {sorted(thresholds) or f'none, {evaluate_first} first'})")
        return cls, float(thresholds[cls]), f"threshold of class {cls!r}: {thresholds[cls]:.4g}"
    if len(thresholds) == 1:
        (name, value), = thresholds.items()
        return name, float(value), f"threshold of class {name!r}: {value:.4g}"
    if thresholds:
        why = f"the run was evaluated on several classes {sorted(thresholds)}: pass --class"
    else:
        why = f"{metrics_path} has no threshold: {evaluate_first} first"
    return None, None, f"NO THRESHOLD ({why}); scores only, no normal/anomalous decision"


def stored_colour_scale(run_dir: Path, cls: str | None, readout: str = "raw"
                        ) -> tuple[float, float] | None:
    """[min, max] of the evaluated test maps of `cls` (all classes when None), or None."""
    ranges = _evaluation(run_dir, None, readout).get("map_range", {})
    chosen = [ranges[cls]] if cls in ranges else [] if cls is not None else list(ranges.values())
    if not chosen:
        return None
    return min(r[0] for r in chosen), max(r[1] for r in chosen)


def _save_overlay(path: Path, out: Path, size: int, amap: np.ndarray, score: float,
                  threshold: float | None, scale: tuple[float, float]) -> None:
    """Draw one overlay on the common colour scale and write it atomically."""
    x = load_image(path, size)
    title = f"score {score:.3g}" + (f" (threshold {threshold:.3g})" if threshold is not None
                                    else "")
    image = denormalise(x).clamp(0, 1).permute(1, 2, 0)
    fig = plot_heatmap_overlay(image, amap, threshold=threshold, title=title)
    fig.axes[1].images[-1].set_clim(*scale)  # the overlay (its colorbar follows)
    atomic_write(out / f"{path.name}_overlay.png",
                 lambda tmp: fig.savefig(tmp, format="png", dpi=100))


@torch.no_grad()
def predict(run_dir, images, out, cls: str | None = None, device="auto",
            readout: str = "raw") -> list[dict]:
    """Score image files with the detector of `run_dir`; write overlays and scores.csv to `out`.

    Args:
        run_dir: trained run directory, or an exported FILE.safetensors.
        images: an image file or a folder of images.
        out: output folder (created).
        cls: class whose stored threshold decides is_anomalous (default: the only class).
        device: "auto", "cpu" or "cuda[:N]".
        readout: "raw" (the model's map A) or "z" (A standardised by the class's training
            statistics, saved by `evaluate --readout z`).

    Returns:
        one dict per scored image: path, score, threshold, is_anomalous ("" when no threshold).

    Raises:
        ValueError: no image could be read, a NaN/inf map (naming the image), stale metrics;
            for readout z: no class or no saved statistics (before any image is scored).
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {sorted(READOUTS)}, got {readout!r}")
    files = list_images(images)
    out = Path(out)
    print(f"predict: scoring {len(files)} image(s) from {images} with run {run_dir}; writing "
          f"to {out} as it goes", flush=True)
    device = resolve_device(device)
    model, meta = load_detector(run_dir, device=device)
    cls, threshold, note = stored_threshold(run_dir, cls, meta.get("step"), readout)
    stats = None
    if readout == "z":
        if cls is None:
            raise ValueError("--readout z reads each map with one class's statistics: pass "
                             f"--class ({note})")
        stats = load_readout_statistics(run_dir, cls, meta.get("step"))
        note += f"; z readout with the statistics of class {cls!r}" + (
            f" (from its {stats['images']} held-out good training images)"
            if stats["split"] != "train" else "")
    print(f"predict: {note}", flush=True)
    scale = stored_colour_scale(run_dir, cls, readout)
    source = "the evaluated test maps" if scale else "this call's maps"
    size = meta["train"]["image_size"]
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    rows, skipped, pending = [], [], []
    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for path in tqdm(files, desc="predict", leave=False):
            try:
                x = load_image(path, size)
            except (ValueError, OSError) as err:
                skipped.append({"path": str(path), "reason": str(err)})
                print(f"predict: skipped {err}", file=sys.stderr, flush=True)
                continue
            maps, scores = model.anomaly_map(x[None].to(device))
            amap, score = maps[0].float().cpu().numpy(), float(scores[0])
            if stats is not None:  # eq. (Z1) of model.readout, then max_u Z
                amap = z_maps(amap[None], stats, cls)[0].astype(np.float32)
                score = float(amap.max())
            check_finite_maps(amap[None], np.array([score]), [path])
            row = {"path": str(path), "score": score, "threshold": "", "is_anomalous": ""}
            if threshold is not None:
                row.update(threshold=threshold, is_anomalous=int(score >= threshold))
            writer.writerow(row)
            f.flush()
            rows.append(row)
            if scale:
                _save_overlay(path, out, size, amap, score, threshold, scale)
            else:
                pending.append((path, amap, score))
    if pending:
        scale = (min(float(a.min()) for _, a, _ in pending),
                 max(float(a.max()) for _, a, _ in pending))
        for path, amap, score in pending:
            _save_overlay(path, out, size, amap, score, threshold, scale)
    write_json(out / "predict.json", {
        "run": str(Path(run_dir).resolve()), "readout": readout,
        "threshold": threshold, "threshold_class": cls,
        "threshold_note": note, "scored": len(rows), "skipped": skipped,
        "colour_scale": {"vmin": scale[0], "vmax": scale[1], "source": source} if scale else None})
    if not rows:
        raise ValueError(f"images: none of the {len(files)} file(s) could be read (see "
                         f"{out / 'predict.json'})")
    print(f"predict: scored {len(rows)} images, skipped {len(skipped)}; {note}; every overlay on "
          f"one colour scale [{scale[0]:.4g}, {scale[1]:.4g}] (from {source}); overlays and "
          f"scores.csv in {out}")
    return rows
