"""Bad input never gives a silent wrong result (issue 12): one test per case.

Every test writes its own tiny real files with PIL in tmp_path; none needs a dataset on disk.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mambaadv2_ref import run_safety
from mambaadv2_ref.data import MVTecDataset, check_dataset, dataset_fingerprint
from mambaadv2_ref.data.transforms import denormalise, load_image, load_mask
from mambaadv2_ref.evaluate import evaluate
from mambaadv2_ref.metrics import (
    ALL_KEYS,
    aggregate,
    aupro,
    aupro_mvtec,
    compute_metrics,
    covered_classes,
    undefined_metrics,
)
from mambaadv2_ref.predict import predict
from mambaadv2_ref.scans import backends


def _save(path: Path, image: Image.Image | np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(path)
    return path


def _square_mask(size: int = 16) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[4:8, 4:8] = 255
    return mask


def _tiny_root(root: Path) -> Path:
    """class w: two train images, one good and one crack test image (with a 0/255 mask)."""
    rng = np.random.default_rng(0)
    for rel in ("w/train/good/000.png", "w/train/good/001.png", "w/test/good/000.png",
                "w/test/crack/000.png"):
        _save(root / rel, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _save(root / "w/ground_truth/crack/000_mask.png", _square_mask())
    return root


def _write_stub_mamba_ssm(root: Path) -> None:
    """A mamba_ssm package as a CPU machine or a failed build leaves it: a kernel module imports,
    then the package's __init__ raises for the missing compiled Mamba-1 extension."""
    triton = root / "mamba_ssm" / "ops" / "triton"
    triton.mkdir(parents=True)
    (root / "mamba_ssm" / "__init__.py").write_text(
        "__version__ = '0.0-stub'\n"
        "from mamba_ssm.ops.triton import ssd_combined  # noqa: F401\n"
        "raise ModuleNotFoundError(\"No module named 'selective_scan_cuda'\",\n"
        "                          name='selective_scan_cuda')\n")
    (root / "mamba_ssm" / "ops" / "__init__.py").write_text("")
    (triton / "__init__.py").write_text("")
    (triton / "ssd_combined.py").write_text("def mamba_chunk_scan_combined(*args):\n"
                                            "    raise AssertionError('never called')\n")


def test_mamba_ssm_without_its_cuda_extension_is_reported_not_raised(tmp_path, monkeypatch):
    _write_stub_mamba_ssm(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        monkeypatch.delitem(sys.modules, name)
    backends._load.cache_clear()
    try:
        report = backends.available_backends()
    finally:
        backends._load.cache_clear()
        for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
            del sys.modules[name]
    assert report["torch"][0]
    for kernel in ("mamba_ssm_s6", "mamba_ssm_ssd", "mamba_ssm_mamba3"):
        ok, reason = report[kernel]
        assert not ok and "selective_scan_cuda" in reason, (kernel, reason)


def test_16bit_grey_png_is_scaled_not_clipped_white(tmp_path):
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    path = _save(tmp_path / "deep.png", ramp)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")  # what PIL makes of a 16-bit grey PNG
    x = denormalise(load_image(path, 16))
    for channel in x:  # the grey values in all three channels
        torch.testing.assert_close(channel, torch.from_numpy(ramp / 65535.0).float(),
                                   atol=1e-4, rtol=0)
    assert x.mean() == pytest.approx(0.5, abs=1e-3)  # not all white


def test_palette_and_coloured_masks_keep_their_defect_pixels(tmp_path):
    labels = np.zeros((16, 16), np.uint8)
    labels[4:8, 4:8] = 1  # dark red: grey level 38, lost by the old convert("L") > 127
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0])
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[4:8, 4:8] = (0, 0, 90)
    expected = torch.from_numpy(_square_mask() > 0).float()[None]
    for name, image in (("palette.png", palette), ("colour.png", colour)):
        assert torch.equal(load_mask(_save(tmp_path / name, image), 16), expected), name


