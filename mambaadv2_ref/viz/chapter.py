"""The book's helper module: the chapter set-up and what a chapter shows.

Each chapter's second cell is::

    from mambaadv2_ref.viz.chapter import setup_chapter
    env = setup_chapter()

which prints one line such as ``device=cpu, profile=tiny, scan backend=torch`` so that every page
says where its numbers come from. Then, in any front end (the HTML book, JupyterLab, Colab, a
terminal, nbval), as a cell's last expression:

    show_source(HSS.forward)         the package's own code, highlighted, with its file and line
    prose(f"... {value:.2f} ...")     Markdown whose numbers the cell computed
    table(rows)                       a Markdown table (`tables.markdown_table`) in every front end

The Colab set-up cell that comes before them is `viz.colab`'s.
"""

from __future__ import annotations

import inspect
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import torch

from mambaadv2_ref.config import Profile, get_profile
from mambaadv2_ref.runtime import resolve_device, seed_everything
from mambaadv2_ref.tables import markdown_table


@dataclass(frozen=True)
class ChapterEnv:
    """What a chapter runs on.

    Args:
        seed: the seed given to Python, NumPy and PyTorch.
        profile: the run profile (`tiny` without a GPU, `paper` with one, or $MAMBAADV2_PROFILE).
        device: the torch device chosen by `resolve_device("auto")`.
        scan_backend: the scan backend that `backend="auto"` uses on this device.
        colab: whether the chapter runs in Google Colab.
    """

    seed: int
    profile: Profile
    device: torch.device
    scan_backend: str
    colab: bool

    def summary(self) -> str:
        """The one line that `setup_chapter` prints."""
        return (f"device={self.device.type}, profile={self.profile.name}, "
                f"scan backend={self.scan_backend}")


def in_colab() -> bool:
    """True when running inside Google Colab (its `google.colab` module is loaded)."""
    return "google.colab" in sys.modules


def scan_backend_name(device: torch.device) -> str:
    """Name the backend that the scans' `backend="auto"` picks on `device`.

    mamba-ssm's kernels run only on CUDA tensors, so on a CPU the answer is always `torch`; on a
    GPU it lists the mamba-ssm kernels that `available_backends()` reports usable
    (e.g. ``mamba_ssm (s6, ssd, mamba3)``), the others falling back to torch.
    """
    try:
        from mambaadv2_ref.scans import available_backends
    except ImportError as err:  # the scans package is missing or broken: say so, do not hide it
        return f"torch (scans package not importable: {err})"
    if device.type != "cuda":
        return "torch"
    usable = [name.removeprefix("mamba_ssm_") for name, (ok, _) in available_backends().items()
              if name.startswith("mamba_ssm_") and ok]
    if not usable:
        reason = available_backends().get("mamba_ssm_ssd", (False, "not listed"))[1]
        return f"torch (mamba_ssm unavailable: {reason})"
    return f"mamba_ssm ({', '.join(usable)}), torch otherwise"


def use_inline_figures() -> bool:
    """In IPython, show returned matplotlib Figures as images (`%matplotlib inline`).

    The book's plots are plain `Figure` objects (see `viz.plots`); IPython learns to draw them
    once the inline backend is on. Returns False (and does nothing) outside IPython.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.run_line_magic("matplotlib", "inline")
    return True


def setup_chapter(seed: int = 0, profile: str | None = None, device: str = "auto") -> ChapterEnv:
    """Seed everything, pick the profile and device, and print them with the scan backend.

    Also turns on inline figures in a notebook (`use_inline_figures`).

    Args:
        seed: seed for Python, NumPy and PyTorch.
        profile: profile name; None takes $MAMBAADV2_PROFILE, else `paper` on a GPU, else `tiny`.
        device: "auto" (cuda when available, else cpu), "cpu" or "cuda[:N]".

    Returns:
        The `ChapterEnv` that the chapter passes on (``env.device``, ``env.profile``...).
    """
    seed_everything(seed)
    use_inline_figures()
    chosen_device = resolve_device(device)
    env = ChapterEnv(seed=seed, profile=get_profile(profile), device=chosen_device,
                     scan_backend=scan_backend_name(chosen_device), colab=in_colab())
    print(env.summary())
    return env


# ---- what a chapter shows: package source, prose with computed numbers, tables -----------------

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class Shown:
    """A piece of text with a rich view and a plain view, for every notebook front end.

    IPython picks the richest view its front end can draw: the HTML book and JupyterLab take
    `_repr_html_` (or `_repr_markdown_`), Colab the same, a terminal, nbval and `print` the plain
    text (`__repr__`), which is always the content itself, never ``<object at 0x...>``.
    """

    def __init__(self, plain: str, html: str | None = None, markdown: str | None = None):
        self.plain, self.html, self.markdown = plain, html, markdown

    def __repr__(self) -> str:
        return self.plain

    def _repr_html_(self) -> str | None:
        return self.html

    def _repr_markdown_(self) -> str | None:
        return self.markdown


def _where(obj) -> str:
    """`file, line N` of a function, class or method, relative to the repository."""
    target = inspect.unwrap(obj)
    path = Path(inspect.getsourcefile(target)).resolve()
    try:
        path = path.relative_to(_PACKAGE_ROOT)
    except ValueError:  # an installed package (a wheel in Colab): name it from the package down
        parts = path.parts
        path = Path(*parts[parts.index("mambaadv2_ref"):]) if "mambaadv2_ref" in parts else path
    return f"{path.as_posix()}, line {inspect.getsourcelines(target)[1]}"


def _resolve(dotted: str):
    """The object named by a dotted path: the longest importable module, then attributes."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for name in parts[cut:]:
                obj = inspect.getattr_static(obj, name) if inspect.isclass(obj) else \
                    getattr(obj, name)
        except AttributeError:
            break
        return obj
    raise ValueError(f"show_source: {dotted!r} names no function or class of an importable "
                     "module (expected e.g. 'mambaadv2_ref.blocks.hss.HSS.forward')")


