"""Up-front dataset check: open every image and mask once, name every bad file, before any work.

`check_dataset(root, classes, splits)` decodes each indexed image and mask with the loaders the
datasets use (`load_image`, `load_mask`), so whatever would fail later, when the file is sampled
mid-training or mid-evaluation, fails here first: a corrupt, truncated or unreadable file, an
unsupported image mode, a mask that is not binary-interpretable, a mask whose size differs from
its image. All problems are collected and raised as one ValueError listing each file. Files
already checked in this process (same path, size and modification time) are not decoded again.

`dataset_fingerprint(samples, root)` is a short hash of the file names and sizes of a dataset
(what a resumed run compares, to notice a dataset that changed under it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from mambaadv2_ref.data.mvtec import (
    SPLITS,
    Sample,
    index_samples,
    list_classes,
    size_mismatch,
)
from mambaadv2_ref.data.transforms import load_image, load_mask

CHECK_SIZE = 8  # side the check decodes to: the decode is what matters, not the resize
MAX_LISTED = 30  # problems shown in the error message; the count says how many more
_CHECKED: set[tuple[str, int, int]] = set()


def _stamp(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return str(path), st.st_size, st.st_mtime_ns


def check_sample(sample: Sample) -> list[str]:
    """Problems of one sample (empty when its image and mask load): one message per bad file."""
    stamps = [_stamp(p) for p in (sample.path, sample.mask_path) if p is not None]
    if all(s in _CHECKED for s in stamps):
        return []
    problems = []
    for path, loader in ((sample.path, load_image), (sample.mask_path, load_mask)):
        if path is not None:
            try:
                loader(path, CHECK_SIZE)
            except (ValueError, OSError) as err:
                problems.append(str(err))
    if not problems:
        mismatch = size_mismatch(sample)
        problems += [mismatch] if mismatch else []
    if not problems:
        _CHECKED.update(stamps)
    return problems


def check_dataset(root: str | Path, classes: str | Sequence[str] | None = None,
                  splits: Sequence[str] = SPLITS, progress: bool = True,
                  workers: int | None = None) -> dict[str, int]:
    """Open every image and mask of the given classes and splits; raise naming each bad file.

    Args:
        root: dataset root in the MVTec layout.
        classes: a class, a list, or None for every class under root.
        splits: which of "train", "test" to check.
        progress: show a tqdm progress bar.
        workers: decoding threads (PIL releases the GIL); default min(8, CPU count).

    Returns:
        {"files": images + masks checked, "images": n, "masks": n}.

    Raises:
        ValueError: layout problems (as MVTecDataset), or one message listing every file that
            cannot be used, each with its reason.
    """
    available = list_classes(root)
    classes = available if classes is None else [classes] if isinstance(classes, str) else classes
    unknown = [c for c in classes if c not in available]
    if unknown:
        raise ValueError(f"classes {unknown} not found under {str(root)!r}; have {available}")
    bad_splits = [s for s in splits if s not in SPLITS]
    if bad_splits:
        raise ValueError(f"splits must be among {SPLITS}, got {bad_splits}")
    samples = [s for c in classes for split in splits for s in index_samples(root, c, split)]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(check_sample, samples), total=len(samples),
                            desc=f"checking {len(samples)} images", disable=not progress,
                            leave=False))
    problems = [p for r in results for p in r]
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED])
        extra = len(problems) - MAX_LISTED
        more = f"\n  ... and {extra} more" if extra > 0 else ""
        raise ValueError(f"dataset {str(root)!r}: {len(problems)} bad file(s), fix or remove "
                         f"them:\n  {shown}{more}")
    masks = sum(s.mask_path is not None for s in samples)
    return {"files": len(samples) + masks, "images": len(samples), "masks": masks}


def dataset_fingerprint(samples: Sequence[Sample], root: str | Path) -> str:
    """SHA-256 (first 16 hex digits) of the sorted (path relative to root, size in bytes) of
    every image and mask of `samples`: equal for the same files wherever the root lies, different
    when a file is added, removed, renamed or rewritten with another size.

    Args:
        samples: e.g. MVTecDataset(...).samples. root: the dataset root they are under.
    """
    root = Path(root).resolve()
    entries = sorted(f"{Path(p).resolve().relative_to(root).as_posix()}\t{os.stat(p).st_size}"
                     for s in samples for p in (s.path, s.mask_path) if p is not None)
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
