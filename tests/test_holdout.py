"""`--set statistics_holdout=K`: K good training images per class kept out of training
(data.holdout, eq. H1), recorded in the run, and the statistics of `evaluate --readout z` taken
from them (CPU).

A tiny dataset with 10 training images per class (2 held out leave the 8 a class must keep), a
minuscule mambaadv2 (64 px, random encoder, a narrow decoder), 2 steps.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import FAST_RUN, SMALL_MODEL

from mambaadv2_ref import evaluate as evaluate_module
from mambaadv2_ref import train as train_module
from mambaadv2_ref.data import MVTecDataset, make_tiny_dataset
from mambaadv2_ref.data.holdout import (
    HOLDOUT_RULE,
    MIN_TRAIN_IMAGES,
    choose_holdout,
    holdout_indices,
    holdout_paths,
)
from mambaadv2_ref.evaluate import evaluate, load_readout_statistics, predict_split
from mambaadv2_ref.model.detectors import load_detector
from mambaadv2_ref.model.export import export_detector, run_output
from mambaadv2_ref.model.readout import (
    EPS_FRACTION,
    HOLDOUT_SPLIT,
    STATISTICS_FROM,
    pixel_statistics,
)
from mambaadv2_ref.predict import predict
from mambaadv2_ref.train import train
from mambaadv2_ref.train_config import TrainConfig, config_from_sets

SMALL, FAST = SMALL_MODEL, FAST_RUN
# the keys metrics_z.json's "readout" had before the setting existed (a run without hold-out)
READOUT_KEYS = {"name", "meaning", "statistics_from", "split", "train_images", "eps_fraction",
                "eps"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two classes of 10 training, 2 good and 2 defect test images, 64 px."""
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), image_size=64, num_train=10)


class RecordingLoader(train_module.DataLoader):
    """The training DataLoader, remembering its dataset and every image path it yields."""

    seen: list = []
    paths: list = []

    def __iter__(self):
        """The batches of DataLoader, their paths recorded. Implements: no equation."""
        RecordingLoader.seen.append(self.dataset)
        for batch in super().__iter__():
            RecordingLoader.paths.extend(batch["path"])
            yield batch


@pytest.fixture(scope="module")
def held_run(data, tmp_path_factory):
    """A 2-step run holding out 2 of the 10 training images per class; (out, meta, paths the
    training loader yielded, its dataset)."""
    out = tmp_path_factory.mktemp("runs") / "held"
    RecordingLoader.seen, RecordingLoader.paths = [], []
    mp = pytest.MonkeyPatch()
    mp.setattr(train_module, "DataLoader", RecordingLoader)
    try:
        cfg = config_from_sets(TrainConfig(out=str(out), data=str(data), **FAST),
                               {**SMALL, "statistics_holdout": "2"}, set(SMALL))
        meta = train(cfg)
    finally:
        mp.undo()
    return out, meta, list(RecordingLoader.paths), RecordingLoader.seen[-1]


def test_the_rule_is_evenly_spaced_in_file_order_and_refuses_what_leaves_too_few(data):
    """Eq. (H1): the centres of K equal slices of the sorted file order, independent of any
    seed; K < 0, K = 1 and a class left with fewer than 8 images are refused by name."""
    assert holdout_indices(10, 2) == [2, 7] and holdout_indices(122, 4) == [15, 45, 76, 106]
    assert holdout_indices(5, 5) == [0, 1, 2, 3, 4] and holdout_indices(7, 0) == []
    for n in range(1, 40):
        for k in range(n + 1):
            idx = holdout_indices(n, k)
            assert len(set(idx)) == k and all(0 <= i < n for i in idx)
    samples = MVTecDataset(data, split="train", image_size=64).samples
    held = choose_holdout(list(reversed(samples)), 2)  # the order given does not matter
    assert {c: [s.path.name for s in v] for c, v in held.items()} == {
        "alpha": ["002.png", "007.png"], "beta": ["002.png", "007.png"]}
    assert choose_holdout(samples, 0) == {}
    with pytest.raises(ValueError, match="statistics_holdout must be >= 0"):
        choose_holdout(samples, -1)
    with pytest.raises(ValueError, match="statistics_holdout must be 0 or >= 2"):
        choose_holdout(samples, 1)
    with pytest.raises(ValueError, match=r"statistics_holdout=3: class 'alpha' has 10 training "
                                         r"images.*leave 7, fewer than 8.*<= 2"):
        choose_holdout(samples, 3)
    assert MIN_TRAIN_IMAGES == 8


