"""The image-score study: each rule computes its equation, the rows hold every rule's image
metrics, and the 'max' rule is the package's own image score (CPU, synthetic maps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mambaadv2_ref.model.anomaly_map import anomaly_maps
from mambaadv2_ref.studies.image_scores import RULES, image_score, score_rules


def test_each_rule_is_its_equation():
    maps = np.zeros((2, 10, 100))  # 1000 pixels per map
    maps[0, 0, :5] = 10.0  # five bright pixels: the max and the top 0.1 % see them
    maps[1] = 0.5
    assert image_score(maps, "max").tolist() == [10.0, 0.5]
    assert image_score(maps, "top 0.1%").tolist() == [10.0, 0.5]  # the top 1 pixel
    assert image_score(maps, "top 1%").tolist() == [5.0, 0.5]  # 10 pixels, 5 of them bright
    assert image_score(maps, "mean").tolist() == pytest.approx([0.05, 0.5])
    with pytest.raises(ValueError, match="rule must be one of"):
        image_score(maps, "median")


def test_max_rule_is_the_models_image_score():
    torch.manual_seed(0)
    enc = [torch.randn(3, 4, 8, 8), torch.randn(3, 6, 4, 4)]
    dec = [e + 0.3 * torch.randn_like(e) for e in enc]
    maps, scores = anomaly_maps(enc, dec, (32, 32), 4.0)
    np.testing.assert_allclose(image_score(maps.numpy(), "max"), scores.numpy(), rtol=1e-6)


def test_rows_hold_every_rule_and_class():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 1])
    maps = rng.random((6, 16, 16))
    maps[3:, :2, :2] += 2.0  # anomalies: a bright 2 x 2 spot, seen by max, not by the mean
    rows = score_rules({"a": {"maps": maps, "labels": labels},
                        "b": {"maps": maps[::-1].copy(), "labels": labels[::-1].copy()}})
    assert [r["rule"] for r in rows] == list(RULES)
    by = {r["rule"]: r for r in rows}
    assert by["max"]["metrics"]["I-AUROC"] == 100.0
    assert set(by["max"]["classes"]) == {"a", "b"}
    assert by["mean"]["metrics"]["I-AUROC"] < 100.0


def test_rows_keep_the_per_image_scores_their_metrics_come_from():
    """Each row stores every class's per-image scores and labels; recomputing the image
    metrics from them gives the row's numbers (what a later paired comparison relies on)."""
    from mambaadv2_ref.metrics.summary import image_metrics

    rng = np.random.default_rng(1)
    labels = np.array([0, 1, 0, 1, 0, 1, 1])
    maps = rng.random((7, 12, 12)) + labels[:, None, None] * rng.random((7, 1, 1))
    for row in score_rules({"c": {"maps": maps, "labels": labels}}):
        assert row["labels"]["c"] == labels.tolist() and len(row["scores"]["c"]) == 7
        again = image_metrics(np.array(row["scores"]["c"]), labels, cls="c")
        assert {k: 100 * v for k, v in again.items()} == pytest.approx(row["classes"]["c"])


