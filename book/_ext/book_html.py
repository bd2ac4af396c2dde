"""Sphinx extension of the book: pages that work offline, launch buttons from one setting.

- Widgets: when the widget manager's scripts have been fetched into `.cache/book_js/` (by
  `.ci/setup.sh`, from the npm packages `@jupyter-widgets/html-manager` and `requirejs`), pages
  load them from the build's `_static/` instead of a CDN, so the saved widget states (sliders
  and the figures they hold) render without a network. MathJax comes from the build too, by the
  extension `sphinx-mathjax-offline` (`_config.yml`).
- Launch buttons: Colab's button needs the public repository, `repository.url` in `_config.yml`,
  the same setting the chapters' Colab setup cell installs from (`mambaadv2_ref.viz.colab`).
  While it is empty the button is left out (Jupyter Book would otherwise point to its own
  repository).
"""

from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
WIDGET_JS = ("require.js", "embed-amd.js")


def widget_js_dir(root: Path) -> Path:
    """Where `.ci/setup.sh` puts the widget manager's scripts."""
    return root / ".cache" / "book_js"


def use_local_widget_js(config: Config, folder: Path) -> bool:
    """Serve the widget scripts from `folder` (copied into `_static/`) when they are all there."""
    if not all((folder / name).is_file() for name in WIDGET_JS):
        LOGGER.info("book_html: no %s; widgets load their scripts from a CDN", folder)
        return False
    config.html_static_path = [*config.html_static_path, str(folder)]
    config.nb_ipywidgets_js = {"require.js": {},
                               "embed-amd.js": {"data-jupyter-widgets-cdn": "_static/"}}
    return True


def launch_buttons_need_repository(config: Config) -> None:
    """Drop the Colab launch button while `repository.url` is empty."""
    options = config.html_theme_options
    if (options.get("repository_url") or "").startswith("https://"):
        return
    buttons = dict(options.get("launch_buttons") or {})
    if buttons.pop("colab_url", None):
        LOGGER.info("book_html: repository.url is empty, so no Colab launch button")
    config.html_theme_options = {**options, "launch_buttons": buttons}


def on_config_inited(app: Sphinx, config: Config) -> None:
    use_local_widget_js(config, widget_js_dir(Path(app.srcdir)))
    launch_buttons_need_repository(config)


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", on_config_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
