"""The Colab route, end to end: a chapter opened alone in a Python that has only torch.

Builds the wheel, makes a fresh virtual environment with torch (this machine's, linked in) and
what Colab ships with (IPython's kernel, ipywidgets), stubs the `google.colab` module (imported
at kernel start, as in Colab), points $MAMBAADV2_REF_PIP at the wheel, and executes chapter 0
and chapter 7 with nbclient outside Sphinx, each copied alone into an empty folder (a Colab
runtime has no repository). Their first cell must install the package from the wheel, keep
torch, and say that the pure-PyTorch scans run (no GPU here).

Takes a few minutes (the installs and two chapters): marked `slow`; `.ci/test.sh` runs it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ("00_how_to_use.ipynb", "07_hss_block.ipynb")
COLAB_SHIPS = ["ipykernel", "ipywidgets", "nbclient", "nbformat"]

pytestmark = pytest.mark.slow

RUN_CHAPTER = """
import sys
import nbclient, nbformat
path = sys.argv[1]
notebook = nbformat.read(path, as_version=4)
nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
nbformat.write(notebook, path)
"""
WHERE = ("import mambaadv2_ref, torch\n"
         "print('package at', mambaadv2_ref.__file__, torch.__version__)")


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, \
        f"{command[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def link_installed(name: str, site: Path, done: set[str]) -> None:
    """Make distribution `name` and what it requires, as installed here, appear in `site`.

    Colab comes with its own torch; so does this machine (about 4 GB with its CUDA libraries):
    linking it into the new venv, with its metadata so that pip sees it, takes no time, where
    installing it again would take minutes.
    """
    dist = importlib.metadata.distribution(name)
    key = dist.metadata["Name"].lower().replace("_", "-")
    if key in done:
        return
    done.add(key)
    root = Path(dist.locate_file(""))
    for top in {Path(f).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
        if not (site / top).exists():
            (site / top).symlink_to(root / top)
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            link_installed(requirement.name, site, done)


@pytest.fixture(scope="module")
def colab_like(tmp_path_factory) -> dict:
    """A venv with only torch and Colab's kernel, the package's wheel, and the Colab stub."""
    work = tmp_path_factory.mktemp("colab")
    source = work / "source"  # a copy: building in the checkout would leave build/ there
    shutil.copytree(ROOT / "mambaadv2_ref", source / "mambaadv2_ref",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(work / "dist"), str(source)])
    (wheel,) = (work / "dist").glob("mambaadv2_ref-*.whl")
    run([sys.executable, "-m", "venv", str(work / "venv")])
    python = str(work / "venv" / "bin" / "python")
    (site,) = (work / "venv" / "lib").glob("python3*/site-packages")
    link_installed("torch", site, set())
    run([python, "-m", "pip", "install", "-q", "--no-compile", *COLAB_SHIPS])
    stub = work / "stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub.parent / "__init__.py").write_text("")
    (stub / "__init__.py").write_text('"""Stand-in for Colab\'s module (tests only)."""\n')
    startup = work / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # noqa: F401\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=str(work / "stub"), IPYTHONDIR=str(work / "ipython"),
               MAMBAADV2_REF_PIP=str(wheel), MAMBAADV2_PROFILE="tiny", OMP_NUM_THREADS="1",
               PIP_NO_COMPILE="1",  # byte-compiling torch and scipy takes longer than the test
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    return {"work": work, "python": python, "env": env}


def outputs_text(notebook: dict) -> str:
    texts = []
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", "") if isinstance(out.get("text"), str)
                         else "".join(out.get("text", [])))
            texts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_alone_from_the_wheel(colab_like, chapter):
    runtime = colab_like["work"] / f"content_{chapter[:2]}"  # Colab's /content: only the notebook
    runtime.mkdir()
    notebook = json.loads((ROOT / "book" / chapter).read_text())
    notebook["cells"].append({"cell_type": "code", "execution_count": None, "metadata": {},
                              "outputs": [], "source": WHERE})
    path = runtime / chapter
    path.write_text(json.dumps(notebook))
    run([colab_like["python"], "-c", RUN_CHAPTER, str(path)], cwd=runtime, env=colab_like["env"])
    executed = json.loads(path.read_text())
    setup_output = outputs_text({"cells": executed["cells"][:1]})
    assert "pure-PyTorch scans" in setup_output, setup_output[-1500:]
    last = outputs_text({"cells": executed["cells"][-1:]})
    assert "site-packages/mambaadv2_ref/__init__.py" in last, last
    assert str(ROOT) not in last
