"""The encoder question: which frozen encoder serves users best, measured with our PatchCore.

For every encoder with offline ImageNet weights (EfficientNet-Lite0/1/2; resnet34 and
wide_resnet50_2 need timm's download and are recorded as unavailable when it fails) the study

1. checks the weights are genuine: the full classifier's top-5 ImageNet classes on two known
   photos (scikit-image's `chelsea`, a tabby cat, and `coffee`, a cup of espresso);
2. measures what the width means: per scale, the channels C_k and the effective dimension of the
   features on training images, the participation ratio (eq. ENC-1);
3. fits and evaluates our PatchCore (`train.train` + `evaluate.evaluate`) on each dataset at
   256 px and stores the seven metrics and mAD in percent, the widths, the seconds, the
   hardware and the date, one row per (dataset, encoder).

    python -m mambaadv2_ref.studies.encoders --out runs/encoders \
        --data DATA/bsdata --data embedded --json book/results/encoders_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import skimage.data
import torch
import torch.nn.functional as F
from timm.data import ImageNetInfo
from torch.utils.data import DataLoader

from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.data import MVTecDataset, embedded_dataset_root
from mambaadv2_ref.data.transforms import normalise
from mambaadv2_ref.evaluate import METRIC_KEYS, evaluate
from mambaadv2_ref.model.encoder import (
    ENCODERS,
    OFFLINE_WEIGHTS,
    FrozenEncoder,
    PretrainedWeightsUnavailable,
    create_backbone,
)
from mambaadv2_ref.studies.results import environment
from mambaadv2_ref.train import TrainConfig, train

# photo -> ImageNet classes that count as right (cats 281-285; espresso 967, cup 968, mug 504)
PHOTOS: dict[str, frozenset[int]] = {
    "chelsea": frozenset(range(281, 286)),
    "coffee": frozenset({504, 967, 968}),
}
STUDY_ENCODERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet34")


def top5(classifier: torch.nn.Module, photo: str, size: int = 224) -> list[dict]:
    """Top-5 ImageNet classes of a scikit-image photo (resized to size x size, normalised).

    Args:
        classifier: an ImageNet classifier returning (1, 1000) logits.
        photo: a key of PHOTOS (a `skimage.data` function name).
        size: input side in pixels.

    Returns:
        five dicts {index, name, probability}, most probable first.
    """
    if photo not in PHOTOS:
        raise ValueError(f"photo must be one of {sorted(PHOTOS)}, got {photo!r}")
    image = torch.from_numpy(getattr(skimage.data, photo)()).permute(2, 0, 1).float()[None] / 255
    image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
    with torch.no_grad():
        probs = classifier.eval()(normalise(image)).softmax(-1)[0]
    values, indices = probs.topk(5)
    info = ImageNetInfo()
    return [{"index": int(i), "name": info.index_to_description(int(i)), "probability": float(v)}
            for v, i in zip(values, indices, strict=True)]


def genuineness(name: str) -> dict:
    """Top-5 of encoder `name`'s classifier on every photo of PHOTOS and whether top-1 is right.

    Returns:
        {photo: {"top5": [...], "top1_right": bool}}.
    """
    classifier = create_backbone(name, pretrained=True, features_only=False)
    result = {}
    for photo, right in PHOTOS.items():
        best = top5(classifier, photo)
        result[photo] = {"top5": best, "top1_right": best[0]["index"] in right}
    return result


def participation_ratio(features: torch.Tensor) -> float:
    """Effective dimension of feature vectors: (sum_i l_i)^2 / sum_i l_i^2, eq. (ENC-1).

    l_i are the eigenvalues of the channel covariance; the ratio is C when all channels carry
    equal independent variance and 1 when one direction carries it all.

    Args:
        features: (N, C) feature vectors, N >= 2.
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, C), got {tuple(features.shape)}")
    x = features.double() - features.double().mean(0)
    eig = torch.linalg.eigvalsh(x.T @ x / (x.shape[0] - 1)).clamp_min(0)
    return float(eig.sum() ** 2 / (eig.pow(2).sum() + 1e-300))


def feature_statistics(encoder: FrozenEncoder, images: torch.Tensor) -> list[dict]:
    """Width statistics per scale of `encoder` on normalised `images` (B, 3, S, S).

    Returns:
        per scale: stride, channels, effective dimension (eq. ENC-1), and the share of
        channels whose variance is below 1 % of the mean channel variance ("quiet").
    """
    stats = []
    for stride, f in zip(encoder.reductions, encoder(images), strict=True):
        vectors = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
        var = vectors.var(0)
        stats.append({"stride": stride, "channels": f.shape[1],
                      "effective_dimension": participation_ratio(vectors),
                      "quiet_channel_share": float((var < 0.01 * var.mean()).float().mean())})
    return stats


def encoder_parameters(name: str) -> int:
    """Number of parameters of encoder `name`'s 3-scale feature extractor (its size and cost)."""
    return sum(p.numel() for p in create_backbone(name, pretrained=False).parameters())


