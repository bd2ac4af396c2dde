"""Evaluation: per-class metrics of a trained run.

`evaluate` runs `anomaly_map` over each class's test split, computes the seven metrics and mAD
(mambaadv2_ref.metrics), prints a per-class table and writes RUN_DIR/metrics.json:

    {"classes": {cls: {"I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO",
                       "mAD"}},
     "mean": {same keys},
     "image_thresholds": {cls: F1-optimal image-score threshold on the test set},
     "run": {images, seconds, images_per_s (model time only), device, data, image_size}}

With `save_maps`, RUN_DIR/maps/<cls>.npz holds scores (N,), labels (N,), maps (N, H, W), masks
(N, H, W) and paths (N,).

(The speed benchmark of a model is `studies.speed.bench_model`.)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.data import MVTecDataset, embedded_dataset_root
from mambaadv2_ref.metrics import aggregate, compute_metrics, f1max_threshold
from mambaadv2_ref.model.detectors import load_detector
from mambaadv2_ref.runtime import resolve_device
from mambaadv2_ref.timing import synchronize

METRIC_KEYS = ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO", "mAD")


@torch.no_grad()
def predict_split(model, dataset, device, batch_size: int = 8, desc: str = "") -> dict:
    """Anomaly maps and scores of every item of `dataset`.

    Args:
        model: anything with `anomaly_map(images) -> (maps (B,H,W), scores (B,))`.
        dataset: items with image (3,S,S), mask (1,S,S), label, path.

    Returns:
        dict scores (N,), labels (N,), maps (N,S,S) float32, masks (N,S,S) uint8, paths (N,),
        seconds (model time only).
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
    return result


def format_table(per_class: dict, mean: dict) -> str:
    """Per-class metrics as a fixed-width text table (percent, one decimal)."""
    width = max(8, *(len(c) for c in per_class))
    head = f"{'class':<{width}} " + " ".join(f"{k:>8}" for k in METRIC_KEYS)
    rows = [f"{c:<{width}} " + " ".join(f"{100 * m[k]:8.1f}" for k in METRIC_KEYS)
            for c, m in {**per_class, "mean": mean}.items()]
    return "\n".join([head, "-" * len(head), *rows])


def evaluate(run_dir, data=None, classes: list[str] | None = None, device="auto",
             batch_size: int = 8, save_maps: bool = False) -> dict:
    """Evaluate the run in `run_dir` on the test split of each class; write metrics.json.

    Args:
        run_dir: run directory holding checkpoint.json.
        data: dataset root; None = the one the run was trained on.
        classes: classes to evaluate; None = the trained ones.
        device: "auto", "cpu" or "cuda[:N]".
        batch_size: test batch size.
        save_maps: also write RUN_DIR/maps/<cls>.npz.

    Returns:
        the metrics.json content.
    """
    run_dir = Path(run_dir)
    device = resolve_device(device)
    model, meta = load_detector(run_dir, device=device)
    settings = meta["train"]
    if data is not None:
        root = Path(data)
    elif settings.get("embedded"):
        root = embedded_dataset_root()
    else:
        root = Path(settings["data"])
    classes = classes or settings["classes"]
    per_class, thresholds, images, seconds = {}, {}, 0, 0.0
    for cls in classes:
        dataset = MVTecDataset(root, classes=[cls], split="test",
                               image_size=settings["image_size"])
        res = predict_split(model, dataset, device, batch_size, desc=f"eval {cls}")
        m = compute_metrics(res["scores"], res["labels"], res["maps"], res["masks"], cls=cls)
        per_class[cls] = {k: float(m[k]) for k in METRIC_KEYS}
        thresholds[cls] = f1max_threshold(res["scores"], res["labels"])[1]
        images += len(dataset)
        seconds += res["seconds"]
        if save_maps:
            (run_dir / "maps").mkdir(exist_ok=True)
            np.savez_compressed(run_dir / "maps" / f"{cls}.npz",
                                **{k: res[k] for k in ("scores", "labels", "maps", "masks",
                                                        "paths")})
    mean = {k: float(v) for k, v in aggregate(per_class).items() if k in METRIC_KEYS}
    result = {"classes": per_class, "mean": mean, "image_thresholds": thresholds,
              "run": {"images": images, "seconds": seconds, "images_per_s": images / seconds,
                      "device": str(device), "data": str(root),
                      "image_size": settings["image_size"], "model": meta["model"],
                      "step": meta["step"]}}
    print(format_table(per_class, mean))
    print(f"{images} test images, {images / seconds:.1f} images/s on {device}")
    write_json(run_dir / "metrics.json", result)
    return result
