"""Convert VisA (raw release + split_csv/1cls.csv) to the MVTec AD layout.

VisA raw: <raw>/<cls>/Data/Images/{Normal,Anomaly}/*.JPG, <raw>/<cls>/Data/Masks/Anomaly/*.png,
and split_csv/1cls.csv with columns object, split, label, image, mask (paths relative to raw).
VisA does not name defect types, so every anomaly goes to test/bad (as spot-diff's own script).
Images are copied byte for byte; masks (non-binary label values) are binarised at > 0 (any
non-black pixel, as data.transforms.mask_values reads it) and saved as 0/255 PNG.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from mambaadv2_ref.data.transforms import mask_values

COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": "good", "anomaly": "bad"}


def read_split_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a VisA split CSV, checked: required columns, split and label values.

    Args:
        path: split_csv/1cls.csv.

    Returns:
        list of dicts with keys COLUMNS.
    """
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected {list(COLUMNS)}")
        rows = list(reader)
    for n, row in enumerate(rows, start=2):
        if row["split"] not in ("train", "test") or row["label"] not in LABELS:
            raise ValueError(f"{path}:{n}: split must be train/test and label normal/anomaly, "
                             f"got {row['split']!r}, {row['label']!r}")
        if row["label"] == "anomaly" and not row["mask"]:
            raise ValueError(f"{path}:{n}: anomaly {row['image']!r} has no mask")
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def convert_visa(raw_root: str | Path, out_root: str | Path,
                 split_csv: str | Path | None = None) -> dict[str, dict[str, int]]:
    """Write the MVTec-layout copy of VisA.

    Args:
        raw_root: extracted VisA folder (holds <cls>/Data and split_csv/).
        out_root: output root; gets <cls>/{train/good,test/good,test/bad,ground_truth/bad}.
        split_csv: split file; default <raw_root>/split_csv/1cls.csv.

    Returns:
        counts {cls: {"train": n, "test_good": n, "test_bad": n}}.
    """
    raw_root, out_root = Path(raw_root), Path(out_root)
    rows = read_split_csv(split_csv or raw_root / "split_csv" / "1cls.csv")
    counts: dict[str, dict[str, int]] = {}
    written: set[Path] = set()
    for row in rows:
        src = raw_root / row["image"]
        if not src.is_file():
            raise ValueError(f"VisA image {str(src)!r} listed in the split file is missing")
        kind = LABELS[row["label"]]
        name = f"{Path(row['image']).stem}{Path(row['image']).suffix.lower()}"
        dest = out_root / row["object"] / row["split"] / kind / name
        if dest in written:
            raise ValueError(f"two VisA rows map to {dest}")
        written.add(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        if kind == "bad":
            mask_src = raw_root / row["mask"]
            if not mask_src.is_file():
                raise ValueError(f"VisA mask {str(mask_src)!r} listed in the split file is missing")
            with Image.open(mask_src) as m:
                binary = (mask_values(m, mask_src)[0] > 0).astype(np.uint8) * 255
            mask_dest = out_root / row["object"] / "ground_truth" / "bad" / f"{dest.stem}_mask.png"
            mask_dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(binary).save(mask_dest)
        key = "train" if row["split"] == "train" else f"test_{kind}"
        per_class = counts.setdefault(row["object"], {"train": 0, "test_good": 0, "test_bad": 0})
        per_class[key] += 1
    return counts