def dataset_root(data: str) -> Path:
    """`embedded` -> the embedded dataset's root, else the path itself."""
    return embedded_dataset_root() if data == "embedded" else Path(data)


def first_train_images(data: str, image_size: int, count: int = 16) -> torch.Tensor:
    """The first `count` training images of `data` (normalised, (count, 3, S, S))."""
    dataset = MVTecDataset(dataset_root(data), split="train", image_size=image_size)
    return next(iter(DataLoader(dataset, batch_size=count, shuffle=False)))["image"]


def run_patchcore(encoder: str, data: str, out: Path, image_size: int = 256,
                  device: str = "cpu", coreset_ratio: float | None = None) -> dict:
    """Fit and evaluate our PatchCore with `encoder` on `data`; return its row.

    Args:
        encoder: a key of ENCODERS.  data: dataset root or "embedded".
        out: the run's folder.  image_size: square input side.  device: torch device.
        coreset_ratio: memory-bank fraction (None: PatchCoreConfig's default).
    """
    t0 = time.perf_counter()
    overrides = {} if coreset_ratio is None else {"coreset_ratio": coreset_ratio}
    meta = train(TrainConfig(out=str(out), data=None if data == "embedded" else data,
                             model="patchcore", profile="paper", encoder=encoder, device=device,
                             image_size=image_size, model_overrides=overrides))
    metrics = evaluate(out, device=device)
    return {"dataset": "embedded" if data == "embedded" else Path(data).name,
            "model": "patchcore (ours)", "encoder": encoder, "image_size": image_size,
            "coreset_ratio": meta["model_config"]["coreset_ratio"],
            "memory_bank_size": meta["train"]["memory_bank_size"],
            "channels": list(ENCODERS[encoder].channels),
            "patch_dimension": sum(ENCODERS[encoder].channels[i]
                                   for i in meta["model_config"]["levels"]),
            "fit_seconds": meta["train_seconds"], "test_seconds": metrics["run"]["seconds"],
            "seconds": time.perf_counter() - t0,
            "load_average_1min": os.getloadavg()[0],  # CPU seconds depend on other users
            "metrics": {k: 100 * metrics["mean"][k] for k in METRIC_KEYS}}


def markdown(rows: list[dict]) -> str:
    """The encoder table as markdown (metrics in percent)."""
    head = ["dataset", "encoder", "channels", *METRIC_KEYS, "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["dataset"], r["encoder"], "/".join(map(str, r["channels"])),
                 *(f"{r['metrics'][k]:.1f}" for k in METRIC_KEYS), f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def study_encoder(name: str, data: list[str], out: Path, image_size: int,
                  device: str, coreset_ratio: float | None = None) -> dict:
    """Everything the study measures for one encoder: genuineness, widths, PatchCore rows.

    Returns:
        {"encoder", "available", and either "reason" or "genuineness", "features", "rows"}.
    """
    try:
        encoder = FrozenEncoder(name, pretrained=True)
    except PretrainedWeightsUnavailable as err:
        return {"encoder": name, "available": False, "reason": str(err).split(";")[0]}
    entry = {"encoder": name, "available": True, "offline_weights": name in OFFLINE_WEIGHTS,
             "parameters": encoder_parameters(name), "genuineness": genuineness(name),
             "features": {}, "rows": []}
    for d in data:
        key = "embedded" if d == "embedded" else Path(d).name
        entry["features"][key] = feature_statistics(encoder, first_train_images(d, image_size))
        entry["rows"].append(run_patchcore(name, d, out / key / name, image_size, device,
                                           coreset_ratio))
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the PatchCore runs")
    parser.add_argument("--data", action="append", required=True,
                        help="MVTec-layout root or 'embedded' (repeatable)")
    parser.add_argument("--json", required=True, help="result file (updated after each encoder)")
    parser.add_argument("--encoders", default=",".join(STUDY_ENCODERS))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--coreset-ratio", type=float, default=None,
                        help="PatchCore memory-bank fraction (default: PatchCoreConfig's, 0.1)")
    args = parser.parse_args(argv)
    names = args.encoders.split(",")
    unknown = sorted(set(names) - set(ENCODERS))
    if unknown:
        parser.error(f"unknown encoders {unknown}; choose from {sorted(ENCODERS)}")
    path = Path(args.json)
    result = json.loads(path.read_text()) if path.exists() else {"encoders": []}
    done = {e["encoder"] for e in result["encoders"]}
    for entry in result["encoders"]:  # files written before the parameter count was stored
        if entry["available"] and "parameters" not in entry:
            entry["parameters"] = encoder_parameters(entry["encoder"])
    for name in names:
        if name in done:
            print(f"{name}: already in {path}, skipped")
            continue
        result["encoders"].append(study_encoder(name, args.data, Path(args.out),
                                                args.image_size, args.device,
                                                args.coreset_ratio))
        result["environment"] = environment(torch.device(args.device))
        write_json(path, result)
    write_json(path, result)
    rows = [r for e in result["encoders"] for r in e.get("rows", [])]
    print(markdown(sorted(rows, key=lambda r: (r["dataset"], r["encoder"]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