def show_source(obj) -> Shown:
    """The source of a function, method or class of the package, highlighted, with its place.

    A chapter shows the package's code with this instead of a pasted copy, so the page and the
    package cannot drift apart. The HTML view is pygments' highlighting with inline styles (no
    style sheet needed: the HTML book, JupyterLab and Colab draw it alike); the plain view is the
    same source as text, for nbval, terminals and front ends without HTML.

    Args:
        obj: a function, method, property or class (not a module or an instance), or its
            dotted name, e.g. ``"mambaadv2_ref.blocks.hss.HSS.forward"`` (no import needed).

    Returns:
        A `Shown`: the cell's last expression displays it.
    """
    if isinstance(obj, str):
        obj = _resolve(obj)
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if not (inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isclass(obj)):
        raise TypeError(f"show_source needs a function, method or class, got {type(obj).__name__}"
                        f" ({obj!r:.60})")
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    code = textwrap.dedent(inspect.getsource(inspect.unwrap(obj)))
    where = f"# {obj.__module__}.{obj.__qualname__}  ({_where(obj)})"
    body = highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))
    html = (f'<div style="background:#f6f8fa;border-left:3px solid #8ca0b3;padding:4px 8px;'
            f'overflow-x:auto"><div style="color:#57606a;font-family:monospace;font-size:85%">'
            f"{escape(where[2:])}</div>{body}</div>")
    return Shown(f"{where}\n{code.rstrip()}", html=html)


def prose(text: str) -> Shown:
    """Markdown that a code cell renders: how numbers computed by the chapter enter its prose.

    Example: ``prose(f"The chunked scan is {ratio:.1f}x faster.")`` as a cell's last
    expression. Every front end renders it as Markdown; the plain view is the text itself.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"prose needs non-empty Markdown text, got {text!r:.60}")
    text = text.strip()
    return Shown(text, markdown=text)


def table(rows: Sequence[Mapping], columns: Sequence[str] | None = None,
          formats: Mapping[str, str] | None = None, digits: int = 3, title: str = "") -> Shown:
    """A table of `rows` (flat dicts) that every front end draws: `tables.markdown_table`'s.

    Args:
        rows, columns, formats, digits: as `mambaadv2_ref.tables.markdown_table`.
        title: optional bold line above the table.

    Returns:
        A `Shown`: Markdown where it renders, the same pipe table as plain text elsewhere.
    """
    text = markdown_table(rows, columns, formats, digits)
    if title:
        text = f"**{title}**\n\n{text}"
    return Shown(text, markdown=text)


def results_table(study, name: str, title: str = "", results_dir: Path | None = None,
                  **options) -> Shown:
    """A committed results file of a study, as a table of its `load_table` rows.

    Args:
        study: the study module (e.g. `mambaadv2_ref.studies.scan_bench`), which exports
            `load_table(path) -> list[dict]`.
        name: the file in `book/results/` (e.g. "scan_bench_cpu.json").
        title: optional bold line above the table.
        results_dir: folder to read (None: the repository's `book/results/`).
        options: `columns`, `formats`, `digits` of `table`.

    Returns:
        The table, or one line saying that the file is not committed (the book invents nothing).
    """
    from mambaadv2_ref.studies.results import RESULTS_DIR

    if not callable(getattr(study, "load_table", None)):
        raise TypeError(f"study must be a study module with load_table(path), got {study!r:.60}")
    path = Path(results_dir or RESULTS_DIR) / name
    if not path.is_file():
        line = f"{name} is not committed yet: nothing to show."
        return Shown(line, markdown=f"*{line}*")
    return table(study.load_table(path), title=title, **options)