def test_paired_compares_detectors_image_by_image_and_refuses_other_images():
    """`paired`: per class the I-AUROC difference of two detectors equals the difference of
    their rows' I-AUROCs and carries eq. (5)'s SE; the mean's SE is sqrt(sum SE^2) / C;
    detectors scored on other images are refused."""
    from mambaadv2_ref.metrics.curves import paired_auroc_difference
    from mambaadv2_ref.studies.image_scores import paired

    rng = np.random.default_rng(2)
    labels = {c: np.r_[np.ones(9), np.zeros(11)].astype(int) for c in ("a", "b")}

    def detector(name, lift):
        splits = {c: {"maps": rng.random((20, 8, 8)) + lift * y[:, None, None], "labels": y}
                  for c, y in labels.items()}
        return {"detector": {"model": name, "run": name}, "rows": score_rules(splits)}

    one, two = detector("v2", 0.6), detector("v1", 0.3)
    (row,) = paired([one, two])
    assert (row["a"], row["b"], row["rule"]) == ("v2", "v1", "max")
    by = {d["detector"]["model"]: {r["rule"]: r for r in d["rows"]}["max"] for d in (one, two)}
    for c in ("a", "b"):
        assert row["classes"][c]["D"] == pytest.approx(
            by["v2"]["classes"][c]["I-AUROC"] - by["v1"]["classes"][c]["I-AUROC"])
        _, se = paired_auroc_difference(np.array(by["v2"]["scores"][c]),
                                        np.array(by["v1"]["scores"][c]), labels[c])
        assert row["classes"][c]["SE"] == pytest.approx(100 * se)
    ses = [row["classes"][c]["SE"] for c in ("a", "b")]
    assert row["mean"]["SE"] == pytest.approx(np.sqrt(sum(s**2 for s in ses)) / 2)
    other = detector("v0", 0.6)
    for r in other["rows"]:
        r["labels"]["a"] = r["labels"]["a"][::-1]
    with pytest.raises(ValueError, match="same classes and images"):
        paired([one, other])


def test_from_joins_earlier_outputs_and_pairs_them(tmp_path):
    """`--from A --from B` reads the detectors of earlier outputs (no model is loaded) and
    writes their paired comparison; neither --run nor --from is an error."""
    import json

    from mambaadv2_ref.studies.image_scores import main

    rng = np.random.default_rng(3)
    y = np.r_[np.ones(6), np.zeros(7)].astype(int)
    for name, lift in (("a", 0.8), ("b", 0.2)):
        rows = score_rules({"c": {"maps": rng.random((13, 6, 6)) + lift * y[:, None, None],
                                  "labels": y}})
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"detectors": [{"detector": {"model": f"m{name}", "run": name}, "rows": rows}]}))
    main(["--from", str(tmp_path / "a.json"), "--from", str(tmp_path / "b.json"),
          "--out", str(tmp_path / "ab.json")])
    (pair,) = json.loads((tmp_path / "ab.json").read_text())["paired"]
    assert (pair["run_a"], pair["run_b"]) == ("a", "b") and set(pair["classes"]) == {"c"}
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x.json")])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        main(["--from", str(tmp_path / "missing.json"), "--out", str(tmp_path / "y.json")])


def test_scale_subsets_sum_only_their_scales_and_all_of_them_is_the_model():
    """`ScaleSubset`: with every scale it is the model's own map and score; with one scale it
    is eqs. (1)-(3) on that scale alone; bad --scales are errors naming it."""
    from mambaadv2_ref.model import build_model
    from mambaadv2_ref.studies.image_scores import ScaleSubset, parse_scales

    torch.manual_seed(0)
    model = build_model("mambaadv2", profile="tiny", pretrained=False,
                        dims=(16, 8, 8, 8), headdim=8, d_state=4, num_directions=2).eval()
    images = torch.randn(2, 3, 64, 64)
    maps, scores = model.anomaly_map(images)
    all_maps, all_scores = ScaleSubset(model, (0, 1, 2)).anomaly_map(images)
    torch.testing.assert_close(all_maps, maps)
    torch.testing.assert_close(all_scores, scores)
    with torch.no_grad():
        enc, dec = model(images)
    one_maps, one_scores = ScaleSubset(model, (2,)).anomaly_map(images)
    ref_maps, ref_scores = anomaly_maps([enc[2]], [dec[2]], (64, 64), 4.0)
    torch.testing.assert_close(one_maps, ref_maps)
    torch.testing.assert_close(one_scores, ref_scores)
    with pytest.raises(ValueError, match="--scales"):
        ScaleSubset(model, (3,)).anomaly_map(images)
    assert parse_scales("0,2") == (0, 2)
    for bad in ("a", "1,1", "-1"):
        with pytest.raises(ValueError, match="--scales"):
            parse_scales(bad)
