# Sourced by the README's two commands: a virtual environment with the package and its extras.
# torch is not pinned (Colab brings its own); here pip takes it from timm's torchvision.
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[dev,book,offline-weights]"

# The HTML book's widget scripts, served from the build so that pages work offline
# (book/_ext/book_html.py): the npm packages @jupyter-widgets/html-manager and requirejs.
if [ ! -f .cache/book_js/embed-amd.js ] && command -v npm >/dev/null; then
    mkdir -p .cache/book_js
    (cd .cache/book_js \
        && npm pack --silent @jupyter-widgets/html-manager@1.0.15 requirejs@2.3.8 >/dev/null \
        && tar xzf jupyter-widgets-html-manager-1.0.15.tgz --strip-components=2 package/dist \
        && tar xzf requirejs-2.3.8.tgz --strip-components=1 package/require.js \
        && rm -f ./*.tgz ./*.map embed.js libembed-amd.js ./*.LICENSE.txt) \
        || echo "setup: no offline widget scripts (npm failed): pages load them from a CDN"
fi
