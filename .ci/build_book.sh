#!/usr/bin/env bash
# The README's main command: builds the book, executing every chapter on the embedded dataset.
# The profile is `tiny` on a CPU and `paper` on a GPU unless MAMBAADV2_PROFILE says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/setup.sh
jupyter-book build . -W --keep-going
echo "Open _build/html/index.html"
