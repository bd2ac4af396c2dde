#!/usr/bin/env bash
# Writes the student edition of every chapter into DIR: notebooks without the folded solutions,
# with the check cells, and with the outputs of the exercise cells cleared (ready for Colab).
# Usage: bash .ci/student_edition.sh DIR      ($PYTHON picks the interpreter; it needs nbformat)
set -euo pipefail
if [ "$#" -ne 1 ]; then
    echo "usage: bash .ci/student_edition.sh DIR" >&2
    exit 2
fi
out=$(realpath -m "$1")
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" .ci/student_edition.py book "$out"
