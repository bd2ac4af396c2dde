"""MVTec AD layout dataset (multi-class): index the folders, load image/mask pairs.

Layout (also VisA after data_scripts/prepare_visa.py, BSData, the embedded dataset)::

    <root>/<class>/train/good/*.png|jpg
    <root>/<class>/test/good/*.png|jpg
    <root>/<class>/test/<defect>/*.png|jpg
    <root>/<class>/ground_truth/<defect>/<stem>_mask.png

Glossary (code name -> meaning):
    cls     class (category) name, a folder under root
    kind    sub-folder of test/: "good" or a defect type
    label   0 for good, 1 for a defect image (taken from the folder, not from the mask)
    S       image_size, side of the square network input

The index is cached in memory, keyed by the root path and the modification times of the folders
it was built from; nothing is ever written into the data folder (it may be read-only).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from mambaadv2_ref.data.transforms import load_image, load_mask

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
GOOD = "good"
SPLITS = ("train", "test")
EXPECTED_LAYOUT = """expected the MVTec AD layout:
  <root>/
    <class>/
      train/good/*.png|*.jpg
      test/good/*.png|*.jpg
      test/<defect>/*.png|*.jpg
      ground_truth/<defect>/<stem>_mask.png"""


@dataclass(frozen=True)
class Sample:
    """One indexed image: its file, its mask file (None for good images), label, class, kind."""

    path: Path
    mask_path: Path | None
    label: int
    cls: str
    kind: str


def _layout_error(message: str) -> ValueError:
    return ValueError(f"{message}\n{EXPECTED_LAYOUT}")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def list_classes(root: str | Path) -> list[str]:
    """Class names under an MVTec-layout root: sub-folders holding a train/ or test/ folder.

    Args:
        root: dataset root folder.

    Returns:
        sorted class names.

    Raises:
        ValueError: root missing, not a folder, or without any class folder (shows the layout).
    """
    root = Path(root)
    if not root.is_dir():
        raise _layout_error(f"dataset root {str(root)!r} does not exist or is not a folder;")
    classes = [p.name for p in _subdirs(root) if any((p / s).is_dir() for s in SPLITS)]
    if not classes:
        raise _layout_error(f"no class folder (with train/ or test/ inside) under {str(root)!r};")
    return classes


def _mask_for(image: Path, gt_dir: Path) -> Path:
    """Find <gt_dir>/<stem>_mask.<png|jpg> (extension case-insensitive) for a defect image."""
    wanted = f"{image.stem}_mask".lower()
    if gt_dir.is_dir():
        for candidate in _images(gt_dir):
            if candidate.stem.lower() == wanted:
                return candidate
    expected = gt_dir / f"{image.stem}_mask.png"
    raise ValueError(f"defect image {str(image)!r} has no mask: expected {str(expected)!r}")


def _signature(folders: list[Path]) -> tuple[tuple[str, int], ...]:
    return tuple((str(f), os.stat(f).st_mtime_ns) for f in folders if f.is_dir())


def _index_class(root: Path, cls: str, split: str) -> tuple[Sample, ...]:
    """Index one class/split; raises ValueError naming the folder or file that breaks the layout."""
    split_dir = root / cls / split
    if not split_dir.is_dir():
        raise _layout_error(f"class {cls!r} has no {split}/ folder ({str(split_dir)!r} missing);")
    kinds = [GOOD] if split == "train" else [d.name for d in _subdirs(split_dir)]
    if split == "train" and not (split_dir / GOOD).is_dir():
        raise _layout_error(f"class {cls!r}: {str(split_dir / GOOD)!r} missing;")
    samples = []
    for kind in kinds:
        for image in _images(split_dir / kind):
            if kind == GOOD:
                samples.append(Sample(image, None, 0, cls, kind))
            else:
                mask = _mask_for(image, root / cls / "ground_truth" / kind)
                samples.append(Sample(image, mask, 1, cls, kind))
    if not samples:
        raise _layout_error(f"class {cls!r}: no .png/.jpg images under {str(split_dir)!r};")
    return tuple(samples)


def size_mismatch(sample: Sample) -> str | None:
    """The error text when the mask of `sample` is not the size of its image, else None."""
    if sample.mask_path is None:
        return None
    with Image.open(sample.path) as img, Image.open(sample.mask_path) as m:
        if img.size == m.size:
            return None
        return (f"mask {str(sample.mask_path)!r} is {m.size[0]}x{m.size[1]} but image "
                f"{str(sample.path)!r} is {img.size[0]}x{img.size[1]}")


_INDEX_CACHE: dict[tuple, tuple[Sample, ...]] = {}


def index_samples(root: str | Path, cls: str, split: str) -> tuple[Sample, ...]:
    """Cached :func:`_index_class`: reused while no indexed folder's mtime changes.

    Args:
        root: dataset root; cls: class name; split: "train" or "test".

    Returns:
        the samples of that class and split, sorted by kind then file name.
    """
    root = Path(root).resolve()
    base = root / cls / split
    folders = [base, *(_subdirs(base) if base.is_dir() else [])]
    gt = root / cls / "ground_truth"
    folders += [gt, *(_subdirs(gt) if gt.is_dir() else [])]
    key = (str(root), cls, split, _signature(folders))
    if key not in _INDEX_CACHE:
        _INDEX_CACHE[key] = _index_class(root, cls, split)
    return _INDEX_CACHE[key]


class MVTecDataset(Dataset):
    """Images (and masks) of one or several classes of an MVTec-layout folder.

    Args:
        root: dataset root (see the module docstring for the layout).
        classes: a class name, a list of names, or None for every class (multi-class setting).
        split: "train" (normal images only) or "test" (good and defect images).
        image_size: S; every image is resized to S x S (see data.transforms for why not cropped).
        exclude: image files to leave out (e.g. the good training images a run holds out for
            its z statistics, `data.holdout`); every one must be among the indexed images.
        only: keep only these image files (e.g. those held-out images); every one must be among
            the indexed images. Both keep the index's order and raise ValueError naming the
            files that are not in it (never a silent filter).

    Items are dicts: image (3, S, S) float32 ImageNet-normalised, mask (1, S, S) float32 in {0, 1}
    (all zero for good images), label int, cls str, kind str, path str.
    """

    def __init__(
        self,
        root: str | Path,
        classes: str | Sequence[str] | None = None,
        split: str = "train",
        image_size: int = 256,
        exclude: Collection[str | Path] | None = None,
        only: Collection[str | Path] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
        available = list_classes(root)
        if classes is None:
            classes = available
        elif isinstance(classes, str):
            classes = [classes]
        unknown = [c for c in classes if c not in available]
        if unknown:
            raise ValueError(f"classes {unknown} not found under {str(root)!r}; have {available}")
        if not classes:
            raise ValueError("classes must name at least one class")
        self.root = Path(root)
        self.classes = list(classes)
        self.split = split
        self.image_size = image_size
        self.samples = [s for c in self.classes for s in index_samples(root, c, split)]
        if exclude is not None:
            drop = self._indexed(exclude, "exclude")
            self.samples = [s for s in self.samples if s.path.resolve() not in drop]
        if only is not None:
            keep = self._indexed(only, "only")
            self.samples = [s for s in self.samples if s.path.resolve() in keep]

    def _indexed(self, files: Collection[str | Path], name: str) -> set[Path]:
        """The resolved paths of `files`; raise naming those that are not indexed images of
        this dataset (its classes and split). Implements: no equation."""
        wanted = {Path(f).resolve() for f in files}
        unknown = sorted(str(p) for p in wanted - {s.path.resolve() for s in self.samples})
        if unknown:
            raise ValueError(f"{name}: {len(unknown)} file(s) are not {self.split} images of "
                             f"classes {self.classes} under {str(self.root)!r}: "
                             f"{', '.join(unknown)}")
        return wanted

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = load_image(sample.path, self.image_size)
        if sample.mask_path is None:
            mask = torch.zeros(1, self.image_size, self.image_size)
        else:
            mismatch = size_mismatch(sample)
            if mismatch:
                raise ValueError(mismatch)
            mask = load_mask(sample.mask_path, self.image_size)
        return {
            "image": image,
            "mask": mask,
            "label": sample.label,
            "cls": sample.cls,
            "kind": sample.kind,
            "path": str(sample.path),
        }
