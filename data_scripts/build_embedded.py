#!/usr/bin/env python
"""Build the embedded default dataset (offline, deterministic, about half a minute on a CPU).

    python data_scripts/build_embedded.py                 # into embedded_dataset_root()
    python data_scripts/build_embedded.py --out some/dir  # into some/dir (must be empty or new)

Prints the classes and image counts; the folder's manifest.json lists every file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mambaadv2_ref.data.embedded import SEED, build_embedded, embedded_dataset_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="output folder (default: the cache)")
    parser.add_argument("--seed", type=int, default=SEED, help="master seed (with --out)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.out is None:
        root = embedded_dataset_root()
    else:
        if args.out.exists() and any(args.out.iterdir()):
            print(f"error: {args.out} is not empty", file=sys.stderr)
            return 1
        root = build_embedded(args.out, seed=args.seed)
    manifest = json.loads((root / "manifest.json").read_text())
    for cls, c in manifest["classes"].items():
        defects = ", ".join(f"{k} {n}" for k, n in c["test_defects"].items())
        print(f"{cls:>9}: train {c['train_good']}, test good {c['test_good']}, {defects}")
    print(f"embedded dataset at {root} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
