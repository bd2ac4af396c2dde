#!/usr/bin/env bash
# One sitting on a GPU machine without internet (../shared/gpu/README.md): mamba-ssm parity
# tests (scans, block, model), the speed grid and the resolution scaling at the paper profile.
# Run from the repository root with `.whl/` carried; results go to $OUT (JSON and logs), each
# phase time-boxed so that a slow one cannot starve the others. BUILD_S6=1 also compiles
# mamba-ssm's Mamba-1 CUDA scan (about 2 minutes). Make `.whl/` on the CPU machine, in the venv:
#   bash ../shared/gpu/build_mamba_wheel.sh             (mamba-ssm wheel + sdist)
#   mkdir -p .whl/gpu .whl/py && cp ../shared/gpu/*.sh ../shared/gpu/*.py .whl/gpu/
#   pip download --no-deps -d .whl/py pytest pluggy iniconfig pygments packaging
# (the GPU image has torch, triton, timm, scipy, Pillow, tqdm and safetensors, but not pytest).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
# shellcheck disable=SC1091
source .whl/gpu/on_gpu_setup.sh > "$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; exit 1; }
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/py/*.whl \
    >> "$OUT/setup.log" 2>&1
export PYTHONPATH=$PWD:/tmp/site
python3 -c "import timm, scipy, PIL, tqdm, safetensors; print('dependencies found')" \
    >> "$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/setup.log"
MAMBAADV2_RESULTS_DIR=$OUT timeout "${PARITY_S:-150}" python3 -m pytest -m cuda -q -s -rs \
    -p no:cacheprovider tests/test_scans_cuda.py tests/test_blocks.py tests/test_model.py \
    > "$OUT/parity.log" 2>&1
echo "parity exit $?"
timeout "${SPEED_S:-150}" python3 -m mambaadv2_ref.studies.speed --out "$OUT" --profile paper \
    --iters 5 --no-plot > "$OUT/speed.log" 2>&1
echo "speed exit $?"
timeout "${SCALING_S:-150}" python3 -m mambaadv2_ref.studies.scaling --out "$OUT" \
    --profile paper --no-plot > "$OUT/scaling.log" 2>&1
echo "scaling exit $?"
tail -n 3 "$OUT"/*.log
