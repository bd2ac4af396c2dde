"""Good training images withheld from training, for statistics the model never trained on.

`train --set statistics_holdout=K` keeps K good training images per class out of training; the
run records their file names, and `evaluate --readout z` takes the per-pixel statistics of eq.
(Z1) (`model.readout`) from them instead of from the images the model trained on (whose maps it
reconstructs better than any new image's, so their mean and spread understate a new image's).

The rule (fixed, independent of the seed, so a hold-out is the same in every run of a dataset):
the K images at evenly spaced positions of the class's train/good files in sorted file order,

    i_j = floor((2 j + 1) n / (2 K)),  j = 0 .. K - 1                                   (H1)

(n the class's training images: the centres of K equal slices of the file order, so a dataset
whose file order follows the acquisition, e.g. BSData's camera positions, is sampled across it).
The record is {class: [file path relative to the dataset root, POSIX]}, so the same files are
found under another root of the same layout (`evaluate --data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mambaadv2_ref.data.mvtec import Sample

MIN_TRAIN_IMAGES = 8  # each class keeps at least this many training images after a hold-out
MIN_HOLDOUT = 2  # the per-pixel sigma of eq. (Z1) needs two images
HOLDOUT_RULE = ("evenly spaced in each class's sorted train/good file order: positions "
                "floor((2j+1) n / (2K)), j = 0..K-1 (data.holdout, eq. H1); independent of the "
                "seed")


def holdout_indices(n: int, k: int) -> list[int]:
    """Positions of the K held-out images among n files in sorted order.

    Implements: eq. (H1).

    Args:
        n: the class's number of training images. k: images to hold out, 0 <= k <= n.
    Returns:
        K strictly increasing ints in [0, n) (distinct: consecutive ones are n / K >= 1 apart).
    """
    if not 0 <= k <= n:
        raise ValueError(f"cannot hold out {k} of {n} images")
    return [(2 * j + 1) * n // (2 * k) for j in range(k)]


def check_holdout_count(k: int) -> None:
    """Refuse a `statistics_holdout` that no class could use: k < 0, or 0 < k < MIN_HOLDOUT.

    Implements: no equation. Raises ValueError naming `statistics_holdout`.
    """
    if k < 0:
        raise ValueError(f"statistics_holdout must be >= 0, got {k}")
    if 0 < k < MIN_HOLDOUT:
        raise ValueError(f"statistics_holdout must be 0 or >= {MIN_HOLDOUT} (the per-pixel sigma "
                         f"of the z readout needs {MIN_HOLDOUT} images), got {k}")


def choose_holdout(samples: Sequence[Sample], k: int,
                   min_train: int = MIN_TRAIN_IMAGES) -> dict[str, list[Sample]]:
    """The K good training images per class that a run withholds from training.

    Implements: eq. (H1) per class.

    Args:
        samples: a train split's samples (`MVTecDataset(..., split="train").samples`), any
            classes; each class's are ordered by file name here.
        k: `statistics_holdout`, images per class (0: none).
        min_train: the fewest training images a class may keep.
    Returns:
        {class: [K samples]} in the classes' order of first appearance ({} when k = 0).
    Raises:
        ValueError naming `statistics_holdout`: k < 0, 0 < k < MIN_HOLDOUT, or a class left with
        fewer than `min_train` training images (naming the class and its count).
    """
    check_holdout_count(k)
    if k == 0:
        return {}
    by_class: dict[str, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.cls, []).append(s)
    held = {}
    for cls, items in by_class.items():
        if len(items) - k < min_train:
            raise ValueError(f"statistics_holdout={k}: class {cls!r} has {len(items)} training "
                             f"images, so holding out {k} would leave {len(items) - k}, fewer "
                             f"than {min_train}; use statistics_holdout <= "
                             f"{max(len(items) - min_train, 0)}")
        ordered = sorted(items, key=lambda s: s.path.name)
        held[cls] = [ordered[i] for i in holdout_indices(len(ordered), k)]
    return held


def holdout_record(held: dict[str, list[Sample]], root: str | Path) -> dict[str, list[str]]:
    """{class: [path relative to `root`, POSIX]} of `choose_holdout`'s samples, for the run's JSON.

    Implements: no equation.
    """
    root = Path(root).resolve()
    return {cls: [Path(s.path).resolve().relative_to(root).as_posix() for s in items]
            for cls, items in held.items()}


def holdout_paths(record: dict[str, list[str]], root: str | Path, cls: str) -> list[Path]:
    """The held-out files of `cls` under `root`, as a run's `statistics_holdout_files` names them.

    Implements: no equation.

    Args:
        record: {class: [relative paths]} (`holdout_record`). root: the dataset root.
        cls: the class.
    Returns:
        the absolute paths, in the record's order.
    Raises:
        ValueError: the record has no entry for `cls`, or any of its files is missing on disk
            (every missing file named): never a fallback to other images.
    """
    if cls not in record:
        raise ValueError(f"class {cls!r}: the run held out good training images for the z "
                         f"statistics of classes {sorted(record)} only; evaluate those")
    root = Path(root).resolve()
    paths = [root / p for p in record[cls]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"class {cls!r}: {len(missing)} of the {len(paths)} good training "
                         f"images the run held out for the z statistics (statistics_holdout) "
                         f"are missing: {', '.join(missing)}; restore them (or evaluate on the "
                         f"dataset the run was trained on)")
    return paths
