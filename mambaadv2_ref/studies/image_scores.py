"""Which image score? The same anomaly maps, scored by different rules.

A reconstruction detector scores an image from its anomaly map A (eq. (2) of
`model.anomaly_map`). MambaAD takes the maximum (eq. (3)); the MambaADv2 abstract does not say,
so this is our reading. This study scores the maps of one trained detector, once computed, by:

    max        s = max_u A(u)                                   (eq. 3, the default)
    top q      s = mean of the q * H * W largest values of A    (q = 0.1 %, 1 %, 10 %)
    mean       s = mean_u A(u)

and reports the image metrics (I-AUROC, I-AP, I-F1max, mean over classes) of each rule. With
several detectors scored on the same images, `paired` compares each pair image by image: the
I-AUROC difference per class and its standard error (eq. (5) of `metrics.curves`), and the
difference of the class means with SE = sqrt(sum_c SE_c^2) / C (the classes' test images are
disjoint, so their differences are independent). The
pixel metrics do not depend on the rule. No rule is chosen on the test set here: the table shows
how much the unstated choice moves the image-level numbers.

    python -m mambaadv2_ref.studies.image_scores --run RUN_OR_FILE.safetensors [--data ROOT]
        --out results/image_scores_DATASET_PROFILE_DEVICE.json
    python -m mambaadv2_ref.studies.image_scores --from A.json --from B.json --out PAIRED.json

`--scales K[,K...]` (repeatable) builds the maps from those scales only (0 = finest):

    A_S = G_sigma * sum_{k in S} Up(a_k)       (eq. 2 of `model.anomaly_map` over a subset S)

MambaAD sums all three; which scales carry the image-level signal is another unstated reading,
and each subset becomes one more detector of the table (and of the paired comparison).

`--normalise` adds readouts normalised by the class's good training images (train split only,
so nothing is chosen on the test set; `model.readout`): a "z" twin of every
detector, its maps Z(u) = (A(u) - mu(u)) / (sigma(u) + eps) with the per-pixel mean and std of
the training maps, and (for all scales of a reconstruction detector, not PatchCore) the
scale-balanced detector A_bal = G_sigma * sum_k Up(a_k) / m_k, m_k the mean of scale k over the
training pixels, with its own z twin. Each is one more detector (fields "readout": "raw" | "z",
"scale_weights": "equal" | "1/m_k"), scored by every rule, so `paired` compares a detector's
raw max with its z max image by image. For a run trained with `--set statistics_holdout=K`,
all these statistics come from its K held-out good training images per class (never trained
on; `evaluate.statistics_dataset`), as for `evaluate --readout z`.

`--from` takes the detectors of earlier outputs of this study (their per-image scores), e.g.
those `gpu_sitting train` saves for every run that finished, so that runs whose weights are gone
can still be compared image by image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mambaadv2_ref.checkpoint import write_json
from mambaadv2_ref.data import MVTecDataset, check_dataset
from mambaadv2_ref.evaluate import (
    evaluation_root,
    holdout_of,
    predict_split,
    statistics_dataset,
    training_statistics,
)
from mambaadv2_ref.metrics.curves import paired_auroc_difference
from mambaadv2_ref.metrics.summary import image_metrics
from mambaadv2_ref.model.anomaly_map import anomaly_maps
from mambaadv2_ref.model.detectors import load_detector
from mambaadv2_ref.model.readout import (
    readout_record,
    scale_means,
    statistics_source,
    z_maps,
)
from mambaadv2_ref.runtime import resolve_device
from mambaadv2_ref.studies.results import environment, read_json

RULES = ("max", "top 0.1%", "top 1%", "top 10%", "mean")
IMAGE_KEYS = ("I-AUROC", "I-AP", "I-F1max")


def image_score(maps: np.ndarray, rule: str) -> np.ndarray:
    """Image scores of smoothed anomaly maps by one rule of RULES.

    Args:
        maps: (N, H, W) anomaly maps A. rule: "max", "mean" or "top Q%" (the mean of the
            ceil(Q/100 * H * W) largest pixels, at least one).
    Returns:
        (N,) scores: max_u A(u), mean_u A(u), or the mean of A's top-Q % values.

    Implements: eq. (3) of `model.anomaly_map` (rule "max") and its variants in this module's
    docstring.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    if rule == "max":
        return flat.max(axis=1)
    if rule == "mean":
        return flat.mean(axis=1)
    k = max(1, int(np.ceil(float(rule[4:-1]) / 100 * flat.shape[1])))
    return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


