"""The HTML book renders without a network: MathJax and the widget scripts come from the build.

Builds one chapter (chapter 2: display and inline math, a widget, the widget's static twin) with
the book's own `_config.yml`, without executing it (its committed outputs are used), serves it on
127.0.0.1, loads it in headless Chromium with every other host unresolvable, and reads the DOM
after the scripts ran: math must be typeset by MathJax (no raw TeX left) and the saved widget
state drawn. Skipped with a reason where Chromium or jupyter-book is absent (`.ci/test.sh` installs
Chromium; `.ci/setup.sh` fetches the widget scripts).
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = "book/02_state_space_models"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  # the network is off: every host but this machine is unresolvable
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                 "(Debian: apt-get install chromium; .ci/test.sh does it)")]


@pytest.fixture(scope="module")
def built_page(tmp_path_factory) -> Path:
    """Build PAGE alone with the book's configuration, outputs as committed (about 30 s)."""
    pytest.importorskip("jupyter_book", reason="the book extra is not installed")
    pytest.importorskip("sphinx-mathjax-offline", reason="the book extra is not installed")
    work = tmp_path_factory.mktemp("book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"] = {**config.get("execute", {}), "execute_notebooks": "off"}
    local = config["sphinx"].get("local_extensions", {})  # paths are relative to the config
    config["sphinx"]["local_extensions"] = {name: str(ROOT / path) for name, path in local.items()}
    (work / "_config.yml").write_text(yaml.safe_dump(config))
    (work / "_toc.yml").write_text(f"format: jb-book\nroot: {PAGE}\n")
    build = subprocess.run(
        [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build",
         str(ROOT), "--config",
         str(work / "_config.yml"), "--toc", str(work / "_toc.yml"), "--path-output",
         str(work)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return work / "_build" / "html"


def dom_offline(html_dir: Path, page: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran, served from `html_dir`, with no network."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html_dir))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{page}.html"
        run = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=10000", "--dump-dom", url],
            capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
    assert run.returncode == 0 and "<body" in run.stdout, run.stderr[-2000:]
    return run.stdout


def without_scripts(dom: str) -> str:
    return re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)


def test_page_uses_no_cdn(built_page):
    html = (built_page / f"{PAGE}.html").read_text()
    assert (built_page / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert "_static/mathjax/tex-chtml.js" in html
    assert "cdn.jsdelivr.net/npm/mathjax" not in html
    if not (built_page / "_static" / "embed-amd.js").is_file():
        pytest.skip("no offline widget scripts: run .ci/setup.sh (fetches them with npm)")
    assert not re.search(r'<script[^>]+src="https?://', html), "a script still comes from a CDN"


def test_math_is_typeset_offline(built_page, tmp_path):
    dom = without_scripts(dom_offline(built_page, PAGE, tmp_path))
    math = re.findall(r'<(span|div) class="math[^"]*">(.*?)</\1>', dom, flags=re.S)
    assert len(math) > 10, "expected the chapter's inline and display math"
    raw = [body[:80] for _, body in math if "<mjx-container" not in body]
    assert not raw, f"math left as raw TeX: {raw[:3]}"
    assert not re.search(r"\\\(|\\\[|\$\$", re.sub(r"<[^>]+>", "", dom)), "raw TeX in the page"


def test_widgets_and_their_static_figures_render_offline(built_page, tmp_path):
    if not (built_page / "_static" / "embed-amd.js").is_file():
        pytest.skip("no offline widget scripts: run .ci/setup.sh (fetches them with npm)")
    dom = dom_offline(built_page, PAGE, tmp_path)
    assert re.search(r'class="[^"]*widget-slider', dom), "the widget's sliders are not drawn"
    body = without_scripts(dom)
    assert len(re.findall(r"<img[^>]+src=", body)) >= 2  # the widget's figure and its twin
