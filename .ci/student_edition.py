"""Write the student edition of the book: every chapter as a notebook, solutions removed.

Usage: python .ci/student_edition.py BOOK_DIR OUT_DIR

In every chapter the folded solutions (`<details><summary>Solution</summary> ... </details>` in
markdown cells) are cut out, the check cells are kept, and the code cells of the Exercises
section (from its heading to the end) lose their outputs. The cells before it keep their outputs,
so a student reads the executed chapter; each chapter's first cell installs the package in Colab.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

SOLUTION = re.compile(r"\n*<details>\s*<summary>\s*Solution\s*</summary>.*?</details>[ \t]*",
                      re.S | re.I)
EXERCISES_HEADING = re.compile(r"^## Exercises\s*$", re.M)


def student_notebook(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student version of one chapter: solutions cut, exercise outputs cleared."""
    start = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                  and EXERCISES_HEADING.search(c.source)), None)
    if start is None:
        raise ValueError(f"{name}: no '## Exercises' heading")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            cell.source = SOLUTION.sub("", cell.source)
        elif i >= start:
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python .ci/student_edition.py BOOK_DIR OUT_DIR", file=sys.stderr)
        return 2
    book, out = Path(argv[0]), Path(argv[1])
    chapters = sorted(book.glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        raise FileNotFoundError(f"BOOK_DIR {book} holds no chapter notebooks (NN_*.ipynb)")
    out.mkdir(parents=True, exist_ok=True)
    for path in chapters:
        nb = student_notebook(nbformat.read(path, as_version=4), path.name)
        (out / path.name).write_text(nbformat.writes(nb) + "\n")
    print(f"wrote {len(chapters)} student notebooks to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
