"""MVTecDataset, list_classes and the transforms: layout, loading, binarisation, errors."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mambaadv2_ref.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MVTecDataset,
    denormalise,
    list_classes,
    make_tiny_dataset,
    normalise,
)
from mambaadv2_ref.data.transforms import binarise_mask, load_mask

BSDATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bsdata"


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), classes=("alpha", "beta"))


def test_items_shapes_labels_and_masks(tiny):
    ds = MVTecDataset(tiny, split="test", image_size=24)
    assert ds.classes == ["alpha", "beta"]
    assert len(ds) == 2 * (2 + 2)  # per class 2 good + scratch + stain
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (1, 24, 24)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert item["label"] == int(item["kind"] != "good")
        assert (item["mask"].sum() > 0) == bool(item["label"])
        assert item["cls"] in ("alpha", "beta") and Path(item["path"]).is_file()


def test_image_is_the_normalised_resized_file(tiny):
    ds = MVTecDataset(tiny, classes="beta", split="train", image_size=16)
    item = ds[0]
    with Image.open(item["path"]) as img:
        ref = np.asarray(img.convert("RGB").resize((16, 16), Image.BILINEAR)) / 255.0
    ref = torch.from_numpy(ref).permute(2, 0, 1).float()
    torch.testing.assert_close(denormalise(item["image"]), ref, atol=1e-5, rtol=0)
    assert item["mask"].sum() == 0 and item["label"] == 0


def test_normalise_matches_imagenet_constants():
    x = torch.rand(2, 3, 4, 5)
    y = normalise(x)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(y, (x - mean) / std)
    torch.testing.assert_close(denormalise(y), x)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        normalise(torch.rand(1, 4, 8, 8))


def test_grayscale_uppercase_jpg_and_nonsquare(tmp_path):
    rng = np.random.default_rng(0)
    _write(tmp_path / "part/train/good/a.JPG", rng.integers(0, 255, (20, 50), dtype=np.uint8))
    _write(tmp_path / "part/test/good/b.png", rng.integers(0, 255, (20, 50), dtype=np.uint8))
    _write(tmp_path / "part/test/dent/c.Jpeg", rng.integers(0, 255, (20, 50, 3), dtype=np.uint8))
    mask = np.zeros((20, 50), np.uint8)
    mask[5:10, 10:40] = 255
    _write(tmp_path / "part/ground_truth/dent/c_mask.PNG", mask)
    train = MVTecDataset(tmp_path, split="train", image_size=32)
    assert len(train) == 1 and train[0]["image"].shape == (3, 32, 32)
    test = MVTecDataset(tmp_path, split="test", image_size=32)
    item = test[[s.kind for s in test.samples].index("dent")]
    # the whole 50 x 20 frame is squeezed into 32 x 32 (no crop): rows 8..15, cols 6..25
    expected = np.zeros((32, 32), bool)
    expected[8:16, 6:26] = True
    np.testing.assert_array_equal(item["mask"][0].bool().numpy(), expected)


def test_binarise_mask_any_nonzero_label_is_a_defect():
    assert binarise_mask(np.array([[0, 255, 255, 0]], np.uint8)).tolist() == [
        [False, True, True, False]]
    assert binarise_mask(np.array([[0, 1, 2, 3]], np.uint8)).tolist() == [  # label values
        [False, True, True, True]]
    assert binarise_mask(np.array([[0, 40000]], np.uint16), 65535).tolist() == [[False, True]]
    with pytest.raises(ValueError, match="not binary: it holds 4 grey levels from 100 to 255"):
        binarise_mask(np.array([[0, 100, 128, 255]], np.uint8))  # a blurred 0/255 mask
    with pytest.raises(ValueError, match="2-D"):
        binarise_mask(np.zeros((2, 2, 3), np.uint8))


def test_load_mask_nearest_keeps_binary(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 2:5] = 255
    _write(tmp_path / "m.png", mask)
    out = load_mask(tmp_path / "m.png", 20)
    assert out.shape == (1, 20, 20) and out.sum() == 36


def test_layout_errors_show_the_expected_tree(tmp_path):
    with pytest.raises(ValueError, match=r"does not exist(.|\n)*ground_truth/<defect>"):
        list_classes(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"no class folder(.|\n)*train/good"):
        list_classes(tmp_path)
    (tmp_path / "widget/test/good").mkdir(parents=True)
    with pytest.raises(ValueError, match="train/ folder"):
        MVTecDataset(tmp_path, split="train")
    with pytest.raises(ValueError, match="no .png/.jpg images"):
        MVTecDataset(tmp_path, split="test")
    with pytest.raises(ValueError, match=r"classes \['gadget'\] not found"):
        MVTecDataset(tmp_path, classes=["gadget"], split="test")
    with pytest.raises(ValueError, match="split"):
        MVTecDataset(tmp_path, split="val")


def test_defect_without_mask_names_the_file(tmp_path):
    _write(tmp_path / "w/test/crack/007.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"007\.png(.|\n)*007_mask\.png"):
        MVTecDataset(tmp_path, split="test")


def test_mask_size_mismatch_is_an_error(tmp_path):
    _write(tmp_path / "w/test/crack/000.png", np.zeros((8, 8, 3), np.uint8))
    _write(tmp_path / "w/ground_truth/crack/000_mask.png", np.zeros((9, 8), np.uint8))
    ds = MVTecDataset(tmp_path, split="test")
    with pytest.raises(ValueError, match="000_mask.png"):
        ds[0]


def test_index_cache_sees_new_files_and_writes_nothing(tmp_path):
    make_tiny_dataset(tmp_path, classes=("alpha",), num_train=2)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert len(MVTecDataset(tmp_path, split="train")) == 2
    assert sorted(p for p in tmp_path.rglob("*")) == before
    good = tmp_path / "alpha/train/good"
    _write(good / "zzz.png", np.zeros((32, 32, 3), np.uint8))
    os.utime(good, ns=(os.stat(good).st_atime_ns, os.stat(good).st_mtime_ns + 10**9))
    assert len(MVTecDataset(tmp_path, split="train")) == 3


@pytest.mark.skipif(not BSDATA.is_dir(), reason="shared/data/bsdata not present")
def test_bsdata_real_photos():
    assert list_classes(BSDATA) == ["ball_screw"]
    assert len(MVTecDataset(BSDATA, split="train", image_size=64)) == 122
    test = MVTecDataset(BSDATA, split="test", image_size=64)
    assert len(test) == 190 and sum(s.label for s in test.samples) == 87
    item = test[[s.label for s in test.samples].index(1)]
    assert item["image"].shape == (3, 64, 64) and item["mask"].sum() > 0
