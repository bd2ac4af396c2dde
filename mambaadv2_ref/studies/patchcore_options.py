"""Why our PatchCore trails anomalib's: each difference as a `PatchCoreConfig` option, measured.

anomalib 2.7.0's PatchCore (the peers study, `studies/peers.py`) differs from ours in five
plausible ways; each is an option of `PatchCoreConfig` (module docstring of
`model.patchcore`), off by default:

    image_score="reweighted"   the paper's re-weighted image score, eq. (PC-5), b = 9 neighbours
    image_score="patch_max"    the unsmoothed patch maximum s* (half of what "reweighted" does)
    map_upsample="nearest"     nearest instead of bilinear (align_corners) map upsampling
    blur_mode="mirror"         torch/kornia's 'reflect' border of the sigma-4 blur
    pool_include_pad=True      the 3x3 average counts the zero padding at the border
    projection="sparse_jl"     very sparse projection to the Johnson-Lindenstrauss dimension

plus all of them together ("all_anomalib"), all but the projection ("all_but_sparse_jl": it
shares the `pool_include_pad` bank), each scoring option on that bank ("pad_*") and today's
defaults with another coreset seed
("defaults_seed1": how much a different projection and start point alone move the numbers;
"pool_include_pad_seed1": whether the padding's effect outlasts that spread).

The study fits our PatchCore (`train.train`, the same call as `python -m mambaadv2_ref train
--model patchcore --profile paper`) once per distinct memory bank: only `pool_include_pad` and
`projection` change what the bank holds, the scoring options do not. For each bank it runs the
test images through the encoder and the nearest-neighbour search once (`PatchCore.patch_scores`)
and turns the distances into maps and image scores with each variant's scoring options
(`PatchCore.maps_and_scores`), then scores them like `evaluate.evaluate` (seven metrics + mAD,
exact pixel metrics, MambaAD's AUPRO). A variant's `test_seconds` is the shared pass plus its own
scoring.

    python -m mambaadv2_ref.studies.patchcore_options --data DATA/bsdata --out runs/pc_options \
        --json book/results/patchcore_options_bsdata_cpu.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mambaadv2_ref.checkpoint import MANIFEST, write_json
from mambaadv2_ref.data import MVTecDataset
from mambaadv2_ref.evaluate import METRIC_KEYS
from mambaadv2_ref.metrics import aggregate, compute_metrics
from mambaadv2_ref.model.detectors import load_detector
from mambaadv2_ref.model.patchcore import PatchCoreConfig
from mambaadv2_ref.studies.results import RESULTS_DIR, environment, read_json
from mambaadv2_ref.tables import markdown_table
from mambaadv2_ref.train import TrainConfig, train

# the scoring options: they change maps and scores, not the memory bank
SCORING_FIELDS = ("image_score", "num_neighbors", "map_upsample", "blur_mode", "sigma",
                  "chunk_size")
ANOMALIB = {"image_score": "reweighted", "num_neighbors": 9, "map_upsample": "nearest",
            "blur_mode": "mirror", "pool_include_pad": True, "projection": "sparse_jl",
            "jl_eps": 0.9}
VARIANTS = {
    "defaults": {},
    "reweighted": {"image_score": "reweighted", "num_neighbors": 9},
    "patch_max": {"image_score": "patch_max"},
    "nearest_upsample": {"map_upsample": "nearest"},
    "mirror_blur": {"blur_mode": "mirror"},
    "pool_include_pad": {"pool_include_pad": True},
    "sparse_jl": {"projection": "sparse_jl", "jl_eps": 0.9},
    "all_anomalib": ANOMALIB,
    "all_but_sparse_jl": {k: v for k, v in ANOMALIB.items() if k not in ("projection", "jl_eps")},
    # each scoring option on the pool_include_pad bank (the one option that changes much)
    "pad_reweighted": {"pool_include_pad": True, "image_score": "reweighted", "num_neighbors": 9},
    "pad_nearest_upsample": {"pool_include_pad": True, "map_upsample": "nearest"},
    "pad_mirror_blur": {"pool_include_pad": True, "blur_mode": "mirror"},
    "defaults_seed1": {"seed": 1},  # another projection and start point: the seed's spread
    "pool_include_pad_seed1": {"pool_include_pad": True, "seed": 1},
}


def fit_options(options: dict) -> dict:
    """The options of `options` that change the memory bank (all but SCORING_FIELDS)."""
    return {k: v for k, v in options.items() if k not in SCORING_FIELDS}


def fit_bank(run_dir: Path, data: str, encoder: str, image_size: int, coreset_ratio: float,
             options: dict, device: str) -> tuple[float, bool]:
    """Fit our PatchCore with the bank options `options` into `run_dir`, unless the run there
    already has exactly that config (checkpoints without the newer keys read as their defaults).

    Returns:
        (fit seconds as recorded in the run, whether it was reused).
    """
    overrides = {"coreset_ratio": coreset_ratio, **options}
    manifest = run_dir / MANIFEST
    if manifest.is_file():
        meta = read_json(manifest)
        stored = PatchCoreConfig.complete(meta["model_config"])
        wanted = PatchCoreConfig.from_dict({**stored, **overrides}).to_dict()
        if (meta["model"] == "patchcore" and stored["encoder"] == encoder
                and meta["train"]["image_size"] == image_size
                and Path(meta["train"]["data"]) == Path(data).resolve()
                and PatchCoreConfig.from_dict(stored).to_dict() == wanted):
            return float(meta["train_seconds"]), True
    meta = train(TrainConfig(out=str(run_dir), data=data, model="patchcore", profile="paper",
                             encoder=encoder, device=device, image_size=image_size,
                             model_overrides=overrides, force=True))
    return float(meta["train_seconds"]), False


def score_variants(run_dir: Path, variants: dict[str, dict], device: str,
                   batch_size: int = 8) -> dict[str, dict]:
    """Seven metrics + mAD (fractions) of each scoring variant on the fitted run's test split.

    Args:
        run_dir: a fitted PatchCore run.
        variants: {name: options}; their SCORING_FIELDS are applied to the run's config.
        device: torch device.  batch_size: test batch size.

    Returns:
        {name: {"metrics": {key: fraction}, "test_seconds": shared pass + own scoring,
        "config": the variant's full config, "scores": {class: (N,) image scores}}}.
    """
    model, meta = load_detector(run_dir, device=device)
    settings = meta["train"]
    configs = {n: replace(model.config, **{k: v for k, v in o.items() if k in SCORING_FIELDS})
               for n, o in variants.items()}
    per_class = {n: {} for n in variants}
    image_scores = {n: {} for n in variants}
    own = dict.fromkeys(variants, 0.0)
    shared = 0.0
    for cls in settings["classes"]:
        dataset = MVTecDataset(Path(settings["data"]), classes=[cls], split="test",
                               image_size=settings["image_size"])
        maps = {n: [] for n in variants}
        scores = {n: [] for n in variants}
        labels, masks = [], []
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images = batch["image"].to(device)
            t0 = time.perf_counter()
            patches, d = model.patch_scores(images)
            shared += time.perf_counter() - t0
            for name, cfg in configs.items():
                t0 = time.perf_counter()
                m, s = model.maps_and_scores(patches, d, images.shape[-2:], cfg)
                own[name] += time.perf_counter() - t0
                maps[name].append(m.float().cpu().numpy())
                scores[name].append(s.float().cpu().numpy())
            labels.append(np.asarray(batch["label"]))
            masks.append(batch["mask"][:, 0].numpy().astype(np.uint8))
        labels, masks = np.concatenate(labels), np.concatenate(masks)
        for name in variants:
            image_scores[name][cls] = np.concatenate(scores[name])
            m = compute_metrics(image_scores[name][cls], labels, np.concatenate(maps[name]),
                                masks, cls=cls, undefined="mark", method="exact",
                                aupro_definition="mambaad")
            per_class[name][cls] = {k: float(m[k]) for k in METRIC_KEYS}
    return {n: {"metrics": {k: float(v) for k, v in aggregate(per_class[n]).items()
                            if k in METRIC_KEYS},
                "test_seconds": shared + own[n], "config": configs[n].to_dict(),
                "scores": image_scores[n]}
            for n in variants}


def run_study(data: str, out: Path, variants: dict[str, dict], encoder: str = "efficientnet_lite0",
              image_size: int = 256, coreset_ratio: float = 0.01,
              device: str = "cpu") -> list[dict]:
    """One row per variant: fit (once per distinct bank) and score our PatchCore.

    Returns:
        rows {"variant", "options", "config", "metrics" (percent), "fit_seconds",
        "test_seconds", "fit_run", "fit_reused", "memory_bank_size"}.
    """
    groups: dict[tuple, list[str]] = {}
    for name, options in variants.items():
        groups.setdefault(tuple(sorted(fit_options(options).items())), []).append(name)
    rows = []
    for key, names in groups.items():
        run_dir = out / ("fit_" + ("_".join(f"{k}-{v}" for k, v in key) or "defaults"))
        fit_seconds, reused = fit_bank(run_dir, data, encoder, image_size, coreset_ratio,
                                       dict(key), device)
        bank = read_json(run_dir / MANIFEST)["train"]["memory_bank_size"]
        scored = score_variants(run_dir, {n: variants[n] for n in names}, device)
        for name in names:
            rows.append({"variant": name, "options": variants[name],
                         "config": scored[name]["config"],
                         "metrics": {k: 100 * v for k, v in scored[name]["metrics"].items()},
                         "fit_seconds": fit_seconds, "test_seconds": scored[name]["test_seconds"],
                         "fit_run": str(run_dir), "fit_reused": reused,
                         "memory_bank_size": bank})
    return rows


def anomalib_reference(dataset: str, encoder: str, image_size: int,
                       results_dir: Path | None = None) -> dict | None:
    """anomalib's PatchCore row of the committed peers study (`peers_<dataset>_cpu.json`) for
    `encoder` at `image_size`: {"metrics" (percent), "anomalib", "coreset_ratio", "file"}, or
    None when that file or row is missing."""
    path = (results_dir or RESULTS_DIR) / f"peers_{dataset}_cpu.json"
    if not path.is_file():
        return None
    peers = read_json(path)
    for row in peers["rows"]:
        if (row["peer"], row["encoder"], row["image_size"]) == ("anomalib patchcore", encoder,
                                                                image_size):
            return {"metrics": row["metrics"], "anomalib": peers.get("anomalib"),
                    "coreset_ratio": row["runs"][0].get("coreset_ratio"), "file": path.name}
    return None


def in_order(rows: list[dict]) -> list[dict]:
    """`rows` sorted in VARIANTS order (unknown variants last)."""
    order = {n: i for i, n in enumerate(VARIANTS)}
    return sorted(rows, key=lambda r: order.get(r["variant"], len(order)))


def table_rows(rows: list[dict]) -> list[dict]:
    """Study rows as flat table rows: variant, options, the metrics in percent, seconds."""
    return [{"variant": r["variant"],
             "options": ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-",
             **{k: r["metrics"][k] for k in METRIC_KEYS},
             "fit s": r["fit_seconds"], "test s": r["test_seconds"]} for r in rows]


def load_table(path) -> list[dict]:
    """The table rows (`table_rows`) of a committed patchcore-options JSON, in VARIANTS order."""
    return table_rows(in_order(read_json(path)["rows"]))


def markdown(rows: list[dict]) -> str:
    """The table as markdown: metrics in percent (one decimal), seconds (no decimals)."""
    formats = {**{k: ".1f" for k in METRIC_KEYS}, "fit s": ".0f", "test s": ".0f"}
    return markdown_table(table_rows(rows), formats=formats) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MVTec-layout dataset root")
    parser.add_argument("--out", required=True, help="folder for the fitted runs")
    parser.add_argument("--json", required=True,
                        help="result file; rows of the variants run here replace same-named ones")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    rows = run_study(args.data, Path(args.out), {n: VARIANTS[n] for n in names}, args.encoder,
                     args.image_size, args.coreset_ratio, args.device)
    path = Path(args.json)  # read just before writing: two runs may fill one file
    result = read_json(path) if path.exists() else {"rows": []}
    result["rows"] = [r for r in result["rows"] if r["variant"] not in names] + rows
    result.setdefault("environments", {})
    env = environment(torch.device(args.device))
    result["environments"].update({n: env for n in names})
    result.update(dataset=Path(args.data).name, encoder=args.encoder,
                  image_size=args.image_size, coreset_ratio=args.coreset_ratio,
                  environment=env, anomalib_patchcore=anomalib_reference(
                      Path(args.data).name, args.encoder, args.image_size))
    write_json(path, result)
    print(markdown(in_order(result["rows"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
