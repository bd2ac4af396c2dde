"""`.ci/student_edition.sh DIR`: chapters without solutions, with a check cell per exercise."""

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat

from mambaadv2_ref.checks import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def _solution_code(path: Path) -> list[str]:
    """The code blocks of the folded solutions of one book chapter."""
    return [code.strip() for cell in nbformat.read(path, as_version=4).cells
            if cell.cell_type == "markdown"
            for part in cell.source.split("<summary>Solution</summary>")[1:]
            for code in FENCE.findall(part.split("</details>")[0])]


def test_student_edition(tmp_path):
    out = tmp_path / "student"
    result = subprocess.run(["bash", str(ROOT / ".ci" / "student_edition.sh"), str(out)],
                            env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    chapters = sorted(ROOT.glob("book/[0-9][0-9]_*.ipynb"))
    assert sorted(p.name for p in out.glob("*.ipynb")) == [p.name for p in chapters]
    for book_path in chapters:
        nb = nbformat.read(out / book_path.name, as_version=4)
        nbformat.validate(nb)
        text = "\n".join(cell.source for cell in nb.cells)
        assert "<summary>Solution" not in text
        for code in _solution_code(book_path):
            assert code not in text, (book_path.name, code[:60])
        start = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Exercises"))
        exercise_code = [c for c in nb.cells[start:] if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in exercise_code)
        chapter = f"ch{book_path.name[:2]}"
        for exercise_id in EXERCISES:
            if not exercise_id.startswith(chapter + "."):
                continue
            assert any(f'check("{exercise_id}", ' in c.source for c in exercise_code), \
                exercise_id


def test_student_edition_needs_a_directory():
    result = subprocess.run(["bash", str(ROOT / ".ci" / "student_edition.sh")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage" in result.stderr
