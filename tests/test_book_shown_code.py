"""Every piece of package code a chapter shows (`show_source`) exists and names what it
implements (an equation, a section or an algorithm) in its docstring."""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
NAMES_EQUATION = re.compile(r"Implements|\beqs?\. ?\(|\(eq|equation|\(\d+(\.\d+)?\)")


def shown_objects(chapter: Path) -> list[tuple[str, str]]:
    """(chapter name, dotted name) of every show_source call of a chapter; a bare name is
    resolved through the chapter's `from mambaadv2_ref... import` lines."""
    code = "\n".join("".join(c["source"]) for c in json.loads(chapter.read_text())["cells"]
                     if c["cell_type"] == "code")
    imported = {}
    for module, names in re.findall(r"from (mambaadv2_ref[\w.]*) import \(?([\w, \n]+)\)?", code):
        for name in re.split(r"[,\s]+", names.strip()):
            if name:
                imported[name] = f"{module}.{name}"
    found = []
    for arg in re.findall(r"show_source\(([^)]+)\)", code):
        arg = arg.strip()
        if arg.startswith(("'", '"')):
            found.append((chapter.name, arg.strip("'\"")))
        elif arg.split(".")[0] in imported:
            head, *rest = arg.split(".")
            found.append((chapter.name, ".".join([imported[head], *rest])))
    return found


def resolve(dotted: str):
    """The object of a dotted name: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


SHOWN = [item for chapter in CHAPTERS for item in shown_objects(chapter)]
# the book's own plumbing, shown so that a reader sees how a chapter sets itself up: no equation
PLUMBING = {"mambaadv2_ref.viz.chapter.setup_chapter",
            "mambaadv2_ref.studies.live_run.live_run_config"}


def test_the_book_shows_package_code():
    assert len(SHOWN) >= 30, SHOWN


@pytest.mark.parametrize("chapter, dotted", SHOWN, ids=[d for _, d in SHOWN])
def test_shown_code_exists_and_names_what_it_implements(chapter, dotted):
    obj = resolve(dotted)  # AttributeError / ImportError: the chapter shows a name that is gone
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{chapter}: {dotted} has no docstring"
    if dotted in PLUMBING:
        return
    assert NAMES_EQUATION.search(doc), f"{chapter}: {dotted}'s docstring names no equation"