def score_rules(splits: dict[str, dict]) -> list[dict]:
    """One row per rule: the image metrics per class and their mean, in percent, and each
    class's per-image scores under the rule (so that detectors scored on the same images can
    be compared image by image later, e.g. a paired bootstrap).

    Args:
        splits: class -> {"maps": (N, H, W), "labels": (N,)} (as `evaluate.predict_split`).
    Returns:
        [{rule, metrics: {I-AUROC, I-AP, I-F1max}, classes: {class: metrics},
          scores: {class: N floats}}], plus the labels under the key "labels" of each row.
    """
    rows = []
    for rule in RULES:
        scores = {cls: image_score(s["maps"], rule) for cls, s in splits.items()}
        per_class = {cls: image_metrics(scores[cls], s["labels"], cls=cls)
                     for cls, s in splits.items()}
        mean = {k: 100 * float(np.mean([m[k] for m in per_class.values()])) for k in IMAGE_KEYS}
        rows.append({"rule": rule, "metrics": mean,
                     "classes": {c: {k: 100 * v for k, v in m.items()}
                                 for c, m in per_class.items()},
                     "scores": {c: v.tolist() for c, v in scores.items()},
                     "labels": {c: np.asarray(s["labels"]).astype(int).tolist()
                                for c, s in splits.items()}})
    return rows


def _label(detector: dict) -> str:
    """A detector's model name, with its scales when they are not all of them, "balanced" for
    scale weights 1/m_k and "z" for the z readout."""
    scales = detector.get("scales", "all")
    return (detector["model"] + ("" if scales == "all" else f" scales {scales}")
            + ("" if detector.get("scale_weights", "equal") == "equal" else " balanced")
            + ("" if detector.get("readout", "raw") == "raw" else f" {detector['readout']}"))


def paired(detectors: list[dict], rule: str = "max") -> list[dict]:
    """I-AUROC differences of every pair of detectors on the same images, under one rule.

    Args:
        detectors: `study` results (each with rows holding per-image scores and labels).
        rule: a rule of RULES.
    Returns:
        [{a, b (labels), run_a, run_b, scales_a, scales_b, readout_a, readout_b, weights_a,
          weights_b, rule, classes: {class: {D, SE}}, mean: {D, SE}}] in percent: D = I-AUROC of
        detector a minus b (eq. (5) per class; the mean over classes with SE = sqrt(sum SE^2)/C).
    Raises:
        ValueError: a pair was not scored on the same classes and labels (not the same images).
    """
    rows = [next(r for r in d["rows"] if r["rule"] == rule) for d in detectors]
    out = []
    for i in range(len(detectors)):
        for j in range(i + 1, len(detectors)):
            a, b = rows[i], rows[j]
            if a["labels"] != b["labels"]:
                raise ValueError(f"detectors {detectors[i]['detector']['run']} and "
                                 f"{detectors[j]['detector']['run']} were not scored on the "
                                 "same classes and images (their labels differ)")
            per = {}
            for cls, labels in a["labels"].items():
                d_c, se_c = paired_auroc_difference(np.array(a["scores"][cls]),
                                                    np.array(b["scores"][cls]),
                                                    np.array(labels))
                per[cls] = {"D": 100 * d_c, "SE": 100 * se_c}
            n = len(per)
            da, db = detectors[i]["detector"], detectors[j]["detector"]
            out.append({"a": _label(da), "b": _label(db), "run_a": da["run"], "run_b": db["run"],
                        "scales_a": da.get("scales", "all"), "scales_b": db.get("scales", "all"),
                        "readout_a": da.get("readout", "raw"),
                        "readout_b": db.get("readout", "raw"),
                        "weights_a": da.get("scale_weights", "equal"),
                        "weights_b": db.get("scale_weights", "equal"), "rule": rule, "classes": per,
                        "mean": {"D": sum(v["D"] for v in per.values()) / n,
                                 "SE": float(np.sqrt(sum(v["SE"] ** 2 for v in per.values())))
                                 / n}})
    return out


