"""Exported detectors (model.export): small files, the same detector as the run, clear errors.

A minuscule mambaadv2 run (2 steps, 64 px, a small decoder) trains with the real pretrained
efficientnet_lite0 weights (the offline package is installed), so the encoder is dropped from
the export and rebuilt on loading; "other weights installed" is simulated by pointing the
encoder at a copy of the offline .pth with one value changed.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import FAST_RUN, SMALL_MODEL
from safetensors.torch import load_file, save_file

import mambaadv2_ref.model.encoder as encoder_module
from mambaadv2_ref.checkpoint import file_sha256, save_checkpoint
from mambaadv2_ref.cli import main
from mambaadv2_ref.data import make_tiny_dataset
from mambaadv2_ref.evaluate import evaluate, load_readout_statistics, save_readout_statistics
from mambaadv2_ref.model import export
from mambaadv2_ref.model.detectors import build_detector, load_detector
from mambaadv2_ref.model.encoder import offline_weights_path
from mambaadv2_ref.model.export import (
    export_detector,
    load_exported,
    read_exported,
    run_output,
    sidecar_path,
)
from mambaadv2_ref.predict import predict
from mambaadv2_ref.train import train
from mambaadv2_ref.train_config import TrainConfig

SMALL = SMALL_MODEL
FAST = {**FAST_RUN, "pretrained": True}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), image_size=64, num_train=4)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A 2-step mambaadv2 run with the pretrained encoder."""
    out = tmp_path_factory.mktemp("runs") / "v2"
    train(TrainConfig(out=str(out), data=str(data), model_overrides=dict(SMALL), **FAST))
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    return export_detector(run, tmp_path_factory.mktemp("exported") / "v2.safetensors")


@pytest.fixture(scope="module")
def z_run(run, tmp_path_factory):
    """A copy of `run` evaluated raw and with `--readout z`: RUN/metrics.json,
    RUN/metrics_z.json and RUN/readout_z/."""
    out = shutil.copytree(run, tmp_path_factory.mktemp("z") / "run")
    evaluate(out, device="cpu")
    evaluate(out, device="cpu", readout="z")
    assert sorted(p.name for p in (out / "readout_z").iterdir()) == ["alpha.npz", "beta.npz"]
    return out


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """A copy of the offline lite0 .pth with one value changed ("other weights installed")."""
    tensors = torch.load(offline_weights_path("efficientnet_lite0"), map_location="cpu",
                         weights_only=True)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first].clone(memory_format=torch.contiguous_format)
    tensors[first].view(-1)[0] += 1e-3
    path = tmp_path_factory.mktemp("weights") / "other_lite0.pth"
    torch.save(tensors, path)
    return str(path)


