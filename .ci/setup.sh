# Sourced by the README's two commands: a virtual environment with the package and its extras.
# torch is not pinned (Colab brings its own); here pip takes it from timm's torchvision.
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[dev,book,offline-weights]"
