"""The patchcore-options study: one fit per distinct memory bank, scoring variants sharing it
score exactly as `evaluate` does on a run fitted with those options, and the JSON reads back."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mambaadv2_ref.evaluate import METRIC_KEYS, evaluate
from mambaadv2_ref.studies import patchcore_options as study
from mambaadv2_ref.train import TrainConfig, train


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A one-class MVTec-layout set: 4 smooth normal images, 2 good and 2 bright-square tests."""
    root = tmp_path_factory.mktemp("pc_options")
    rng = np.random.default_rng(0)

    def image() -> np.ndarray:
        return (120 + 10 * rng.standard_normal((48, 48, 3))).clip(0, 255).astype(np.uint8)

    for i in range(4):
        _write(root / f"part/train/good/{i:03d}.png", image())
    for i in range(2):
        _write(root / f"part/test/good/{i:03d}.png", image())
        bad, mask = image(), np.zeros((48, 48), np.uint8)
        bad[10 + 8 * i:22 + 8 * i, 14:30] = 255
        mask[10 + 8 * i:22 + 8 * i, 14:30] = 255
        _write(root / f"part/test/spot/{i:03d}.png", bad)
        _write(root / f"part/ground_truth/spot/{i:03d}_mask.png", mask)
    return root


def test_study_shares_banks_and_matches_evaluate(dataset, tmp_path):
    variants = {n: study.VARIANTS[n] for n in ("defaults", "reweighted", "pool_include_pad")}
    rows = study.run_study(str(dataset), tmp_path / "runs", variants, image_size=64,
                           coreset_ratio=0.25)
    by_name = {r["variant"]: r for r in rows}
    assert set(by_name) == set(variants)
    assert by_name["defaults"]["fit_run"] == by_name["reweighted"]["fit_run"]  # one bank
    assert by_name["pool_include_pad"]["fit_run"] != by_name["defaults"]["fit_run"]
    assert by_name["reweighted"]["config"]["image_score"] == "reweighted"
    # the reweighted variant scored on the shared bank == a run fitted with the option, evaluated
    run = tmp_path / "reweighted_run"
    train(TrainConfig(out=str(run), data=str(dataset), model="patchcore", profile="paper",
                      encoder="efficientnet_lite0", device="cpu", image_size=64,
                      model_overrides={"coreset_ratio": 0.25, "image_score": "reweighted"}))
    expected = evaluate(run, device="cpu", save_maps=True)["mean"]
    for key in METRIC_KEYS:
        assert by_name["reweighted"]["metrics"][key] == pytest.approx(100 * expected[key],
                                                                       abs=1e-6)
    shared = study.score_variants(Path(by_name["defaults"]["fit_run"]), variants, "cpu")
    saved = np.load(run / "maps" / "part.npz")["scores"]
    np.testing.assert_allclose(shared["reweighted"]["scores"]["part"], saved, rtol=1e-6)
    assert not np.allclose(shared["defaults"]["scores"]["part"], saved)  # the option acts
    # a second run reuses the fitted banks
    again = study.run_study(str(dataset), tmp_path / "runs", {"defaults": {}}, image_size=64,
                            coreset_ratio=0.25)
    assert again[0]["fit_reused"] and again[0]["metrics"] == by_name["defaults"]["metrics"]
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"rows": rows}))
    table = study.load_table(path)
    assert [r["variant"] for r in table] == ["defaults", "reweighted", "pool_include_pad"]
    assert study.markdown(rows).count("\n") == len(rows) + 2


def test_fit_options_leave_out_the_scoring_fields():
    assert study.fit_options(study.ANOMALIB) == {"pool_include_pad": True,
                                                 "projection": "sparse_jl", "jl_eps": 0.9}
    assert study.fit_options(study.VARIANTS["reweighted"]) == {}


def test_anomalib_reference_reads_the_committed_peers_row():
    ref = study.anomalib_reference("bsdata", "efficientnet_lite0", 256)
    assert ref["coreset_ratio"] == 0.01 and ref["anomalib"] == "2.7.0"
    assert ref["metrics"]["I-AUROC"] == pytest.approx(92.8, abs=0.05)
    assert study.anomalib_reference("bsdata", "efficientnet_lite0", 128) is None
    assert study.anomalib_reference("nope", "efficientnet_lite0", 256) is None
