"""Metrics against scikit-learn, hand-computed cases, the AUPRO loop reference, and bad input."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from mambaadv2_ref.metrics import (
    ALL_KEYS,
    aggregate,
    aupro,
    aupro_mvtec,
    compute_metrics,
    covered_classes,
    f1max_threshold,
    image_metrics,
    mad,
    pixel_metrics,
)
from mambaadv2_ref.metrics.aupro import aupro_from_curve, pro_curve, pro_curve_loop, pro_thresholds
from mambaadv2_ref.metrics.curves import (
    ap_from_counts,
    auroc_from_counts,
    bin_index,
    binned_counts,
    exact_counts,
    f1max_from_counts,
)


def _sk_f1max(labels, scores):
    p, r, _ = precision_recall_curve(labels, scores)
    return np.max(np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=p + r > 0))


def _class_data(seed, n=12, size=24, separation=0.6):
    """Maps with a few rectangular (sometimes touching) defects on half the images."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(int)
    masks = np.zeros((n, size, size), bool)
    for i in np.flatnonzero(labels):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 6, 2)
            masks[i, y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = True
    maps = rng.random((n, size, size)) + separation * masks * rng.random((n, size, size))
    return maps.reshape(n, -1).max(1), labels, maps, masks


def test_hand_computed_image_metrics():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    m = image_metrics(scores, labels)
    assert m["I-AUROC"] == pytest.approx(0.75)
    assert m["I-AP"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["I-F1max"] == pytest.approx(0.8)  # threshold 0.35: TP 2, FP 1, FN 0
    assert f1max_threshold(scores, labels) == (pytest.approx(0.8), 0.35)


@pytest.mark.parametrize("seed", range(4))
def test_image_and_pixel_metrics_match_sklearn(seed):
    scores, labels, maps, masks = _class_data(seed)
    scores = np.round(scores, 1)  # ties
    maps = np.round(maps, 2)
    m = compute_metrics(scores, labels, maps, masks)
    assert m["I-AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m["I-AP"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert m["I-F1max"] == pytest.approx(_sk_f1max(labels, scores), abs=1e-12)
    y, s = masks.ravel(), maps.ravel()
    assert m["P-AUROC"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["P-AP"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m["P-F1max"] == pytest.approx(_sk_f1max(y, s), abs=1e-12)
    assert m["mAD"] == pytest.approx(np.mean([m[k] for k in ALL_KEYS[:-1]]))
    assert all(0 <= m[k] <= 1 for k in ALL_KEYS)


def test_binned_counts_are_exact_counts_of_bucketed_scores():
    _, _, maps, masks = _class_data(5)
    lo, hi, bins = float(maps.min()), float(maps.max()), 50
    tps_b, fps_b = binned_counts(zip(maps, masks, strict=True), lo, hi, bins)
    tps_e, fps_e = exact_counts(bin_index(maps.ravel(), lo, hi, bins), masks.ravel())
    occupied = np.r_[True, np.diff(tps_b + fps_b) > 0]  # empty bins repeat the previous point
    np.testing.assert_array_equal(tps_b[occupied], tps_e)
    np.testing.assert_array_equal(fps_b[occupied], fps_e)
    for f in (auroc_from_counts, ap_from_counts):
        assert f(tps_b, fps_b) == pytest.approx(f(tps_e, fps_e), abs=1e-12)
    assert f1max_from_counts(tps_b, fps_b)[0] == pytest.approx(f1max_from_counts(tps_e, fps_e)[0])


def test_binned_pixel_metrics_approach_exact():
    _, _, maps, masks = _class_data(6, n=16, size=32)
    exact = pixel_metrics(maps, masks)
    binned = pixel_metrics(maps, masks, method="binned", num_bins=4096)
    for k in ("P-AUROC", "P-AP", "P-F1max"):
        assert binned[k] == pytest.approx(exact[k], abs=2e-3), k
    assert binned["AUPRO"] == exact["AUPRO"]


@pytest.mark.parametrize("seed", range(3))
def test_aupro_histogram_equals_loop(seed):
    _, _, maps, masks = _class_data(seed, separation=1.0)
    masks[-1, 0, 0] = masks[-1, 1, 1] = True  # diagonal neighbours: one 8-connected region
    thresholds = pro_thresholds(maps, 37)
    fpr_fast, pro_fast = pro_curve(maps.astype(np.float32), masks, thresholds)
    fpr_loop, pro_loop = pro_curve_loop(maps.astype(np.float32), masks, thresholds)
    np.testing.assert_allclose(fpr_fast, fpr_loop, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pro_fast, pro_loop, rtol=0, atol=1e-12)
    value = aupro(maps, masks, 37)
    assert value == aupro(maps, masks, 37, method="loop") and 0 <= value <= 1


def test_aupro_hand_cases():
    _, _, maps, masks = _class_data(7, n=20, size=32)
    assert aupro(masks.astype(float), masks) == 1.0  # perfect map: vertical curve at PRO 1
    assert aupro(1.0 - masks, masks) == 0.0  # defects get the lowest score
    noise = np.random.default_rng(0).random(masks.shape)
    # uninformative map: PRO ~= FPR on [0, 0.3), rescaled to [0, 1] -> area ~= 0.3 / 2
    assert aupro(noise, masks, 200) == pytest.approx(0.15, abs=0.02)
    # by hand: points (FPR, PRO) = (0.2, 0.8), (0.1, 0.5), (0, 0); (0.5, 1) dropped
    fpr, pro = np.array([0.5, 0.2, 0.1, 0.0]), np.array([1.0, 0.8, 0.5, 0.0])
    assert aupro_from_curve(fpr, pro) == pytest.approx(0.5 * (0.25 + 0.65))
    with pytest.raises(ValueError, match="max_fpr"):
        aupro_from_curve(fpr, pro, max_fpr=0.0)


def test_aupro_definitions_on_hand_computed_cases():
    # one image of six pixels, one region {0, 1}; four normal pixels (FPR steps of 0.25)
    maps = np.array([[[0.9, 0.5, 0.7, 0.5, 0.2, 0.1]]])
    masks = np.array([[[1, 1, 0, 0, 0, 0]]], bool)
    # mvtec: points (0,0) (0,.5) (.25,.5) (.5,1) (.75,1) (1,1); PRO at FPR .3 interpolates to .6:
    # area = .25 * .5 + .05 * (.5 + .6) / 2 = .1525, / .3
    assert aupro_mvtec(maps, masks) == pytest.approx(0.1525 / 0.3, abs=1e-12)
    # mambaad: thresholds in [0.1, 0.9) with FPR < .3 give only (0, .5) and (.25, .5) -> .5
    assert aupro(maps, masks) == pytest.approx(0.5, abs=1e-12)
    # two images: regions {A0} (weight 1/2) and {B2, B3} (1/4 each); five normal pixels
    maps = np.array([[[0.8, 0.9, 0.1, 0.2]], [[0.3, 0.4, 0.6, 0.05]]])
    masks = np.array([[[1, 0, 0, 0]], [[0, 0, 1, 1]]], bool)
    # mvtec: (0,0) (.2,0) (.2,.5) (.2,.75) (.4,.75): area 0 + .1 * .75, / .3 = .25
    assert aupro_mvtec(maps, masks) == pytest.approx(0.25, abs=1e-12)
    # mambaad: every kept threshold has FPR .2 (a vertical curve) -> its max PRO, .75
    assert aupro(maps, masks) == pytest.approx(0.75, abs=1e-12)
    got = pixel_metrics(maps, masks, aupro_definition="mvtec")["AUPRO"]
    assert got == pytest.approx(0.25, abs=1e-12)
    with pytest.raises(ValueError, match="aupro_definition"):
        pixel_metrics(maps, masks, aupro_definition="anomalib")


@pytest.mark.parametrize("seed", [0, 1])
def test_aupro_mvtec_on_a_threshold_grid_approaches_every_threshold(seed):
    _, _, maps, masks = _class_data(seed, n=10, size=24)
    exact = aupro_mvtec(maps, masks)
    assert abs(aupro_mvtec(maps, masks, num_thresholds=20000) - exact) < 1e-3
    assert aupro_mvtec(masks.astype(float), masks) == pytest.approx(1.0, abs=1e-12)
    assert pixel_metrics(maps, masks, method="binned", num_bins=20000,
                         aupro_definition="mvtec")["AUPRO"] == pytest.approx(exact, abs=1e-3)


def test_accepts_torch_and_channel_dim():
    scores, labels, maps, masks = _class_data(8)
    ref = compute_metrics(scores, labels, maps, masks)
    got = compute_metrics(torch.from_numpy(scores), torch.from_numpy(labels),
                          torch.from_numpy(maps)[:, None], torch.from_numpy(masks).float()[:, None])
    assert got == pytest.approx(ref)
    assert set(compute_metrics(scores, labels)) == {"I-AUROC", "I-AP", "I-F1max"}


def test_aggregate_is_the_mean_over_classes():
    per_class = {f"c{i}": compute_metrics(*_class_data(i)) for i in range(3)}
    mean = aggregate(per_class)
    assert list(mean) == list(ALL_KEYS)
    for k in ALL_KEYS:
        assert mean[k] == pytest.approx(np.mean([m[k] for m in per_class.values()]))
    assert mean["mAD"] == pytest.approx(mad(mean))
    with pytest.raises(ValueError, match="empty"):
        aggregate({})
    with pytest.raises(ValueError, match="different keys"):
        aggregate({"a": {"I-AUROC": 1.0}, "b": {"I-AP": 1.0}})
    per_class["c1"] = dict(per_class["c1"], AUPRO=float("nan"))
    assert covered_classes(per_class)["AUPRO"] == ["c0", "c2"]
    mean = aggregate(per_class)
    assert mean["AUPRO"] == pytest.approx((per_class["c0"]["AUPRO"] + per_class["c2"]["AUPRO"]) / 2)


def test_bad_input_is_named():
    scores, labels, maps, masks = _class_data(9)
    with pytest.raises(ValueError, match="class 'screw'.*no anomalous"):
        compute_metrics(scores, np.zeros_like(labels), cls="screw")
    with pytest.raises(ValueError, match="no normal"):
        compute_metrics(scores, np.ones_like(labels))
    with pytest.raises(ValueError, match="scores has 1 NaN"):
        compute_metrics(np.r_[np.nan, scores[1:]], labels)
    bad_maps = maps.copy()
    bad_maps[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="maps has 1 NaN/inf"):
        compute_metrics(scores, labels, bad_maps, masks)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        compute_metrics(scores[:-1], labels)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        compute_metrics(scores, labels, maps[:, :-1], masks)
    with pytest.raises(ValueError, match="masks is None"):
        compute_metrics(scores, labels, maps, None)
    with pytest.raises(ValueError, match="0/1"):
        compute_metrics(scores, labels, maps, masks * 255)
    with pytest.raises(ValueError, match="no anomalous pixel"):
        compute_metrics(scores, labels, maps, np.zeros_like(masks))
    wrong = masks.copy()
    wrong[0, 3, 3] = True
    with pytest.raises(ValueError, match=r"images \[0\] are labelled good"):
        compute_metrics(scores, labels, maps, wrong)
    with pytest.raises(ValueError, match="method"):
        pixel_metrics(maps, masks, method="fast")


def test_auroc_standard_error_matches_the_spread_of_auroc_over_resampled_test_sets():
    """Eq. (4): on binormal scores (normal ~ N(0, 1), anomalous ~ N(1.8, 1), true AUROC
    Phi(1.8 / sqrt 2) = 0.899) with BSData's test sizes (87 anomalous, 103 normal), the
    Hanley-McNeil standard error agrees with the standard deviation of the measured AUROC over
    many drawn test sets; a bad argument is an error naming it."""
    import pytest

    from mambaadv2_ref.metrics.curves import auroc_from_counts, auroc_standard_error, exact_counts

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(87), np.zeros(103)]
    measured = [auroc_from_counts(*exact_counts(
        np.r_[rng.normal(1.8, 1, 87), rng.normal(0, 1, 103)], labels)) for _ in range(1500)]
    se = auroc_standard_error(float(np.mean(measured)), 87, 103)
    assert abs(np.mean(measured) - 0.899) < 0.005
    assert 0.85 < se / np.std(measured) < 1.15, (se, np.std(measured))
    assert auroc_standard_error(1.0, 10, 10) == 0.0
    with pytest.raises(ValueError, match="fraction, not percent"):
        auroc_standard_error(89.0, 87, 103)
    with pytest.raises(ValueError, match="num_pos"):
        auroc_standard_error(0.9, 0, 103)


def test_paired_auroc_difference_matches_its_spread_over_drawn_test_sets():
    """Eq. (5): two detectors scoring the same images with correlated errors (a shared
    per-image term), BSData's test sizes. The components' means are each AUROC (eq. 1); the
    DeLong standard error of the difference agrees with its standard deviation over many drawn
    test sets, and is well below the unpaired sqrt(SE_a^2 + SE_b^2) of eq. (4); a detector
    against itself differs by exactly 0 with SE 0; shapes and labels are checked."""
    import pytest

    from mambaadv2_ref.metrics.curves import (
        auroc_from_counts,
        auroc_standard_error,
        exact_counts,
        paired_auroc_difference,
        structural_components,
    )

    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(87), np.zeros(103)].astype(int)

    def draw():
        shared = rng.normal(0, 1, 190) + 1.6 * labels
        return shared + rng.normal(0, 0.5, 190), shared + rng.normal(0, 0.5, 190) + 0.2 * labels

    a, b = draw()
    v, w = structural_components(a, labels)
    assert v.mean() == pytest.approx(auroc_from_counts(*exact_counts(a, labels)))
    assert w.mean() == pytest.approx(v.mean())
    diffs, ses, unpaired = [], [], []
    for _ in range(800):
        a, b = draw()
        d, se = paired_auroc_difference(a, b, labels)
        diffs.append(d)
        ses.append(se)
        aa, ab = (auroc_from_counts(*exact_counts(x, labels)) for x in (a, b))
        assert d == pytest.approx(aa - ab)
        unpaired.append(np.hypot(auroc_standard_error(aa, 87, 103),
                                 auroc_standard_error(ab, 87, 103)))
    assert 0.85 < np.mean(ses) / np.std(diffs) < 1.15, (np.mean(ses), np.std(diffs))
    assert np.mean(ses) < 0.6 * np.mean(unpaired)
    assert paired_auroc_difference(a, a, labels) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same images"):
        paired_auroc_difference(a, b[:-1], labels)
    with pytest.raises(ValueError, match="at least two"):
        paired_auroc_difference(a[:3], b[:3], np.array([1, 0, 0]))
