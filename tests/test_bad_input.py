"""Bad input never gives a silent wrong result (issue 12): one test per case.

Every test writes its own tiny real files with PIL in tmp_path; none needs a dataset on disk.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mambaadv2_ref.data import MVTecDataset, check_dataset
from mambaadv2_ref.data.transforms import denormalise, load_image, load_mask
from mambaadv2_ref.metrics import (
    ALL_KEYS,
    aggregate,
    aupro,
    aupro_mvtec,
    compute_metrics,
    covered_classes,
    undefined_metrics,
)
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
