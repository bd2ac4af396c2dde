"""The Colab route: the setup cell that opens every chapter, and the optional mamba-ssm install.

A chapter opened in Google Colab comes alone, without this repository, so its first cell installs
the package. Where from is set in ONE place, the book's `_config.yml`:

    repository:
      url: https://github.com/OWNER/REPO    # empty until the repository is public
      branch: main

With a URL, the cell runs ``pip install "mambaadv2-ref[offline-weights] @ git+URL@BRANCH"`` and the
book's Colab launch buttons point to the same repository (`book/_ext/book_html.py`). Without one,
or to try another build, set the environment variable ``MAMBAADV2_REF_PIP`` (in Colab:
``%env MAMBAADV2_REF_PIP=/content/mambaadv2_ref-0.1.0-py3-none-any.whl``) to a wheel, an sdist or a
``git+`` URL. Colab's own torch is kept (a pip constraint pins its installed version). Then
`install_mamba_ssm` tries mamba-ssm's GPU kernels, with a time limit, and says plainly when the
book falls back to the pure-PyTorch scans.

The cell's text is generated here (`setup_cell_source`) and written into every chapter by
``python -m mambaadv2_ref.viz.colab book/``; a test checks that every chapter holds it, first and
tagged ``remove-cell`` (hidden in the HTML book, where it would do nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIP_SPEC_ENV = "MAMBAADV2_REF_PIP"
REQUIREMENT = "mambaadv2-ref[offline-weights]"
SETUP_TAG = "remove-cell"
FALLBACK = "pure-PyTorch scans"
_MARKER = Path("/tmp/mambaadv2_ref_mamba_ssm.txt")  # one attempt per runtime, not per chapter


def repository_source(config: str | Path = "_config.yml") -> str:
    """The pip source set by `_config.yml`: ``git+URL@BRANCH``, or "" while no URL is set."""
    import yaml

    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"book config {path} not found (expected the repository's "
                                "_config.yml)")
    repository = (yaml.safe_load(path.read_text()) or {}).get("repository") or {}
    url = (repository.get("url") or "").strip()
    if not url:
        return ""
    if not url.startswith("https://"):
        raise ValueError(f"{path}: repository.url must be an https:// URL, got {url!r}")
    return f"git+{url}@{repository.get('branch') or 'main'}"


def setup_cell_source(source: str) -> str:
    """The Colab setup cell, installing from `source` unless $MAMBAADV2_REF_PIP says otherwise.

    Args:
        source: the default pip source (`repository_source()`); "" makes the cell ask for
            $MAMBAADV2_REF_PIP.
    """
    return f'''\
# Google Colab only (elsewhere this cell does nothing): install the book's package, keeping
# Colab's torch, then try mamba-ssm's GPU kernels. Where from: chapter 0, "Running the chapters".
import sys

if "google.colab" in sys.modules:
    import os
    import pathlib
    from importlib.metadata import version

    source = os.environ.get("{PIP_SPEC_ENV}", "{source}")
    if not source:
        raise RuntimeError("set {PIP_SPEC_ENV} to a wheel, sdist or git+ URL of the package")
    if "://" not in source:  # a wheel or sdist on disk
        source = pathlib.Path(source).resolve().as_uri()
    pathlib.Path("/tmp/keep_torch.txt").write_text(f"torch=={{version('torch')}}\\n")
    %pip install -q -c /tmp/keep_torch.txt "{REQUIREMENT} @ {{source}}"
    from mambaadv2_ref.viz.colab import install_mamba_ssm
    install_mamba_ssm()'''


def install_mamba_ssm(timeout_s: float = 600.0) -> bool:
    """Try to install mamba-ssm (the scans' GPU fast path); print what the chapters will use.

    mamba-ssm publishes no wheel on the package index: pip builds it from its sdist, which needs
    torch at build time (``--no-build-isolation``) and a CUDA GPU. Colab's torch is kept by the
    same constraint as the package's install. The first attempt's outcome is remembered for the
    runtime, so the next chapters do not wait again.

    Args:
        timeout_s: give up after this many seconds (a build from source can take much longer).

    Returns:
        True when `mamba_ssm` imports afterwards.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    import importlib
    import importlib.metadata

    import torch

    if importlib.util.find_spec("mamba_ssm") is not None:
        print("mamba-ssm is installed: the scans use its GPU kernels")
        return True
    if not torch.cuda.is_available():
        print(f"No CUDA GPU: the chapters run the {FALLBACK}")
        return False
    if _MARKER.is_file():
        print(f"{_MARKER.read_text().strip()}: the chapters run the {FALLBACK}")
        return False
    print(f"Installing mamba-ssm (at most {timeout_s:.0f} s)...", flush=True)
    constraint = Path("/tmp/keep_torch.txt")
    constraint.write_text(f"torch=={importlib.metadata.version('torch')}\n")
    pip = [sys.executable, "-m", "pip", "install", "-q", "-c", str(constraint)]
    try:
        subprocess.run([*pip, "packaging", "ninja", "wheel", "setuptools"], check=True,
                       capture_output=True, text=True, timeout=timeout_s)
        subprocess.run([*pip, "--no-build-isolation", "mamba-ssm"], check=True,
                       capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        reason = f"mamba-ssm did not install within {timeout_s:.0f} s"
    except subprocess.CalledProcessError as err:
        last = (err.stderr or err.stdout or "").strip().splitlines()[-1:] or ["no message"]
        reason = f"mamba-ssm failed to install ({last[0][:120]})"
    else:
        importlib.invalidate_caches()
        if importlib.util.find_spec("mamba_ssm") is not None:
            print("mamba-ssm installed: the scans use its GPU kernels")
            return True
        reason = "mamba-ssm installed but does not import"
    _MARKER.write_text(reason)
    print(f"{reason}: the chapters run the {FALLBACK}")
    return False


def write_setup_cells(book: str | Path, config: str | Path = "_config.yml") -> list[Path]:
    """Make the first cell of every chapter `book/NN_*.ipynb` the setup cell, tagged to hide.

    An existing setup cell (first cell tagged `remove-cell` that mentions google.colab) is
    replaced; otherwise the cell is inserted first. Returns the notebooks changed.
    """
    source = setup_cell_source(repository_source(config))
    chapters = sorted(Path(book).glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        raise FileNotFoundError(f"no chapter NN_*.ipynb in {book}")
    changed = []
    for path in chapters:
        notebook = json.loads(path.read_text())
        cell = {"cell_type": "code", "execution_count": None, "metadata": {"tags": [SETUP_TAG]},
                "outputs": [], "source": source.splitlines(keepends=True)}
        cells = notebook["cells"]
        first = cells[0] if cells else {}
        if SETUP_TAG in first.get("metadata", {}).get("tags", []) and \
                "google.colab" in "".join(first.get("source", "")):
            if "".join(first["source"]) == source:
                continue
            cells[0] = cell
        else:
            cells.insert(0, cell)
        path.write_text(json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False) + "\n")
        changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mambaadv2_ref.viz.colab BOOK_DIR   (run from the repository)")
    for changed_path in write_setup_cells(sys.argv[1]):
        print(f"wrote the setup cell of {changed_path}")