def test_mask_that_is_not_binary_interpretable_is_refused_naming_it(tmp_path):
    blurred = np.zeros((16, 16), np.uint8)
    blurred[4:8, 4:8] = 255
    blurred[3, 4:8] = 90  # an anti-aliased edge
    blurred[8, 4:8] = 20
    path = _save(tmp_path / "soft_mask.png", blurred)
    with pytest.raises(ValueError, match=r"soft_mask\.png.*not binary"):
        load_mask(path, 16)


def test_check_dataset_names_every_bad_file_before_any_work(tmp_path):
    root = _tiny_root(tmp_path)
    assert check_dataset(root, progress=False) == {"files": 5, "images": 4, "masks": 1}
    (root / "w/train/good/001.png").write_bytes(b"not a png")  # corrupt
    good = root / "w/test/good/000.png"
    good.write_bytes(good.read_bytes()[:60])  # truncated
    _save(root / "w/ground_truth/crack/000_mask.png", np.zeros((9, 16), np.uint8))  # wrong size
    with pytest.raises(ValueError, match="3 bad file") as err:
        check_dataset(root, progress=False)
    message = str(err.value)
    for name in ("train/good/001.png", "test/good/000.png", "000_mask.png' is 16x9"):
        assert name in message, (name, message)
    with pytest.raises(ValueError, match="1 bad file"):
        check_dataset(root, splits=("train",), progress=False)


def test_dataset_fingerprint_sees_added_and_rewritten_files_not_the_root(tmp_path):
    import shutil

    root = _tiny_root(tmp_path / "a")
    samples = MVTecDataset(root, split="train").samples
    before = dataset_fingerprint(samples, root)
    shutil.copytree(root, tmp_path / "b")
    copy = tmp_path / "b"
    assert dataset_fingerprint(MVTecDataset(copy, split="train").samples, copy) == before
    _save(root / "w/train/good/002.png", np.zeros((16, 16, 3), np.uint8))
    assert dataset_fingerprint(MVTecDataset(root, split="train").samples, root) != before
    _save(copy / "w/train/good/000.png", np.zeros((16, 16, 3), np.uint8))  # another size
    assert dataset_fingerprint(MVTecDataset(copy, split="train").samples, copy) != before


def test_unreadable_image_sampled_by_the_dataset_is_named(tmp_path):
    root = _tiny_root(tmp_path)
    (root / "w/train/good/001.png").write_bytes(b"")
    dataset = MVTecDataset(root, split="train", image_size=16)
    with pytest.raises(ValueError, match=r"001\.png.*cannot be read"):
        dataset[1]


def test_aupro_raises_on_nan_instead_of_returning_zero():
    maps = np.random.default_rng(0).random((2, 8, 8))
    masks = np.zeros((2, 8, 8), bool)
    masks[1, 2:5, 2:5] = True
    maps[0, 0, 0] = np.nan
    for fn in (aupro, aupro_mvtec):
        with pytest.raises(ValueError, match="maps has 1 NaN/inf"):
            fn(maps, masks)


def test_one_label_class_is_marked_undefined_not_failing_all_classes():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 8, 8), np.uint8)
    masks[2:, 2:5, 2:5] = 1
    maps = rng.random((4, 8, 8)) + masks
    scores = maps.reshape(4, -1).max(1)
    labels = np.array([0, 0, 1, 1])
    only_good = compute_metrics(scores[:2], labels[:2], maps[:2], masks[:2], undefined="mark")
    assert undefined_metrics(labels[:2], masks[:2])["I-AUROC"] == "no anomalous test image"
    assert all(np.isnan(only_good[k]) for k in ALL_KEYS)
    both = compute_metrics(scores, labels, maps, masks, undefined="mark")
    mean = aggregate({"good_only": only_good, "both": both})
    assert mean == pytest.approx(both) and covered_classes({"a": only_good, "b": both}) == {
        k: ["b"] for k in ALL_KEYS}
    with pytest.raises(ValueError, match="no anomalous"):  # the default still refuses
        compute_metrics(scores[:2], labels[:2], maps[:2], masks[:2])