def _images(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def _same_outputs(a, b, size: int = 64) -> bool:
    """torch.equal of the anomaly maps and image scores of two detectors on fixed images."""
    (ma, sa), (mb, sb) = a.anomaly_map(_images(size)), b.anomaly_map(_images(size))
    return torch.equal(ma, mb) and torch.equal(sa, sb)


def _copy_pair(path, folder):
    """Copy FILE.safetensors and FILE.json into `folder`; returns the copied tensor file."""
    shutil.copy(path, folder / path.name)
    shutil.copy(sidecar_path(path), sidecar_path(folder / path.name))
    return folder / path.name


def test_export_keeps_only_the_trained_tensors_and_is_small(run, exported):
    weights = next(run.glob("weights-step*.safetensors"))
    state = load_file(str(weights))
    tensors = load_file(str(exported))
    assert set(tensors) == {k for k in state if not k.startswith("encoder.")}
    assert all(torch.equal(tensors[k], state[k]) for k in tensors)
    assert exported.stat().st_size * 10 < weights.stat().st_size
    assert not list(exported.parent.glob("*optimizer*"))
    meta = json.loads(sidecar_path(exported).read_text())
    checkpoint = json.loads((run / "checkpoint.json").read_text())
    for key in ("model", "model_config", "profile", "step", "train", "history"):
        assert meta[key] == checkpoint[key], key
    assert meta["encoder"]["dropped"] and meta["encoder"]["name"] == "efficientnet_lite0"
    assert meta["tensors"]["sha256"] == file_sha256(exported)


def test_exported_detector_gives_exactly_the_runs_maps(run, exported):
    reference, _ = load_detector(run)
    model, meta = load_exported(exported)
    assert not model.training and meta["step"] == 2
    assert _same_outputs(model, reference)
    via_load_detector, _ = load_detector(exported)  # the one path of evaluate and predict
    assert _same_outputs(via_load_detector, reference)


def test_tampered_or_partial_tensor_file_is_refused(exported, tmp_path):
    path = _copy_pair(exported, tmp_path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"does not match the SHA-256 .*corrupt or modified"):
        load_exported(path)
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(ValueError, match=r"bytes but v2\.json records .*partial"):
        load_exported(path)


def test_other_encoder_weights_installed_are_refused(exported, other_weights, monkeypatch):
    monkeypatch.setattr(encoder_module, "offline_weights_path", lambda name: other_weights)
    with pytest.raises(ValueError) as err:
        load_exported(exported)
    message = str(err.value)
    assert str(exported) in message and "is not the one this detector was trained with" in message
    assert "same tensor names, dtypes and shapes with other values" in message


def test_a_run_whose_encoder_is_not_the_installed_one_keeps_it(run, other_weights,
                                                               monkeypatch, tmp_path):
    monkeypatch.setattr(encoder_module, "offline_weights_path", lambda name: other_weights)
    path = export_detector(run, tmp_path / "kept.safetensors")
    meta = json.loads(sidecar_path(path).read_text())
    assert not meta["encoder"]["dropped"] and "differs" in meta["encoder"]["why"]
    assert any(k.startswith("encoder.") for k in load_file(str(path)))
    assert _same_outputs(load_exported(path)[0], load_detector(run)[0])


def test_random_encoder_is_kept_and_loads_back(tmp_path):
    model = build_detector("mambaadv2", profile="tiny", pretrained=False,
                           overrides={**SMALL, "image_size": 64})
    save_checkpoint(tmp_path / "run", model, step=0,
                    meta={"model": "mambaadv2", "model_config": model.config.to_dict(),
                          "train": {"image_size": 64}, "history": []})
    path = export_detector(tmp_path / "run", tmp_path / "random.safetensors")
    meta = json.loads(sidecar_path(path).read_text())
    assert not meta["encoder"]["dropped"] and "pretrained=False" in meta["encoder"]["why"]
    assert _same_outputs(load_exported(path)[0], model.eval())


def test_missing_and_unexpected_tensors_are_named(exported, tmp_path):
    path = _copy_pair(exported, tmp_path)
    tensors = load_file(str(path))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    tensors["decoder.extra_weight"] = torch.zeros(3)
    save_file(tensors, str(path))
    meta = json.loads(sidecar_path(path).read_text())
    meta["tensors"].update(sha256=file_sha256(path), bytes=path.stat().st_size)
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"does not fit model 'mambaadv2'") as err:
        load_exported(path)
    assert dropped in str(err.value) and "decoder.extra_weight" in str(err.value)


def _no_sidecar(path):
    sidecar_path(path).unlink()


def _bad_json(path):
    sidecar_path(path).write_text('{"format": ')


def _foreign_json(path):
    sidecar_path(path).write_text(json.dumps({"model": "mambaadv2"}))