def test_trainconfig_and_set_refuse_bad_holdouts():
    """`--set statistics_holdout=...`: typed, >= 0 and not 1, each error naming the setting."""
    for value, match in (("-1", "statistics_holdout must be >= 0"),
                         ("1", "statistics_holdout must be 0 or >= 2"),
                         ("two", "--set statistics_holdout=two: expected int")):
        with pytest.raises(ValueError, match=match):
            config_from_sets(TrainConfig(out="x"), {"statistics_holdout": value}, set())
    assert config_from_sets(TrainConfig(out="x"), {"statistics_holdout": "4"},
                            set()).statistics_holdout == 4
    assert TrainConfig(out="x").statistics_holdout == 0


def test_a_class_left_with_too_few_images_is_refused_before_any_work(data, tmp_path):
    """3 of 10 leave 7 < 8: train refuses, naming the class and its count, and writes nothing."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="class 'alpha' has 10 training images"):
        train(TrainConfig(out=str(out), data=str(data), statistics_holdout=3,
                          model_overrides=dict(SMALL), **FAST))
    assert not (out / "checkpoint.json").exists()


def test_held_out_images_are_recorded_and_never_reach_the_training_loader(held_run, data):
    """The run's JSON lists the held-out files (eq. H1), num_train_images counts the trained
    ones only, no batch holds a held-out image, and the fingerprint covers every file."""
    out, meta, yielded, dataset = held_run
    settings = meta["train"]
    files = settings["statistics_holdout_files"]
    assert settings["statistics_holdout"] == 2 and settings["statistics_holdout_rule"] == (
        HOLDOUT_RULE)
    assert files == {c: [f"{c}/train/good/002.png", f"{c}/train/good/007.png"]
                     for c in ("alpha", "beta")}
    held = {str(data.resolve() / f) for v in files.values() for f in v}
    assert settings["num_train_images"] == len(dataset) == 16  # 2 x (10 - 2)
    assert not held & {str(s.path) for s in dataset.samples}
    assert yielded and not held & set(yielded)  # every batch drawn
    stored = json.loads((out / "checkpoint.json").read_text())["train"]
    assert stored["statistics_holdout_files"] == files
    full = MVTecDataset(data, split="train", image_size=64)  # the fingerprint: every file
    assert settings["data_fingerprint"] == train_module.dataset_fingerprint(full.samples,
                                                                            data.resolve())


def test_resume_refuses_a_changed_holdout_and_an_old_checkpoint_is_a_run_without(data,
                                                                                 tmp_path):
    """A resume cannot change statistics_holdout; a checkpoint written before the setting
    existed is a run without hold-out (it resumes, with --extend here, only at 0)."""
    out = tmp_path / "run"
    cfg = TrainConfig(out=str(out), data=str(data), statistics_holdout=2, stop_at=1,
                      model_overrides=dict(SMALL), **FAST)
    train(cfg)
    resume = TrainConfig(**{**cfg.__dict__, "resume": True, "stop_at": None})
    with pytest.raises(ValueError, match="statistics_holdout: 2 -> 0"):
        train(TrainConfig(**{**resume.__dict__, "statistics_holdout": 0}))
    assert train(resume)["step"] == 2
    manifest = out / "checkpoint.json"
    meta = json.loads(manifest.read_text())
    for key in ("statistics_holdout", "statistics_holdout_files", "statistics_holdout_rule"):
        del meta["train"][key]  # as written before the setting existed
    meta["train"]["num_train_images"] = 20
    manifest.write_text(json.dumps(meta))
    longer = TrainConfig(**{**resume.__dict__, "steps": 3, "extend": True})
    with pytest.raises(ValueError, match="statistics_holdout: 0 -> 2"):
        train(longer)
    assert train(TrainConfig(**{**longer.__dict__, "statistics_holdout": 0}))["step"] == 3


def test_z_statistics_come_from_the_held_out_images_and_the_metadata_says_so(held_run, data,
                                                                              tmp_path):
    """evaluate --readout z on a hold-out run: mu, sigma are `pixel_statistics` of the held-out
    images' maps (not of the train split's), metrics_z.json and readout_z/ say where they came
    from, and predict --readout z reads them; the exported detector does the same."""
    out = tmp_path / "run"
    shutil.copytree(held_run[0], out)
    z = evaluate(out, device="cpu", readout="z")
    readout = z["readout"]
    assert readout["split"] == HOLDOUT_SPLIT == "train (held out)"
    assert readout["statistics_from"].startswith(
        "held-out good training images (2 per class), never trained on")
    assert readout["train_images"] == {"alpha": 2, "beta": 2}
    assert readout["held_out"] == held_run[1]["train"]["statistics_holdout_files"]
    model, meta = load_detector(out, device="cpu")
    paths = holdout_paths(readout["held_out"], data, "alpha")
    held = MVTecDataset(data, classes=["alpha"], split="train", image_size=64, only=paths)
    assert [s.path.name for s in held.samples] == ["002.png", "007.png"]
    expected = pixel_statistics(predict_split(model, held, torch.device("cpu"), 8)["maps"], "alpha")
    saved = load_readout_statistics(out, "alpha", meta["step"])
    np.testing.assert_allclose(saved["mu"], expected["mu"])
    np.testing.assert_allclose(saved["sigma"], expected["sigma"])
    assert saved["eps"] == pytest.approx(expected["eps"]) and saved["split"] == HOLDOUT_SPLIT
    trained = MVTecDataset(data, classes=["alpha"], split="train", image_size=64)
    other = pixel_statistics(predict_split(model, trained, torch.device("cpu"), 8)["maps"], "alpha")
    assert not np.allclose(saved["mu"], other["mu"])  # not the train split's statistics
    rows = predict(out, data / "alpha" / "test" / "good", tmp_path / "p", cls="alpha",
                   device="cpu", readout="z")
    assert len(rows) == 2
    note = json.loads((tmp_path / "p" / "predict.json").read_text())["threshold_note"]
    assert "from its 2 held-out good training images" in note
    path = export_detector(out, tmp_path / "held.safetensors")
    again = evaluate(path, device="cpu", readout="z")
    assert again["readout"] == readout
    np.testing.assert_allclose(load_readout_statistics(path, "alpha", meta["step"])["mu"],
                               expected["mu"], rtol=1e-5)
    assert (run_output(path, "readout_z") / "beta.npz").is_file()


def test_a_missing_held_out_image_is_an_error_naming_it_before_any_work(held_run, data,
                                                                         tmp_path):
    """A held-out file gone from the dataset: evaluate --readout z names it and writes nothing
    (the raw readout still runs); a manifest that lists no held-out files is refused too."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "beta" / "train" / "good" / "007.png").unlink()
    out = tmp_path / "run"
    shutil.copytree(held_run[0], out)
    with pytest.raises(ValueError, match=r"class 'beta': 1 of the 2 good training images the run "
                                         r"held out .* missing: .*beta/train/good/007\.png"):
        evaluate(out, data=copy, device="cpu", readout="z")
    assert not (out / "metrics_z.json").exists() and not (out / "readout_z").exists()
    evaluate(out, data=copy, device="cpu")  # the raw readout needs no held-out image
    meta = json.loads((out / "checkpoint.json").read_text())
    meta["train"]["statistics_holdout_files"] = {}  # a damaged manifest: no silent fallback
    (out / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="statistics_holdout=2 but list"):
        evaluate(out, device="cpu", readout="z")


