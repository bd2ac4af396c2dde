"""The embedded dataset and the synthetic defects: exact masks, determinism, atomic caching."""

import json

import numpy as np
import pytest
from PIL import Image

from mambaadv2_ref.data import MVTecDataset, embedded, make_tiny_dataset
from mambaadv2_ref.data.defects import DEFECT_KINDS, TAU, changed_mask, composite, make_defect


@pytest.fixture(scope="module")
def photo():
    spec = embedded.CLASSES[[s.name for s in embedded.CLASSES].index("coffee")]
    rng = np.random.default_rng(0)
    return spec, embedded.normal_image(spec, rng, 128), embedded.normal_image(spec, rng, 128)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defect_mask_is_where_pixels_changed(photo, kind):
    spec, clean, donor = photo
    image, mask = make_defect(clean, kind, np.random.default_rng(1), spec.roi, donor,
                              spec.background)
    diff = np.abs(image.astype(int) - clean.astype(int)).max(-1)
    assert mask.sum() >= 0.0008 * 128 * 128
    assert (diff[~mask] <= TAU).all()  # nothing noticeable outside the mask
    assert (diff[mask] > TAU).mean() > 0.5  # most mask pixels changed noticeably
    again = make_defect(clean, kind, np.random.default_rng(1), spec.roi, donor, spec.background)
    np.testing.assert_array_equal(again[0], image)


def test_composite_and_changed_mask_by_hand():
    clean = np.full((4, 4, 3), 100, np.uint8)
    alpha = np.zeros((4, 4))
    alpha[1, 1], alpha[2, 2] = 1.0, 0.05
    out = composite(clean, alpha, np.zeros((4, 4, 3)))
    assert out[1, 1].tolist() == [0, 0, 0] and out[2, 2].tolist() == [95, 95, 95]
    mask = changed_mask(clean, out)
    assert mask.sum() == 1 and mask[1, 1]


def test_defect_errors(photo):
    _, clean, _ = photo
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_defect(clean, "dent", rng)
    with pytest.raises(ValueError, match="background"):
        make_defect(clean, "missing_part", rng)
    with pytest.raises(ValueError, match=r"\(S, S, 3\)"):
        make_defect(clean[:, :64], "stain", rng)


def test_every_class_builds_one_of_each(tmp_path):
    for i, spec in enumerate(embedded.CLASSES):
        files = embedded.build_class(spec, tmp_path, np.random.default_rng(i), 64, 1, 1, 1)
        assert len(files) == 2 + 2 * len(spec.kinds)
    ds = MVTecDataset(tmp_path, split="test", image_size=64)
    assert ds.classes == sorted(s.name for s in embedded.CLASSES)
    assert len({s.kind for s in ds.samples}) >= 6
    for i in range(0, len(ds), 5):
        assert ds[i]["mask"].sum() > 0 or ds[i]["label"] == 0


@pytest.fixture
def small_config(monkeypatch):
    monkeypatch.setattr(embedded, "CLASSES", embedded.CLASSES[:2])
    monkeypatch.setattr(embedded, "IMAGE_SIZE", 48)
    monkeypatch.setattr(embedded, "NUM_TRAIN", 2)
    monkeypatch.setattr(embedded, "NUM_TEST_GOOD", 1)
    monkeypatch.setattr(embedded, "NUM_PER_DEFECT", 1)


def test_root_is_built_once_atomically_and_deterministically(tmp_path, monkeypatch, small_config):
    root = embedded.embedded_dataset_root(tmp_path / "a", progress=False)
    assert root == tmp_path / "a" / embedded.VERSION and embedded.is_complete(root)
    assert [p.name for p in (tmp_path / "a").iterdir()] == [embedded.VERSION]  # no tmp left
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["classes"]["brick"]["train_good"] == 2
    monkeypatch.setenv("MAMBAADV2_CACHE", str(tmp_path / "b"))
    other = embedded.embedded_dataset_root(progress=False)
    assert other == tmp_path / "b" / embedded.VERSION
    for f in manifest["files"]:
        assert (root / f).read_bytes() == (other / f).read_bytes(), f

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt a complete dataset")

    monkeypatch.setattr(embedded, "build_embedded", no_rebuild)
    assert embedded.embedded_dataset_root(tmp_path / "a") == root


def test_damaged_cache_is_rebuilt(tmp_path, small_config):
    root = embedded.embedded_dataset_root(tmp_path, progress=False)
    victim = root / json.loads((root / "manifest.json").read_text())["files"][0]
    victim.unlink()
    assert not embedded.is_complete(root)
    assert embedded.embedded_dataset_root(tmp_path, progress=False) == root
    assert victim.is_file() and embedded.is_complete(root)


def test_tiny_dataset_is_deterministic(tmp_path):
    a = make_tiny_dataset(tmp_path / "a", kinds=("hole", "crack", "foreign_object"))
    b = make_tiny_dataset(tmp_path / "b", kinds=("hole", "crack", "foreign_object"))
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 2 * (4 + 2 + 3 * 2)
    for f in files:
        assert np.array_equal(np.asarray(Image.open(a / f)), np.asarray(Image.open(b / f)))
