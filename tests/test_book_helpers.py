"""The book's helpers: package source, prose and tables drawn alike in every front end; the Colab
setup cell and its one pip source."""

import inspect
import json

import pytest
from IPython.core.formatters import DisplayFormatter
from IPython.core.inputtransformer2 import TransformerManager

from mambaadv2_ref.viz import colab
from mambaadv2_ref.viz.chapter import ChapterEnv, prose, setup_chapter, show_source, table


def formatted(obj) -> dict:
    """What IPython sends a front end for `obj` as a cell's last expression (mime -> text)."""
    data, _ = DisplayFormatter().format(obj)  # no global shell: setup_chapter would see one
    return data


def test_show_source_highlights_and_keeps_the_source_as_plain_text():
    data = formatted(show_source(setup_chapter))
    plain, html = data["text/plain"], data["text/html"]
    assert plain.splitlines()[0].startswith(
        "# mambaadv2_ref.viz.chapter.setup_chapter  (mambaadv2_ref/viz/chapter.py, line ")
    assert plain.split("\n", 1)[1] == inspect.getsource(setup_chapter).rstrip("\n")
    assert "<span style=" in html and "setup_chapter" in html and "-&gt;" in html
    line = inspect.getsourcelines(setup_chapter)[1]
    assert f"line {line})" in plain


def test_show_source_takes_classes_methods_and_properties():
    assert formatted(show_source(ChapterEnv))["text/plain"].split("\n")[1].startswith(
        "@dataclass(frozen=True)")
    method = formatted(show_source(ChapterEnv.summary))["text/plain"]
    assert method.split("\n")[1] == "def summary(self) -> str:"  # dedented


def test_show_source_rejects_what_has_no_single_source():
    with pytest.raises(TypeError, match="function, method or class"):
        show_source(json)
    with pytest.raises(TypeError, match="function, method or class"):
        show_source(42)


def test_prose_renders_markdown_and_prints_as_itself():
    data = formatted(prose("profile **tiny**, 128 px"))
    assert data["text/markdown"] == data["text/plain"] == "profile **tiny**, 128 px"
    with pytest.raises(ValueError, match="non-empty"):
        prose("  ")


def test_table_renders_the_one_markdown_table_everywhere():
    rows = [{"curve": "hilbert", "jump": 1.23456}, {"curve": "zorder", "jump": 10.0}]
    data = formatted(table(rows, formats={"jump": ".2f"}, title="Locality"))
    assert data["text/markdown"].splitlines() == [
        "**Locality**", "", "| curve | jump |", "|---|---|", "| hilbert | 1.23 |",
        "| zorder | 10.00 |"]
    assert data["text/plain"] == data["text/markdown"]
    with pytest.raises(ValueError, match="at least one"):
        table([])


def write_config(tmp_path, repository: str) -> str:
    path = tmp_path / "_config.yml"
    path.write_text(f"title: t\nrepository:\n{repository}")
    return str(path)


def test_repository_source_is_the_one_pip_setting(tmp_path):
    assert colab.repository_source(write_config(tmp_path, "  url: ''\n  branch: main\n")) == ""
    url = "  url: https://github.com/owner/repo\n  branch: dev\n"
    assert colab.repository_source(write_config(tmp_path, url)) == \
        "git+https://github.com/owner/repo@dev"
    with pytest.raises(ValueError, match="repository.url"):
        colab.repository_source(write_config(tmp_path, "  url: github.com/owner/repo\n"))
    with pytest.raises(FileNotFoundError, match="_config.yml"):
        colab.repository_source(tmp_path / "missing" / "_config.yml")


def test_setup_cell_is_valid_ipython_and_installs_from_the_source():
    cell = colab.setup_cell_source("git+https://github.com/owner/repo@main")
    python = TransformerManager().transform_cell(cell)
    compile(python, "setup-cell", "exec")
    assert "get_ipython().run_line_magic('pip'" in python
    assert '"MAMBAADV2_REF_PIP", "git+https://github.com/owner/repo@main"' in cell
    assert "mambaadv2-ref[offline-weights] @ {source}" in cell
    assert all(len(line) <= 100 for line in cell.splitlines())