def test_without_a_holdout_training_and_the_z_metadata_are_unchanged(data, tmp_path):
    """The default 0: every training image trained on, no files listed, and metrics_z.json's
    readout and readout_z/<cls>.npz exactly as before the setting existed (train split)."""
    out = tmp_path / "run"
    meta = train(TrainConfig(out=str(out), data=str(data), model_overrides=dict(SMALL),
                             **FAST))
    assert meta["train"]["statistics_holdout"] == 0 and meta["train"]["num_train_images"] == 20
    assert "statistics_holdout_files" not in meta["train"]
    assert evaluate_module.holdout_of(meta["train"]) is None
    readout = evaluate(out, device="cpu", readout="z")["readout"]
    assert set(readout) == READOUT_KEYS and readout["split"] == "train"
    assert readout["statistics_from"] == STATISTICS_FROM
    assert readout["train_images"] == {"alpha": 10, "beta": 10}
    assert readout["eps_fraction"] == EPS_FRACTION
    with np.load(out / "readout_z" / "alpha.npz") as f:
        assert sorted(f.files) == ["eps", "images", "mu", "sigma", "step"]


def test_patchcore_leaves_the_held_out_images_out_of_its_memory_bank(data, tmp_path,
                                                                     monkeypatch):
    """PatchCore accepts a hold-out: its memory bank is fitted on the 16 trained images only."""
    RecordingLoader.seen, RecordingLoader.paths = [], []
    monkeypatch.setattr(train_module, "DataLoader", RecordingLoader)
    meta = train(TrainConfig(out=str(tmp_path / "pc"), data=str(data), model="patchcore",
                             statistics_holdout=2, model_overrides={"coreset_ratio": 0.5},
                             **FAST))
    held = {str(data.resolve() / f) for v in meta["train"]["statistics_holdout_files"].values()
            for f in v}
    assert meta["train"]["num_train_images"] == 16 and len(RecordingLoader.paths) == 16
    assert not held & set(RecordingLoader.paths)
