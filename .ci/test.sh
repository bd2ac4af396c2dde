#!/usr/bin/env bash
# The README's test command: sets itself up on a fresh machine, then runs lint, the unit tests and
# every book chapter under nbval (tiny profile, CPU), then builds the book with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/setup.sh
# Headless Chromium for tests/test_book_offline.py (a built page loaded with the network off)
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export MAMBAADV2_PROFILE=tiny
ruff check .
python -m pytest -q -p no:cacheprovider tests
python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
    --nbval-sanitize-with book/sanitize.cfg book/
jupyter-book build . -W --keep-going
