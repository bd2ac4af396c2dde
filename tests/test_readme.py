"""The README's package snippet runs as written, in a folder where `train` has written its run.

The snippet is read from README.md (the python block of "## The package"), so the test follows
the README: a reader who copies it after the README's `train` command must see it work.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    """The python block of the README's section "## The package"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## The package", 1)
    assert len(section) == 2, "README.md has no section '## The package'"
    block = re.search(r"```python\n(.*?)```", section[1].split("\n## ", 1)[0], re.S)
    assert block, "the README's section '## The package' has no python block"
    return block.group(1)


def test_snippet_names_what_it_uses():
    snippet = readme_snippet()
    compile(snippet, "README.md", "exec")
    assert "load_detector(" in snippet and "anomaly_map(" in snippet


@pytest.mark.slow
def test_snippet_runs_as_written(tmp_path):
    env = {**os.environ, "MAMBAADV2_PROFILE": "tiny", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    train = [sys.executable, "-m", "mambaadv2_ref", "train", "--profile", "tiny", "--model",
             "mambaadv2", "--out", "runs/tiny", "--steps", "2", "--classes", "brick"]
    done = subprocess.run(train, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    snippet = readme_snippet() + "\nprint('scores', tuple(scores.shape), tuple(maps.shape))\n"
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"scores \(\d+,\) \(\d+, \d+, \d+\)", done.stdout), done.stdout