def test_write_setup_cells_inserts_once_first_and_tagged(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    chapter = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Title"]}],
               "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    (book / "00_a.ipynb").write_text(json.dumps(chapter))
    config = write_config(tmp_path, "  url: ''\n")
    assert colab.write_setup_cells(book, config) == [book / "00_a.ipynb"]
    assert colab.write_setup_cells(book, config) == []  # already there: unchanged
    cells = json.loads((book / "00_a.ipynb").read_text())["cells"]
    assert len(cells) == 2 and cells[0]["metadata"]["tags"] == ["remove-cell"]
    assert "".join(cells[0]["source"]) == colab.setup_cell_source("")
    with pytest.raises(FileNotFoundError, match="no chapter"):
        colab.write_setup_cells(tmp_path / "missing", config)


def test_install_mamba_ssm_without_a_gpu_says_which_scans_run(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    assert colab.install_mamba_ssm() is False
    assert "pure-PyTorch scans" in capsys.readouterr().out
    with pytest.raises(ValueError, match="timeout_s"):
        colab.install_mamba_ssm(timeout_s=0)


def book_html():
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
    try:
        return importlib.import_module("book_html")
    finally:
        sys.path.pop(0)


class FakeConfig:
    def __init__(self, **values):
        self.__dict__.update(values)


def test_colab_launch_button_only_with_a_repository_url():
    ext = book_html()
    buttons = {"colab_url": "https://colab.research.google.com", "notebook_interface": "x"}
    config = FakeConfig(html_theme_options={"repository_url": "", "launch_buttons": buttons})
    ext.launch_buttons_need_repository(config)
    assert config.html_theme_options["launch_buttons"] == {"notebook_interface": "x"}
    url = "https://github.com/owner/repo"
    config = FakeConfig(html_theme_options={"repository_url": url, "launch_buttons": buttons})
    ext.launch_buttons_need_repository(config)
    assert config.html_theme_options["launch_buttons"] == buttons


def test_widget_scripts_served_from_the_build_when_present(tmp_path):
    ext = book_html()
    config = FakeConfig(html_static_path=["_static"], nb_ipywidgets_js={"https://cdn/x.js": {}})
    assert ext.use_local_widget_js(config, tmp_path) is False
    assert config.nb_ipywidgets_js == {"https://cdn/x.js": {}}
    for name in ext.WIDGET_JS:
        (tmp_path / name).write_text("//")
    assert ext.use_local_widget_js(config, tmp_path) is True
    assert config.html_static_path == ["_static", str(tmp_path)]
    assert not any("://" in src for src in config.nb_ipywidgets_js)


def test_results_table_reads_a_study_file_or_says_it_is_missing(tmp_path):
    from mambaadv2_ref.studies import scan_bench
    from mambaadv2_ref.viz.chapter import results_table

    entry = {"shape": {"scan": "ssd", "length": 64, "batch": 2},
             "methods": {"sequential": {"ms": 1.5, "batch": 2}, "mamba_ssm": {"error": "no GPU"}}}
    (tmp_path / "bench.json").write_text(json.dumps({"shapes": [entry]}))
    shown = formatted(results_table(scan_bench, "bench.json", results_dir=tmp_path,
                                    columns=["scan", "method", "ms", "note"]))
    assert shown["text/markdown"].splitlines()[2:] == ["| ssd | sequential | 1.5 |  |",
                                                        "| ssd | mamba_ssm |  | no GPU |"]
    missing = formatted(results_table(scan_bench, "absent.json", results_dir=tmp_path))
    assert missing["text/plain"] == "absent.json is not committed yet: nothing to show."
    with pytest.raises(TypeError, match="load_table"):
        results_table(json, "bench.json")


def test_show_source_takes_a_dotted_name():
    by_name = formatted(show_source("mambaadv2_ref.viz.chapter.ChapterEnv.summary"))
    assert by_name == formatted(show_source(ChapterEnv.summary))
    assert formatted(show_source("mambaadv2_ref.viz.chapter.setup_chapter"))["text/plain"] == \
        formatted(show_source(setup_chapter))["text/plain"]
    with pytest.raises(ValueError, match="names no function or class"):
        show_source("mambaadv2_ref.viz.chapter.no_such_function")
    with pytest.raises(ValueError, match="names no function or class"):
        show_source("no_such_package.thing")
