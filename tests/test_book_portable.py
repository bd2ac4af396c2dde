"""Every chapter reads the same in the HTML book, in JupyterLab and in Colab.

Jupyter and Colab render a markdown cell as CommonMark with TeX math; MyST's directives, roles,
labels and substitutions only mean something to Sphinx and show up as raw text everywhere else.
And every chapter opens with the Colab setup cell, generated from `_config.yml` and hidden in the
HTML book.
"""

import json
import re
from pathlib import Path

import pytest

from mambaadv2_ref.viz.colab import SETUP_TAG, repository_source, setup_cell_source

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))

MYST_ONLY = {
    "directive (```{name} or ~~~{name})": r"^[ \t]*(`{3,}|~{3,})[ \t]*\{[^}\n]*\}",
    "colon fence (:::)": r"^[ \t]*:{3,}",
    "role ({name}`...`)": r"\{[A-Za-z][\w:.+-]*\}`",
    "target label ((name)=)": r"^[ \t]*\([^()\s]+\)=[ \t]*$",
    "equation label ($$ (name))": r"\$\$\s*\([^()\s]+\)\s*$",
    "substitution ({{ name }})": r"\{\{[^{}\n]*\}\}",
    "comment (% at line start)": r"^%(\s|$)",
    "block break (+++)": r"^\+\+\+",
}
PLAIN_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})(?![ \t]*\{)[^\n]*\n.*?^\1\2\s*$", re.M | re.S)


def myst_only(markdown: str) -> list[str]:
    """Each MyST-only construct found in `markdown`, as 'kind: the line'.

    Plain code fences (```python, ```bash...) are skipped: what they hold is shown verbatim.
    """
    text = PLAIN_FENCE.sub("", markdown)
    found = []
    for kind, pattern in MYST_ONLY.items():
        for match in re.finditer(pattern, text, re.M):
            line = text[text.rfind("\n", 0, match.start()) + 1:].split("\n", 1)[0]
            found.append(f"{kind}: {line.strip()[:80]}")
    return found


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


@pytest.mark.parametrize(
    "text", ["```{admonition} Note\nx\n```", ":::{note}\nx\n:::", "see {eq}`ssm` here",
             "{glue:text}`auroc:.3f`", "(sec-scan)=\n# Scan", "$$\nx\n$$ (eq-one)",
             "{{ name }}", "% a comment", "```{math}\nx\n```", "+++"])
def test_detector_finds_each_myst_only_construct(text):
    assert myst_only(text), text


def test_detector_accepts_portable_markdown():
    portable = ("# Title\n> **Note.** a box\n$$\nx = 1 \\tag{3}\n$$\nas eq. (3) says, "
                "[chapter 2](02_state_space_models.ipynb), `code`, $a_{t}$\n"
                "```python\n{glue:text}`inside a code block is verbatim`\n```\n"
                "<details><summary>Solution</summary>\n\nx\n</details>\n| a | b |\n|---|---|")
    assert myst_only(portable) == []


def test_there_are_chapters():
    assert len(CHAPTERS) >= 14, [p.name for p in CHAPTERS]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_markdown_cells_hold_no_myst_only_syntax(chapter):
    found = [f"cell {i}: {hit}" for i, cell in enumerate(cells(chapter))
             if cell["cell_type"] == "markdown" for hit in myst_only("".join(cell["source"]))]
    assert not found, f"{chapter.name}: MyST-only syntax renders raw in Jupyter and Colab:\n" + \
        "\n".join(found)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_colab_setup_cell_is_first_and_hidden(chapter):
    first = cells(chapter)[0]
    expected = setup_cell_source(repository_source(ROOT / "_config.yml"))
    hint = "run `python -m mambaadv2_ref.viz.colab book/` from the repository"
    assert first["cell_type"] == "code" and "".join(first["source"]) == expected, \
        f"{chapter.name}: the first cell is not the Colab setup cell ({hint})"
    assert SETUP_TAG in first["metadata"].get("tags", []), \
        f"{chapter.name}: the setup cell is not tagged {SETUP_TAG!r} ({hint})"