class ScaleSubset:
    """A trained detector whose anomaly maps sum only the scales in `scales`, optionally
    weighted.

    Args:
        model: an ADModel (forward(images) -> (enc, dec), one entry per scale, finest first).
        scales: the indices k of the scales kept (S), each in range(number of scales).
        weights: None (every w_k = 1, the model's own sum) or one finite w_k > 0 per scale of
            `scales` (e.g. 1 / m_k, the scale-balanced map of `model.readout`).
    """

    def __init__(self, model, scales: tuple[int, ...],
                 weights: tuple[float, ...] | None = None):
        num_scales = len(model.encoder.channels)
        if not scales or any(not 0 <= k < num_scales for k in scales):
            raise ValueError(f"--scales {list(scales)}: each scale must be in "
                             f"0..{num_scales - 1} (0 = finest) and at least one given")
        if weights is not None and (len(weights) != len(scales) or not all(
                np.isfinite(w) and w > 0 for w in weights)):
            raise ValueError(f"weights must be one finite value > 0 per scale of {list(scales)},"
                             f" got {list(weights)}")
        self.model, self.scales = model.eval(), tuple(scales)
        self.weights = None if weights is None else tuple(float(w) for w in weights)

    @torch.no_grad()
    def anomaly_map(self, images: torch.Tensor, sigma: float = 4.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (B, H, W) A_S = G_sigma * sum_{k in S} w_k Up(a_k) and scores (B,) max_u A_S(u).

        Implements: eqs. (1)-(3) of `model.anomaly_map` with the sum of eq. (2) over S (w_k = 1
        without `weights`; eq. (Z2) of `model.readout` with w_k = 1 / m_k).
        """
        enc, dec = self.model(images)
        return anomaly_maps([enc[k] for k in self.scales], [dec[k] for k in self.scales],
                            tuple(images.shape[-2:]), sigma, self.weights)


def parse_scales(text: str) -> tuple[int, ...]:
    """'0,2' -> (0, 2); an error names --scales and what was expected."""
    try:
        scales = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ValueError(f"--scales {text!r}: expected comma-separated scale indices such as "
                         "'0' or '0,1,2' (0 = finest)") from None
    if len(set(scales)) != len(scales) or min(scales) < 0:
        raise ValueError(f"--scales {text!r}: indices must be distinct and >= 0")
    return scales


def _name(entry):
    """The name of a manifest entry that is a name or a dict with one (profile, encoder)."""
    return entry.get("name") if isinstance(entry, dict) else entry


def study(run, data=None, device="auto", batch_size: int = 8,
          scales: tuple[int, ...] | None = None, normalise: bool = False) -> list[dict]:
    """The maps of detector `run` on each trained class's test split, scored by every rule;
    with `scales`, maps of those scales only (`ScaleSubset`). Returns [that detector], and with
    `normalise` its z twin (eq. Z1 of `model.readout`) and, for all scales of a
    reconstruction detector, the scale-balanced detector (eq. Z2) and its z twin; their
    statistics come from each class's train split only."""
    device = resolve_device(device)
    model, meta = load_detector(run, device=device)
    settings, classes = meta["train"], meta["train"]["classes"]
    root = evaluation_root(settings, data)
    holdout = holdout_of(settings) if normalise else None  # a run's held-out images, if any
    check_dataset(root, classes, splits=("test", "train") if normalise else ("test",))

    tests = {c: MVTecDataset(root, classes=[c], split="test", image_size=settings["image_size"])
             for c in classes}
    # the statistics' images (the run's held-out ones when it has them), indexed once per class
    trains = ({c: statistics_dataset(root, c, settings["image_size"], holdout) for c in classes}
              if normalise else {})

    env = environment(device)
    detector = {"run": str(run), "model": meta["model"], "step": meta["step"],
                "profile": _name(meta.get("profile"))
                or meta.get("model_config", {}).get("profile"),
                "encoder": _name(meta.get("encoder"))  # exports; run dirs: the config
                or meta.get("model_config", {}).get("encoder"),
                "image_size": settings["image_size"],
                "scales": "all" if scales is None else list(scales),
                "data": "embedded" if settings.get("embedded") else str(root),
                "readout": "raw", "scale_weights": "equal"}
    one = model if scales is None else ScaleSubset(model, scales)
    variants = [(detector, dict.fromkeys(classes, one))]
    if normalise and scales is None and meta["model"] != "patchcore":
        means = {c: scale_means(model, trains[c], device, batch_size, c) for c in classes}
        every = tuple(range(len(model.encoder.channels)))
        variants.append(({**detector, "scale_weights": "1/m_k",
                          "scale_means": {c: m.tolist() for c, m in means.items()},
                          "scale_means_from": {
                              **statistics_source(classes, holdout),
                              "train_images": {c: len(trains[c]) for c in classes}}},
                         {c: ScaleSubset(model, every, tuple(1 / means[c])) for c in classes}))
    out = []
    for entry, models in variants:
        test = {c: predict_split(models[c], tests[c], device, batch_size,
                                 desc=f"maps {c}") for c in classes}
        out.append({"environment": env, "detector": entry, "rows": score_rules(test),
                    "notes": "Image metrics in percent, mean over classes, of the same maps "
                             "scored by each rule; 'max' is MambaAD's eq. (3) and the "
                             "package's score."})
        if normalise:
            stats = {c: training_statistics(models[c], trains[c], device, batch_size, c)
                     for c in classes}
            z = {c: {"maps": z_maps(test[c]["maps"], stats[c], c), "labels": test[c]["labels"]}
                 for c in classes}
            out.append({"environment": env,
                        "detector": {**entry, "readout": "z", "normalisation":
                                     readout_record(stats, holdout)},
                        "rows": score_rules(z),
                        "notes": "Each rule applied to Z(u) = (A(u) - mu(u)) / (sigma(u) + eps),"
                                 " mu, sigma per pixel over the class's good training maps "
                                 "(train split only)."})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[],
                        help="run directory or exported .safetensors (repeat for several)")
    parser.add_argument("--from", dest="earlier", action="append", type=Path, default=[],
                        help="an earlier output of this study: its detectors join the table "
                             "(repeat for several)")
    parser.add_argument("--data", default=None, help="dataset root (default: the trained one)")
    parser.add_argument("--scales", action="append", default=[],
                        help="maps from these scales only, e.g. 0 or 1,2 (0 = finest); repeat "
                             "for several subsets (each run is scored once per subset, and "
                             "once with all scales)")
    parser.add_argument("--normalise", action="store_true",
                        help="also score readouts normalised by each class's good training "
                             "images (train split only): a z twin of every detector and the "
                             "scale-balanced map (model.readout)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    args = parser.parse_args(argv)
    if not args.run and not args.earlier:
        parser.error("give at least one --run or --from")
    try:
        subsets = [None] + [parse_scales(text) for text in args.scales]
    except ValueError as err:
        parser.error(str(err))
    earlier = [d for path in args.earlier for d in read_json(path)["detectors"]]  # checked first
    results = {"detectors": [d for run in args.run for subset in subsets
                             for d in study(run, args.data, args.device, scales=subset,
                                            normalise=args.normalise)] + earlier}
    if len(results["detectors"]) > 1:
        results["paired"] = paired(results["detectors"])
    write_json(args.out, results)
    for d in results["detectors"]:
        print(_label(d["detector"]), d["detector"]["run"])
        for row in d["rows"]:
            print(f"  {row['rule']:9} " + "  ".join(f"{k} {v:5.1f}"
                                                    for k, v in row["metrics"].items()))
    for p in results.get("paired", []):
        print(f"{p['a']} - {p['b']} ({p['rule']}): I-AUROC {p['mean']['D']:+.1f} "
              f"+- {p['mean']['SE']:.1f} (mean over classes, paired SE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
