#!/usr/bin/env bash
# The runs behind pipeline_results.json: for one dataset, benchmark, train and evaluate mambaadv2,
# mambaad (our MambaAD v1 configuration) and patchcore, all on the efficientnet_lite0 offline
# ImageNet weights, through the command line only.
#
# Usage: pipeline_runs.sh NAME DATA PROFILE STEPS RUNS_DIR [DEVICE] [BUDGET_S]
#   DATA   dataset root, or - for the embedded dataset
#   STEPS  optimisation steps of mambaadv2 and mambaad (the same for both), or "auto": BUDGET_S
#          seconds at the slower model's training throughput measured by `bench model`
# Environment: MODELS (default "mambaadv2 mambaad patchcore"), WORKERS (DataLoader workers).
set -euo pipefail
name=$1; data=$2; profile=$3; steps=$4; runs=$5; device=${6:-auto}; budget=${7:-120}
enc=efficientnet_lite0
workers=${WORKERS:-0}
cli="python -m mambaadv2_ref"
out="$runs/$name"
mkdir -p "$out"
data_args=()
if [ "$data" != "-" ]; then data_args=(--data "$data"); fi
{ lscpu | grep "Model name" || true; OMP_NUM_THREADS= nproc; nvidia-smi --query-gpu=name --format=csv,noheader \
  2>/dev/null || true; } > "$out/hardware.txt"
if [ "$steps" = auto ]; then
  for m in mambaadv2 mambaad; do
    $cli bench model --model $m --profile "$profile" --encoder $enc --device "$device" \
      --iters 10 --out "$out/bench_$m.json" > /dev/null
  done
  steps=$(python -c "
import json
b = [json.load(open(f'$out/bench_{m}.json')) for m in ('mambaadv2', 'mambaad')]
print(max(50, int($budget * min(x['train_images_per_s'] for x in b) / b[0]['batch_size'])))")
fi
for m in ${MODELS:-mambaadv2 mambaad patchcore}; do  # a failing model does not stop the others
  $cli train "${data_args[@]}" --profile "$profile" --model $m --encoder $enc --steps "$steps" \
    --device "$device" --out "$out/$m" --set num_workers="$workers" \
    && $cli evaluate --run "$out/$m" --device "$device" || echo "FAILED: $name $m"
done