@pytest.mark.parametrize("damage, error, pattern", [
    (lambda p: p.unlink(), FileNotFoundError, r"no exported detector at .*v2\.safetensors"),
    (_no_sidecar, FileNotFoundError, r"v2\.json is missing: .*copy both"),
    (_bad_json, ValueError, r"v2\.json is not valid JSON"),
    (_foreign_json, ValueError, r"v2\.json is not the manifest of an exported detector"),
])
def test_bad_files_are_refused_before_any_model_is_built(exported, tmp_path, monkeypatch,
                                                         damage, error, pattern):
    path = _copy_pair(exported, tmp_path)
    damage(path)
    monkeypatch.setattr(export, "rebuild_detector", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(error, match=pattern):
        load_exported(path)
    with pytest.raises(error, match=pattern):
        read_exported(path)


def test_export_refuses_a_folder_without_checkpoint_and_a_bad_name(run, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*checkpoint\.json is missing"):
        export_detector(tmp_path, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match=r"must be a \.safetensors file"):
        export_detector(run, tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


def test_cli_export_then_evaluate_and_predict_the_file(run, data, tmp_path, capsys):
    run_copy = shutil.copytree(run, tmp_path / "run")
    assert main(["evaluate", "--run", str(run_copy), "--device", "cpu"]) == 0
    out = tmp_path / "shipped" / "v2.safetensors"
    assert main(["export", "--run", str(run_copy), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exported mambaadv2 (step 2)" in printed and "dropped" in printed
    copied = json.loads((tmp_path / "shipped" / "v2.metrics.json").read_text())
    assert copied == json.loads((run_copy / "metrics.json").read_text())

    (tmp_path / "shipped" / "v2.metrics.json").unlink()
    assert main(["evaluate", "--run", str(out), "--device", "cpu", "--save-maps"]) == 0
    again = json.loads((tmp_path / "shipped" / "v2.metrics.json").read_text())
    assert again["classes"] == copied["classes"]
    assert again["image_thresholds"] == copied["image_thresholds"]
    assert (tmp_path / "shipped" / "v2.maps" / "alpha.npz").is_file()
    preds = tmp_path / "preds"
    assert main(["predict", "--run", str(out), "--images", str(data / "alpha" / "test" / "stain"),
                 "--out", str(preds), "--class", "alpha", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(preds / "scores.csv")))
    assert len(rows) == 1 and float(rows[0]["threshold"]) == copied["image_thresholds"]["alpha"]


def test_patchcore_run_exports_its_memory_bank(data, tmp_path):
    run = tmp_path / "patchcore"
    train(TrainConfig(out=str(run), data=str(data), model="patchcore",
                      model_overrides={"coreset_ratio": 0.5}, **FAST))
    path = export_detector(run, tmp_path / "patchcore.safetensors")
    tensors = load_file(str(path))
    assert list(tensors) == ["memory_bank"] and tensors["memory_bank"].shape[0] > 1
    reference, _ = load_detector(run)
    model, meta = load_exported(path)
    assert meta["encoder"]["dropped"]
    assert torch.equal(model.memory_bank, reference.memory_bank)
    assert _same_outputs(model, reference)


def test_the_books_committed_detectors_load_and_match_their_manifests(tmp_path, monkeypatch):
    """book/detectors/: each exported detector loads (encoder fingerprint and SHA-256 checked),
    is the model its manifest names, and gives finite maps; a folder without it gives None."""
    from mambaadv2_ref.studies.results import DETECTORS_DIR, DETECTORS_ENV, committed_detector

    names = sorted(p.stem for p in DETECTORS_DIR.glob("*.safetensors"))
    assert names == ["tiny_mambaad_embedded", "tiny_mambaadv2_embedded"]
    for name in names:
        model, meta = committed_detector(name)
        assert meta["model"] == name.split("_")[1] and meta["step"] == 4000
        assert meta["model_config"]["backend"] == "auto"  # runs on CPUs whatever trained it
        size = meta["train"]["image_size"]
        maps, scores = model.anomaly_map(torch.rand(1, 3, size, size))
        assert maps.shape[-2:] == (size, size) and torch.isfinite(maps).all()
    monkeypatch.setenv(DETECTORS_ENV, str(tmp_path))
    assert committed_detector(names[0]) is None


def _predict_z(run_or_file, data, out):
    """predict --readout z --class alpha on alpha's test images: (path, score, threshold,
    decision) per image."""
    rows = predict(run_or_file, data / "alpha" / "test" / "stain", out, cls="alpha",
                   device="cpu", readout="z")
    return [(r["path"], r["score"], r["threshold"], r["is_anomalous"]) for r in rows]


def _make_stale(run_dir, classes, step=1):
    """Rewrite the z outputs of `run_dir` as if computed at another training `step` than its
    checkpoint's (2): metrics_z.json always, readout_z/<cls>.npz for `classes`."""
    metrics = json.loads((run_dir / "metrics_z.json").read_text())
    metrics["run"]["step"] = step
    (run_dir / "metrics_z.json").write_text(json.dumps(metrics))
    for cls in classes:
        save_readout_statistics(run_dir, cls, load_readout_statistics(run_dir, cls, None), step)


def test_export_after_evaluate_readout_z_carries_the_z_statistics(z_run, data, tmp_path):
    """FILE.metrics_z.json and FILE.readout_z/<cls>.npz are byte copies of the run's (no temp
    files left), the manifest says so, and predict --readout z on the file gives the run's
    scores, threshold and decisions."""
    path = export_detector(z_run, tmp_path / "v2.safetensors")
    assert run_output(path, "metrics_z.json").read_bytes() == (z_run / "metrics_z.json"
                                                               ).read_bytes()
    folder = run_output(path, "readout_z")
    assert sorted(p.name for p in folder.iterdir()) == ["alpha.npz", "beta.npz"]
    for npz in folder.iterdir():
        assert npz.read_bytes() == (z_run / "readout_z" / npz.name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "v2.json", "v2.metrics.json", "v2.metrics_z.json", "v2.readout_z", "v2.safetensors"]
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["readout_z"].startswith("z statistics for 2 classes (alpha, beta) copied")
    assert "metrics_z.json" in meta["readout_z"] and "copied" in meta["evaluation"]
    on_run = _predict_z(z_run, data, tmp_path / "p_run")
    on_file = _predict_z(path, data, tmp_path / "p_file")
    assert on_file == on_run and on_file[0][2] != ""  # same scores, threshold, decisions
    threshold = json.loads((z_run / "metrics_z.json").read_text())["image_thresholds"]["alpha"]
    assert on_file[0][2] == threshold


def test_export_removes_stale_z_copies_and_copies_only_current_classes(z_run, data, tmp_path):
    """Statistics of another step are not copied, and the copies a previous export left are
    removed (per file: a class still current is kept); the file then refuses predict --readout z
    with the stale-step error of a run."""
    run_dir = shutil.copytree(z_run, tmp_path / "run")
    path = export_detector(run_dir, tmp_path / "out" / "v2.safetensors")
    assert (run_output(path, "readout_z") / "beta.npz").is_file()
    _make_stale(run_dir, ["beta"])  # alpha still at the exported step, beta and metrics_z not
    export_detector(run_dir, path)
    assert [p.name for p in run_output(path, "readout_z").iterdir()] == ["alpha.npz"]
    assert not run_output(path, "metrics_z.json").exists()
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["readout_z"].startswith("z statistics for 1 class (alpha) copied")
    assert "no metrics_z.json at this step" in meta["readout_z"]

    _make_stale(run_dir, ["alpha", "beta"])
    export_detector(run_dir, path)
    assert not run_output(path, "readout_z").exists()  # the emptied folder goes too
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "v2.json", "v2.metrics.json", "v2.safetensors"]
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["readout_z"].startswith("no z readout at this step (run evaluate --readout z")
    assert "copied" in meta["evaluation"]  # the raw metrics.json is still of this step

    stale_copy = run_output(path, "readout_z")  # a stale folder copied by hand is refused
    shutil.copytree(run_dir / "readout_z", stale_copy)
    shutil.copy(run_dir / "metrics_z.json", run_output(path, "metrics_z.json"))
    with pytest.raises(ValueError, match="step 1 but the checkpoint is at step 2"):
        _predict_z(path, data, tmp_path / "p")


def test_export_without_z_copies_nothing_and_predict_readout_z_refuses(run, data, tmp_path):
    """A run never evaluated with --readout z: no z files beside the export, the manifest says
    why, and predict --readout z on the file refuses as on the run, before scoring."""
    path = export_detector(run, tmp_path / "v2.safetensors")
    assert not run_output(path, "metrics_z.json").exists()
    assert not run_output(path, "readout_z").exists()
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["readout_z"] == ("no z readout at this step (run evaluate --readout z on the run "
                                 "or on the file for predict --readout z)")
    with pytest.raises(ValueError, match=r"v2\.metrics_z\.json .*run evaluate --readout z first"):
        _predict_z(path, data, tmp_path / "p")
    with pytest.raises(ValueError, match="--readout z reads each map with one class"):
        predict(path, data / "alpha" / "test" / "stain", tmp_path / "p2", device="cpu",
                readout="z")
    assert not (tmp_path / "p" / "scores.csv").exists()


def test_evaluate_readout_z_on_the_file_saves_the_runs_statistics(z_run, tmp_path):
    """`evaluate --run FILE.safetensors --readout z` writes the same statistics as on the run
    (the exported detector gives exactly the run's maps)."""
    path = export_detector(z_run, tmp_path / "v2.safetensors")
    shutil.rmtree(run_output(path, "readout_z"))
    evaluate(path, device="cpu", readout="z")
    for cls in ("alpha", "beta"):
        mine, runs = (np.load(f / f"{cls}.npz") for f in (run_output(path, "readout_z"),
                                                          z_run / "readout_z"))
        for key in ("mu", "sigma", "eps", "images", "step"):
            np.testing.assert_array_equal(mine[key], runs[key])
