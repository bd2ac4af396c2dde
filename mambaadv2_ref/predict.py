"""Prediction: anomaly heatmap overlays and image scores for arbitrary image files.

`predict(run_dir, images, out)` writes, for every image, `<name>_overlay.png` (the input beside
the input overlaid with its anomaly map, drawn by `overlay.plot_heatmap_overlay`) and one
`scores.csv` with columns path, score and, when a threshold is known, threshold and
is_anomalous (score >= threshold). The threshold is the F1-optimal image threshold that
`evaluate` stored in RUN_DIR/metrics.json for the chosen class (`cls`), or for the run's only
class; the overlay then outlines the pixels above it (the image score is the map's maximum).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from mambaadv2_ref.data.mvtec import IMAGE_EXTENSIONS
from mambaadv2_ref.data.transforms import denormalise, load_image
from mambaadv2_ref.model.detectors import load_detector
from mambaadv2_ref.overlay import plot_heatmap_overlay
from mambaadv2_ref.runtime import resolve_device


def list_images(images) -> list[Path]:
    """An image file, or the image files (png/jpg) directly inside a folder, sorted."""
    path = Path(images)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        raise FileNotFoundError(f"images: {str(path)!r} is neither a file nor a folder")
    if not files:
        raise ValueError(f"images: no {'/'.join(IMAGE_EXTENSIONS)} files in {str(path)!r}")
    return files


def stored_threshold(run_dir: Path, cls: str | None) -> tuple[str | None, float | None]:
    """(class, threshold) from RUN_DIR/metrics.json, or (None, None) when unavailable.

    Raises:
        ValueError: `cls` given but the evaluation has no threshold for it.
    """
    path = Path(run_dir) / "metrics.json"
    thresholds = json.loads(path.read_text()).get("image_thresholds", {}) if path.exists() else {}
    if cls is not None:
        if cls not in thresholds:
            raise ValueError(f"--class {cls!r}: no stored threshold (evaluated classes: "
                             f"{sorted(thresholds) or 'none, run evaluate first'})")
        return cls, float(thresholds[cls])
    if len(thresholds) == 1:
        (name, value), = thresholds.items()
        return name, float(value)
    return None, None


@torch.no_grad()
def predict(run_dir, images, out, cls: str | None = None, device="auto") -> list[dict]:
    """Score image files with the detector of `run_dir`; write overlays and scores.csv to `out`.

    Args:
        run_dir: trained run directory.
        images: an image file or a folder of images.
        out: output folder (created).
        cls: class whose stored threshold decides is_anomalous (default: the only class).
        device: "auto", "cpu" or "cuda[:N]".

    Returns:
        one dict per image: path, score (+ threshold, is_anomalous when known).
    """
    device = resolve_device(device)
    files = list_images(images)
    cls, threshold = stored_threshold(run_dir, cls)
    model, meta = load_detector(run_dir, device=device)
    size = meta["train"]["image_size"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in files:
        x = load_image(path, size)
        maps, scores = model.anomaly_map(x[None].to(device))
        amap, score = maps[0].float().cpu(), float(scores[0])
        title = f"score {score:.3g}"
        if threshold is not None:
            title += f" (threshold {threshold:.3g})"
        image = denormalise(x).clamp(0, 1).permute(1, 2, 0)
        fig = plot_heatmap_overlay(image, amap, threshold=threshold, title=title)
        fig.savefig(out / f"{path.name}_overlay.png", dpi=100)
        row = {"path": str(path), "score": score}
        if threshold is not None:
            row.update(threshold=threshold, is_anomalous=int(score >= threshold))
        rows.append(row)
    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    note = f" (threshold of class {cls!r}: {threshold:.4g})" if threshold is not None else ""
    print(f"scored {len(rows)} images{note}; overlays and scores.csv in {out}")
    return rows