# --------------------------------------------------------------------- evaluate and predict
class GreyMapDetector:
    """A detector double: the anomaly map is the grey value of the normalised image (NaN for
    images listed in `nan_at`, by call number); counts its calls."""

    def __init__(self, nan_at=()):
        self.calls, self.nan_at = 0, set(nan_at)

    def anomaly_map(self, images):
        self.calls += 1
        maps = images.mean(dim=1)
        if self.calls in self.nan_at:
            maps[:, 0, 0] = float("nan")
        return maps, maps.flatten(1).amax(dim=1)


def _use_detector(monkeypatch, root: Path, detector, classes=("w",), step=5):
    from mambaadv2_ref import evaluate as evaluate_module
    from mambaadv2_ref import predict as predict_module

    meta = {"train": {"image_size": 16, "classes": list(classes), "data": str(root)},
            "model": "grey", "step": step}
    for module in (evaluate_module, predict_module):
        monkeypatch.setattr(module, "load_detector", lambda run_dir, device: (detector, meta))


def test_evaluate_names_a_bad_test_file_before_any_model_work(tmp_path, monkeypatch):
    root = _tiny_root(tmp_path / "data")
    (root / "w/test/crack/000.png").write_bytes(b"\x89PNG broken")
    detector = GreyMapDetector()
    _use_detector(monkeypatch, root, detector)
    with pytest.raises(ValueError, match=r"test/crack/000\.png"):
        evaluate(tmp_path / "run", device="cpu")
    assert detector.calls == 0


def test_evaluate_nan_map_is_an_error_naming_the_image(tmp_path, monkeypatch):
    root = _tiny_root(tmp_path / "data")
    _use_detector(monkeypatch, root, GreyMapDetector(nan_at={1}))
    with pytest.raises(ValueError, match=r"NaN/inf.*test/crack/000\.png"):
        evaluate(tmp_path / "run", device="cpu", batch_size=1)


def test_evaluate_marks_a_one_label_class_and_names_its_aupro_definition(tmp_path, monkeypatch):
    root = _tiny_root(tmp_path / "data")
    rng = np.random.default_rng(1)
    for rel in ("v/train/good/000.png", "v/test/good/000.png", "v/test/good/001.png"):
        _save(root / rel, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))  # no defect image
    _use_detector(monkeypatch, root, GreyMapDetector(), classes=("v", "w"))
    (tmp_path / "run").mkdir()
    result = evaluate(tmp_path / "run", device="cpu", pixel_method="binned",
                      aupro_definition="mvtec")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["classes"]["v"]["I-AUROC"] is None and saved["classes"]["w"]["I-AUROC"] >= 0
    assert saved["undefined"]["v"]["AUPRO"] == "no defect pixel in the masks"
    assert saved["mean_classes"]["mAD"] == ["w"] and saved["mean"] == saved["classes"]["w"]
    assert saved["aupro_definition"]["name"] == "mvtec" and saved["pixel_method"] == "binned"
    assert set(saved["image_thresholds"]) == {"w"} and result["mean"] == saved["mean"]
    with pytest.raises(ValueError, match="pixel_method"):
        evaluate(tmp_path / "run", device="cpu", pixel_method="fast")
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(tmp_path / "run", device="cpu", batch_size=0)


def test_save_maps_is_atomic_and_removes_stale_temp_files(tmp_path, monkeypatch):
    root = _tiny_root(tmp_path / "data")
    _use_detector(monkeypatch, root, GreyMapDetector())
    maps_dir = tmp_path / "run" / "maps"
    maps_dir.mkdir(parents=True)
    stale = maps_dir / ".w.npz.k3j2h1g0.tmp"  # left by a save that was killed
    stale.write_bytes(b"half")
    evaluate(tmp_path / "run", device="cpu", save_maps=True)
    assert not stale.exists()
    assert len(np.load(maps_dir / "w.npz")["scores"]) == 2
    before = (maps_dir / "w.npz").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="No space"):
        evaluate(tmp_path / "run", device="cpu", save_maps=True)
    assert (maps_dir / "w.npz").read_bytes() == before  # the old file, whole
    assert [p.name for p in maps_dir.iterdir()] == ["w.npz"]  # no temp left


