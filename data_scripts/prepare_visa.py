#!/usr/bin/env python
"""Download VisA and convert it (1cls split) to the MVTec AD layout that MVTecDataset reads.

    python data_scripts/prepare_visa.py --out data/visa            # raw files in data/visa_raw

Needs the internet (VisA_20220922.tar, about 1.8 GiB); resumable, and checked against the SHA-256
anomalib pins for it. The split file split_csv/1cls.csv ships in the archive; if it is missing it
is fetched from amazon-science/spot-diff on GitHub, whose SHA-256 is not known (not checked).
With --raw pointing at an already extracted VisA folder nothing is downloaded.
Offline: exit code 2 at once. Exit codes: 0 done, 2 network, 3 checksum, 4 bad layout/CSV.

Output: <out>/<cls>/train/good, test/good, test/bad (VisA has no defect names),
ground_truth/bad/<stem>_mask.png binarised at > 0. Licence: CC BY 4.0. Cite Zou et al., ECCV 2022.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mambaadv2_ref.data.download import download, exit_status, extract
from mambaadv2_ref.data.visa import convert_visa

URL = "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar"
SHA256 = "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362"  # anomalib's pin
SPLIT_URL = "https://raw.githubusercontent.com/amazon-science/spot-diff/main/split_csv/1cls.csv"
ARCHIVE = "VisA_20220922.tar"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output (MVTec layout) folder")
    parser.add_argument("--raw", type=Path, help="raw VisA folder (default: <out>_raw)")
    parser.add_argument("--split-csv", type=Path, help="default: <raw>/split_csv/1cls.csv")
    parser.add_argument("--url", default=URL, help="archive URL")
    parser.add_argument("--sha256", default=SHA256, help="expected SHA-256 of the archive")
    parser.add_argument("--no-verify", action="store_true", help="skip the checksum")
    parser.add_argument("--timeout", type=float, default=10.0, help="network timeout, seconds")
    args = parser.parse_args(argv)
    raw = args.raw or args.out.with_name(args.out.name + "_raw")
    split_csv = args.split_csv or raw / "split_csv" / "1cls.csv"
    counts = {}

    def prepare():
        if not split_csv.is_file():
            archive = raw / ARCHIVE
            download(args.url, archive, None if args.no_verify else args.sha256, args.timeout)
            print(f"extracting {archive} ...")
            extract(archive, raw)
            if not split_csv.is_file():
                print(f"{split_csv} not in the archive; fetching it (checksum unknown)")
                download(SPLIT_URL, split_csv, None, args.timeout)
        counts.update(convert_visa(raw, args.out, split_csv))

    status = exit_status(prepare)
    if status:
        return status
    for cls, c in sorted(counts.items()):
        print(f"{cls:>12}: train {c['train']:4d}, test good {c['test_good']:4d}, "
              f"test bad {c['test_bad']:4d}")
    print(f"VisA (MVTec layout) ready at {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
