#!/usr/bin/env python
"""Download MVTec AD and unpack it in the layout mambaadv2_ref.data.MVTecDataset reads.

    python data_scripts/prepare_mvtec.py --out data/mvtec_ad

Needs the internet (4.9 GiB). The download resumes where it stopped (HTTP Range) when rerun, and
the archive is checked against the SHA-256 that anomalib pins for this URL. Offline it stops at
once with exit code 2; put the archive at <out>/mvtec_anomaly_detection.tar.xz by hand and rerun.
Exit codes: 0 done, 2 network, 3 checksum, 4 unexpected layout.

Licence: MVTec AD is CC BY-NC-SA 4.0 (non-commercial). Cite Bergmann et al., CVPR 2019 / IJCV 2021.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mambaadv2_ref.data.download import download, exit_status, extract
from mambaadv2_ref.data.mvtec import MVTecDataset, list_classes

URL = ("https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
       "420938113-1629952094/mvtec_anomaly_detection.tar.xz")
SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"  # anomalib's pin
ARCHIVE = "mvtec_anomaly_detection.tar.xz"


def find_root(folder: Path) -> Path:
    """The MVTec-layout root: folder itself, else its first sub-folder that has class folders."""
    try:
        list_classes(folder)
        return folder
    except ValueError as err:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                list_classes(sub)
                return sub
            except ValueError:
                continue
        raise err


def summarise(root: Path) -> str:
    """One line per class: train and test image counts."""
    lines = []
    for cls in list_classes(root):
        train = len(MVTecDataset(root, cls, "train").samples)
        test = MVTecDataset(root, cls, "test").samples
        lines.append(f"{cls:>12}: train {train:4d}, test {len(test):4d} "
                     f"({sum(s.label for s in test)} defective)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--url", default=URL, help="archive URL (default: MVTec's mirror)")
    parser.add_argument("--sha256", default=SHA256, help="expected SHA-256 of the archive")
    parser.add_argument("--no-verify", action="store_true", help="skip the checksum")
    parser.add_argument("--timeout", type=float, default=10.0, help="network timeout, seconds")
    parser.add_argument("--delete-archive", action="store_true", help="remove it when done")
    args = parser.parse_args(argv)
    archive = args.out / ARCHIVE
    found = {}

    def prepare():
        download(args.url, archive, None if args.no_verify else args.sha256, args.timeout)
        print(f"extracting {archive} ...")
        extract(archive, args.out)
        found["root"] = find_root(args.out)
        print(summarise(found["root"]))

    status = exit_status(prepare)
    if status:
        return status
    root = found["root"]
    if args.delete_archive:
        archive.unlink()
    print(f"MVTec AD ready at {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
