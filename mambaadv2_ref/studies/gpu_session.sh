#!/usr/bin/env bash
# One sitting on a GPU machine without internet (../shared/gpu/README.md): mamba-ssm parity tests
# (scans, blocks, model), the scan benchmark, the resolution scaling and the speed grid at the
# paper profile. Run from the repository root with `.whl/` carried. Everything lands in $WORK and
# is packed into $OUT/gpu_session.tgz at exit (the device tool returns at most 8 files).
#
# With two or more GPUs the timed studies (scaling, then speed) run alone on the last GPU while
# the parity tests (Triton JIT, the Mamba-1 CUDA build) and then the scan benchmark use GPU 0;
# with one GPU everything runs in turn. Each phase is time-boxed (PARITY_S, BENCH_S, SCALING_S,
# SPEED_S seconds) so that a slow one cannot starve the others. PHASES picks some of
# "parity bench scaling speed" (all by default); BENCH_SCANS and SPEED_MODELS narrow the
# benchmark and the speed grid; MAMBAADV2_TRITON_ONE_CONFIG=1 is set for the parity tests;
# ARCHIVE names the archive (several sittings can share one command and one $OUT); PARITY_GROUPS
# picks some of "ssd mamba3 s6" and PARITY_GPU the GPU of the parity tests (0).
#
# Make `.whl/` on the CPU machine, in the venv:
#   bash ../shared/gpu/build_mamba_wheel.sh             (mamba-ssm wheel + sdist)
#   mkdir -p .whl/gpu .whl/py && cp ../shared/gpu/*.sh ../shared/gpu/*.py .whl/gpu/
#   pip download --no-deps -d .whl/py pytest pluggy iniconfig pygments packaging
# (the GPU image has torch, triton, timm, scipy, Pillow, tqdm and safetensors, but not pytest).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}
W=${WORK:-/tmp/gpu_session}
mkdir -p "$OUT" "$W"
trap 'tar -czf "$OUT/${ARCHIVE:-gpu_session.tgz}" -C "$W" .' EXIT
if [ -d /tmp/site/mamba_ssm ] && [ -d /tmp/site/pytest ]; then
  echo "mamba-ssm and pytest already in /tmp/site (an earlier sitting of this command)" \
    > "$W/setup.log"
else
  # shellcheck disable=SC1091
  source .whl/gpu/on_gpu_setup.sh > "$W/setup.log" 2>&1 || { cat "$W/setup.log"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/py/*.whl \
      >> "$W/setup.log" 2>&1
fi
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$W/setup.log"
NGPU=$(nvidia-smi -L | wc -l)
LAST=$((NGPU - 1))

build_s6() {  # mamba-ssm's Mamba-1 CUDA scan (~2 min), at low priority beside the timed studies
  tar -xzf .whl/src/mamba_ssm-*.tar.gz -C /tmp \
    && MAX_JOBS=$(( $(nproc) / 4 + 1 )) nice -n 19 python3 .whl/gpu/build_selective_scan.py \
        /tmp/mamba_ssm-*/csrc/selective_scan /tmp/site \
    && rm -f /tmp/site/sitecustomize.py
  echo "build_s6 exit $?" | tee "$W/s6.done"
}
wait_s6() { while [ ! -e "$W/s6.done" ]; do sleep 2; done; }
left() { echo $(( $1 - SECONDS > 10 ? $1 - SECONDS : 10 )); }  # seconds left of a deadline

parity() {  # NAME DEADLINE PYTEST-ARGS...: one pytest process on GPU 0, results in $W/NAME
  local name=$1 deadline=$2; shift 2
  MAMBAADV2_TRITON_ONE_CONFIG=1 MAMBAADV2_RESULTS_DIR=$W/$name \
    CUDA_VISIBLE_DEVICES=${PARITY_GPU:-0} \
    timeout "$(left "$deadline")" \
    python3 -m pytest -m cuda -q -s -rs -p no:cacheprovider "$@" > "$W/$name.log" 2>&1
  echo "$name exit $?"
}

gpu0() {  # parity in three processes (Triton JIT in parallel), then the scan benchmark
  local deadline=$(( SECONDS + ${PARITY_S:-280} ))
  local groups=" ${PARITY_GROUPS:-ssd mamba3 s6} "
  if has parity; then
    [[ $groups == *" ssd "* ]] && parity parity_ssd "$deadline" tests/test_scans_cuda.py \
      -k "ssd or auto" &
    [[ $groups == *" mamba3 "* ]] && parity parity_mamba3 "$deadline" tests/test_scans_cuda.py \
      -k mamba3 &
    [[ $groups == *" s6 "* ]] && (wait_s6; parity parity_s6_blocks_model "$deadline" \
      tests/test_scans_cuda.py tests/test_blocks.py tests/test_model.py \
      -k "selective or torch_matches") &
    wait
  fi
  if has bench; then
    CUDA_VISIBLE_DEVICES=0 timeout "${BENCH_S:-200}" python3 -m mambaadv2_ref.scans.bench \
      --device cuda --out "$W/scan_bench_gpu.json" ${BENCH_SCANS:+--scans "$BENCH_SCANS"} \
      > "$W/scan_bench.log" 2>&1
    echo "scan bench exit $?"
  fi
}

studies() {  # timed: alone on the last GPU when there are two
  if has scaling; then
    CUDA_VISIBLE_DEVICES=$LAST timeout "${SCALING_S:-200}" python3 -m \
      mambaadv2_ref.studies.scaling --out "$W" --profile paper --backend torch --no-plot \
      > "$W/scaling.log" 2>&1
    echo "scaling exit $?"
  fi
  if has speed; then
    wait_s6
    CUDA_VISIBLE_DEVICES=$LAST timeout "${SPEED_S:-300}" python3 -m mambaadv2_ref.studies.speed \
      --out "$W" --profile paper --iters 5 --no-plot ${SPEED_MODELS:+--models "$SPEED_MODELS"} \
      > "$W/speed.log" 2>&1
    echo "speed exit $?"
  fi
}

PHASES=" ${PHASES:-parity bench scaling speed} "
has() { [[ $PHASES == *" $1 "* ]]; }
if has parity || { has speed && [ "${SPEED_MODELS:-mambaad}" != mambaadv2 ]; }; then
  build_s6 > "$W/build_s6.log" 2>&1 &
else
  echo "build_s6 skipped" > "$W/s6.done"
fi
if [ "$NGPU" -gt 1 ]; then
  gpu0 & studies & wait
else
  gpu0; studies
fi
tail -n 4 "$W"/*.log