def _images_folder(folder: Path, values=(40, 200)) -> Path:
    for i, v in enumerate(values):
        _save(folder / f"{i:03d}.png", np.full((16, 16, 3), v, np.uint8))
    return folder


def test_predict_skips_and_names_unreadable_files(tmp_path, monkeypatch, capsys):
    images = _images_folder(tmp_path / "in")
    (images / "001b.png").write_bytes(b"no image")
    _use_detector(monkeypatch, tmp_path, GreyMapDetector())
    rows = predict(tmp_path / "run", images, tmp_path / "out", device="cpu")
    assert [Path(r["path"]).name for r in rows] == ["000.png", "001.png"]
    assert "skipped image" in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert [Path(s["path"]).name for s in report["skipped"]] == ["001b.png"]
    assert len((tmp_path / "out" / "scores.csv").read_text().splitlines()) == 3
    (images / "000.png").write_bytes(b"")
    (images / "001.png").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 3 file"):
        predict(tmp_path / "run", images, tmp_path / "out", device="cpu")


def test_predict_keeps_every_row_done_when_interrupted(tmp_path, monkeypatch):
    class StopsAtTheSecond(GreyMapDetector):
        def anomaly_map(self, images):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().anomaly_map(images)

    _use_detector(monkeypatch, tmp_path, StopsAtTheSecond())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(
        {"run": {"step": 5}, "image_thresholds": {"w": 0.0}, "map_range": {"w": [-2.0, 2.0]}}))
    out = tmp_path / "out"
    stale = out / ".000.png_overlay.png.a1b2c3d4.tmp"
    out.mkdir()
    stale.write_bytes(b"")
    with pytest.raises(KeyboardInterrupt):
        predict(tmp_path / "run", _images_folder(tmp_path / "in"), out, device="cpu")
    rows = (out / "scores.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(str(tmp_path / "in" / "000.png"))
    assert (out / "000.png_overlay.png").stat().st_size > 0 and not stale.exists()


def test_predict_nan_map_is_an_error_naming_the_image(tmp_path, monkeypatch):
    _use_detector(monkeypatch, tmp_path, GreyMapDetector(nan_at={2}))
    with pytest.raises(ValueError, match=r"NaN/inf.*001\.png"):
        predict(tmp_path / "run", _images_folder(tmp_path / "in"), tmp_path / "out", device="cpu")


def test_predict_decides_with_the_stored_threshold_or_says_there_is_none(tmp_path, monkeypatch,
                                                                         capsys):
    _use_detector(monkeypatch, tmp_path, GreyMapDetector())
    images = _images_folder(tmp_path / "in")
    run = tmp_path / "run"
    run.mkdir()
    rows = predict(run, images, tmp_path / "a", device="cpu")
    assert "NO THRESHOLD" in capsys.readouterr().out
    assert all(r["threshold"] == "" and r["is_anomalous"] == "" for r in rows)
    low, high = (float(r["score"]) for r in rows)
    metrics = {"run": {"step": 5}, "image_thresholds": {"w": (low + high) / 2}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    rows = predict(run, images, tmp_path / "b", device="cpu")
    assert [r["is_anomalous"] for r in rows] == [0, 1]
    metrics["run"]["step"] = 3  # evaluated before training went on
    (run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="step 3 but the checkpoint is at step 5"):
        predict(run, images, tmp_path / "c", device="cpu")


def test_predict_draws_every_overlay_on_one_colour_scale(tmp_path, monkeypatch):
    from mambaadv2_ref import predict as predict_module

    limits = []
    original = predict_module.plot_heatmap_overlay

    def recording(*args, **kwargs):
        fig = original(*args, **kwargs)
        limits.append(fig.axes[1].images[-1])
        return fig

    monkeypatch.setattr(predict_module, "plot_heatmap_overlay", recording)
    _use_detector(monkeypatch, tmp_path, GreyMapDetector())
    rows = predict(tmp_path / "run", _images_folder(tmp_path / "in"), tmp_path / "out",
                   device="cpu")
    scale = json.loads((tmp_path / "out" / "predict.json").read_text())["colour_scale"]
    assert [im.get_clim() for im in limits] == [(scale["vmin"], scale["vmax"])] * 2
    low, high = (float(r["score"]) for r in rows)  # flat images: map = score everywhere
    assert (scale["vmin"], scale["vmax"]) == pytest.approx((low, high))
    assert scale["source"] == "this call's maps"


def test_predict_says_what_it_does_before_loading_the_model(tmp_path, monkeypatch, capsys):
    from mambaadv2_ref import predict as predict_module

    seen = []

    def load(run_dir, device):
        seen.append(capsys.readouterr().out)
        raise ValueError("stop here")

    monkeypatch.setattr(predict_module, "load_detector", load)
    with pytest.raises(ValueError, match="stop here"):
        predict(tmp_path / "run", _images_folder(tmp_path / "in"), tmp_path / "out", device="cpu")
    assert seen[0].startswith("predict: scoring 2 image(s)")


# ------------------------------------------------------------------------------ training
TRAIN_FAST = {"image_size": 64, "batch_size": 2, "pretrained": False, "log_every": 1,
              "checkpoint_minutes": 0.0}
TRAIN_SMALL = {"dims": (16, 8, 8, 8), "headdim": 8, "d_state": 4, "num_directions": 2}
CLI_FAST = ["--profile", "tiny", "--device", "cpu", "--set", "image_size=64", "--set",
            "batch_size=2", "--set", "pretrained=false", "--set", "dims=(16, 8, 8, 8)", "--set",
            "headdim=8", "--set", "d_state=4", "--set", "num_directions=2"]


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from mambaadv2_ref.data import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.mktemp("train_data"), image_size=64, num_train=4)


def _train_cfg(out, data, **changes):
    from mambaadv2_ref.train_config import TrainConfig

    return TrainConfig(**{"out": str(out), "data": str(data), "steps": 2, "device": "cpu",
                          "profile": "tiny", **TRAIN_FAST,
                          "model_overrides": dict(TRAIN_SMALL), **changes})


def test_set_booleans_are_typed_and_maybe_is_refused():
    from mambaadv2_ref.model.detectors import model_config_fields
    from mambaadv2_ref.train_config import TrainConfig, config_from_sets

    fields = model_config_fields("mambaadv2")
    for text, expected in (("false", False), ("FALSE", False), ("0", False), ("True", True),
                           ("1", True)):
        cfg = config_from_sets(TrainConfig(out="x"), {"use_fft": text, "pretrained": text},
                               fields)
        assert cfg.model_overrides["use_fft"] is expected and cfg.pretrained is expected, text
    with pytest.raises(ValueError, match=r"--set pretrained=maybe: expected true/false/1/0"):
        config_from_sets(TrainConfig(out="x"), {"pretrained": "maybe"}, fields)


@pytest.mark.parametrize("key, text, message", [
    ("batch_size", "0", "batch_size must be a positive int"),
    ("batch_size", "-1", "batch_size must be a positive int"),
    ("image_size", "0", "image_size must be a positive int"),
    ("batch_size", "abc", "--set batch_size=abc: expected int"),
    ("lr", "abc", "--set lr=abc: expected float"),
    ("seed", "x", "--set seed=x: expected int"),
    ("log_every", "0", "log_every must be a positive int"),
    ("d_state", "1.5", "--set d_state=1.5: expected int"),
])
def test_set_bad_numbers_name_the_key(key, text, message):
    from mambaadv2_ref.config_tools import parse_sets
    from mambaadv2_ref.model.detectors import model_config_fields
    from mambaadv2_ref.train_config import TrainConfig, config_from_sets

    with pytest.raises(ValueError, match=re.escape(message)):
        config_from_sets(TrainConfig(out="x"), parse_sets([f"{key}={text}"]),
                         model_config_fields("mambaadv2"))


def test_set_model_or_profile_points_to_the_real_flag(capsys):
    from mambaadv2_ref.cli import main

    for key, flag in (("model", "--model"), ("profile", "--profile")):
        assert main(["train", "--out", "x", "--set", f"{key}=mambaad"]) == 2
        assert f"use {flag}" in capsys.readouterr().err


def test_train_onto_an_existing_run_needs_force_which_clears_stale_results(tmp_path,
                                                                           train_data):
    from mambaadv2_ref.train import train

    out = tmp_path / "run"
    train(_train_cfg(out, train_data))
    (out / "metrics.json").write_text("{}")
    (out / "maps").mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--force"):
        train(_train_cfg(out, train_data))
    with pytest.raises(ValueError, match=r"classes \['nope'\] not found"):
        train(_train_cfg(out, train_data, force=True, classes=["nope"]))
    assert (out / "checkpoint.json").is_file()  # a failed --force run deletes nothing
    meta = train(_train_cfg(out, train_data, force=True, steps=1))
    assert meta["step"] == 1 and not (out / "metrics.json").exists()
    assert not (out / "maps").exists() and (out / "notes.txt").read_text() == "mine"


def test_resume_without_a_checkpoint_is_an_error(tmp_path, train_data):
    from mambaadv2_ref.train import train

    with pytest.raises(ValueError, match="--resume: no checkpoint in"):
        train(_train_cfg(tmp_path / "empty", train_data, resume=True))


def test_out_that_is_a_file_read_only_or_full_is_refused_before_training(tmp_path, train_data,
                                                                    monkeypatch):
    import tempfile as tempfile_module

    from mambaadv2_ref import train as train_module

    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        train_module.train(_train_cfg(tmp_path / "file", train_data))

    def read_only(*args, **kwargs):  # what a read-only folder gives (root ignores chmod)
        raise PermissionError(13, "Permission denied")

    class Usage:
        free = 1024  # bytes: a full disk

    with monkeypatch.context() as m:
        m.setattr(run_safety.shutil, "disk_usage", lambda path: Usage)
        m.setattr(train_module, "train_step", lambda *a, **k: pytest.fail("trained"))
        with pytest.raises(ValueError, match="0 MiB free on its disk, a checkpoint needs"):
            train_module.train(_train_cfg(tmp_path / "full", train_data))
    monkeypatch.setattr(tempfile_module, "TemporaryFile", read_only)
    monkeypatch.setattr(train_module, "check_dataset", lambda *a, **k: pytest.fail("work done"))
    with pytest.raises(ValueError, match="is not writable: .*Permission denied"):
        train_module.train(_train_cfg(tmp_path / "ro", train_data))


def test_checkpoints_by_time_by_default_and_by_steps_when_asked(tmp_path, train_data,
                                                                monkeypatch):
    from mambaadv2_ref import train as train_module
    from mambaadv2_ref.train_config import TrainConfig

    assert TrainConfig(out="x").checkpoint_minutes == 10.0
    assert TrainConfig(out="x").checkpoint_every is None
    saved = []
    original = train_module.save_checkpoint

    def record(*args, step, **kwargs):
        saved.append(step)
        return original(*args, step=step, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", record)
    train_module.train(_train_cfg(tmp_path / "a", train_data, steps=3))
    assert saved == [3]  # no interval due: only the end
    saved.clear()
    train_module.train(_train_cfg(tmp_path / "b", train_data, steps=3, checkpoint_every=2))
    assert saved == [2, 3]
    saved.clear()
    train_module.train(_train_cfg(tmp_path / "c", train_data, steps=3,
                                  checkpoint_minutes=1e-9))  # every step is past the interval
    assert saved == [1, 2, 3]


def test_snapshots_keep_the_weights_of_their_step_and_evaluate_as_runs(tmp_path, train_data):
    from safetensors.torch import load_file

    from mambaadv2_ref import train as train_module
    from mambaadv2_ref.checkpoint import MANIFEST, list_snapshots, load_checkpoint
    from mambaadv2_ref.evaluate import evaluate

    run = tmp_path / "run"
    train_module.train(_train_cfg(run, train_data, steps=4, snapshot_every=2))
    snaps = list_snapshots(run)
    assert [p.name for p in snaps] == ["step0000002", "step0000004"]
    last = load_checkpoint(run)
    at4 = load_checkpoint(snaps[1])
    assert at4.step == 4 and at4.meta["optimizer"] is None and at4.optimizer_state is None
    assert all(torch.equal(last.state[k], at4.state[k]) for k in last.state)
    at2 = load_checkpoint(snaps[0])
    changed = [k for k in last.state if not torch.equal(last.state[k], at2.state[k])]
    assert at2.step == 2 and changed  # the weights of step 2, not a copy of the last ones
    # the run moved on (the checkpoint of step 2 is gone), the snapshot's file is still whole
    assert not (run / at2.meta["files"]["weights"]["name"]).exists()
    load_file(str(snaps[0] / at2.meta["files"]["weights"]["name"]))
    metrics = evaluate(snaps[0], device="cpu")
    assert metrics["run"]["step"] == 2 and (snaps[0] / "metrics.json").is_file()
    train_module.train(_train_cfg(run, train_data, steps=2, force=True))
    assert list_snapshots(run) == [] and (run / MANIFEST).is_file()  # --force clears them


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path, train_data, monkeypatch):
    import os
    import signal

    from mambaadv2_ref import train as train_module
    from mambaadv2_ref.checkpoint import load_checkpoint

    original, calls = train_module.train_step, []

    def step_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        loss = original(*args, **kwargs)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(train_module, "train_step", step_then_ctrl_c)
    out = tmp_path / "run"
    with pytest.raises(train_module.TrainingInterrupted, match="step 2 of 4.*--resume"):
        train_module.train(_train_cfg(out, train_data, steps=4))
    assert load_checkpoint(out).step == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    assert train_module.train(_train_cfg(out, train_data, steps=4, resume=True))["step"] == 4


def test_nan_loss_stops_with_exit_2_and_keeps_the_last_good_checkpoint(tmp_path, train_data,
                                                                      monkeypatch, capsys):
    from mambaadv2_ref import train as train_module
    from mambaadv2_ref.checkpoint import load_checkpoint
    from mambaadv2_ref.cli import main

    original, calls = train_module.train_step, []

    def nan_from_step_3(*args, **kwargs):
        calls.append(1)
        loss = original(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(train_module, "train_step", nan_from_step_3)
    out = tmp_path / "run"
    assert main(["train", "--data", str(train_data), "--out", str(out), "--steps", "4",
                 *CLI_FAST, "--set", "checkpoint_every=2", "--set", "log_every=1"]) == 2
    err = capsys.readouterr().err
    assert "NaN/inf between steps 3 and 3" in err and "(step 2) is kept" in err
    ckpt = load_checkpoint(out)
    assert ckpt.step == 2 and all(torch.isfinite(v).all() for v in ckpt.state.values()
                                  if v.is_floating_point())


def test_resume_refuses_a_changed_dataset_and_data_is_stored_absolute(tmp_path, train_data,
                                                                       monkeypatch):
    import shutil

    from mambaadv2_ref.train import train

    data = tmp_path / "data"
    shutil.copytree(train_data, data)
    monkeypatch.chdir(tmp_path)
    meta = train(_train_cfg("run", "data", steps=2, stop_at=1))
    assert meta["train"]["data"] == str(data.resolve())
    _save(data / "alpha" / "train" / "good" / "zzz.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="dataset's file names or sizes changed"):
        train(_train_cfg("run", "data", steps=2, resume=True))


def test_bench_model_iters_0_is_refused(capsys):
    from mambaadv2_ref.cli import main
    from mambaadv2_ref.studies.speed import bench_model

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "model", "--iters", "0"])
    assert exit_.value.code == 2 and "--iters: must be >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="iters must be a positive int"):
        bench_model(iters=0)


def test_final_summary_names_the_real_checkpoint_and_step_count(tmp_path, train_data, capsys):
    from mambaadv2_ref.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(train_data), "--out", str(out), "--steps", "3",
                 *CLI_FAST, "--set", "stop_at=1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "step 1 of 3" in line and line.endswith(str(out / "checkpoint.json"))
    assert (out / "checkpoint.json").is_file()
    assert main(["train", "--data", str(train_data), "--out", str(out), "--steps", "3",
                 *CLI_FAST, "--set", "stop_at=0"]) == 2
