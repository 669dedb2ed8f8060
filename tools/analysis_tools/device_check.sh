#!/usr/bin/env bash
# The GPU check, in one go: what a user runs first on a GPU box, on stand-in data and stand-in
# weights (no network). It stays within BUDGET seconds (default 540: the device machine takes a
# command of at most 10 minutes): each step is bounded by its own timeout and by the time left,
# a step that would start with under 30 s left is skipped (the summary says so), and the steps
# run in the order of STEPS, the issue's aims first, so that a failure or the budget still
# leaves the others' results.
#   1. the real Swin-T Mask R-CNN recipe through tools/train.py with --amp (40 iterations, then its
#      val loop with CocoMetric), and mmdet's own twin recipe through the same tool;
#   2. the real UPerNet Swin-T recipe through tools/train.py with --amp (40 iterations + val);
#   3. one training iteration of our recipe against mmdet's / mmseg's, same weights, same batch:
#      losses side by side, time and peak memory (benchmark_recipe.py, AMP);
#   4. backbone training steps against the references (benchmark_backbone.py, fp32 and AMP;
#      Swin and ViTDet with AMP also with MMVTX_BIAS_GRAD=recompute), with FLOPs and MFU.
# Every output goes to OUT_DIR (default work_dirs/device_check), with a summary in summary.txt.
#
#   bash tools/analysis_tools/device_check.sh [OUT_DIR] [--quick]
# --quick: a dry run of the same steps with few iterations and small sizes (works on a CPU).
# STEPS="..." runs the named steps in that order (default: backbone_swin recipe_mask-rcnn
# det_mmvtx det_mmdet seg_mmvtx recipe_upernet backbone; backbone_MODEL runs that model's
# backbone runs, backbone the ones not run yet); BACKBONES="swin 2x3x800x1344 ..." (model and
# input pairs) replaces the backbone runs; ITERS=N the training iterations of steps 1-2.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# OUT_DIR and --quick in either order (``device_check.sh --quick`` alone had made a folder
# named --quick fail, written the summary to /summary.txt and run the full GPU check)
OUT=; QUICK=
for arg in "$@"; do
  case $arg in
    --quick) QUICK=--quick ;;
    -*) echo "device_check.sh: unknown option $arg (usage: device_check.sh [OUT_DIR] [--quick])" >&2
        exit 2 ;;
    *) [[ -z $OUT ]] || { echo "device_check.sh: two output folders: $OUT and $arg" >&2; exit 2; }
       OUT=$arg ;;
  esac
done
OUT=${OUT:-$ROOT/work_dirs/device_check}
PY=${PYTHON:-python3}
# the steps run from a scratch directory: an absolute path (not resolved through symlinks, so a
# venv's python stays the venv's)
[[ $PY == */* ]] && PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
mkdir -p -- "$OUT" && OUT=$(cd -- "$OUT" && pwd) || { echo "device_check.sh: cannot use $OUT" >&2; exit 2; }
export PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
SCRATCH=$(mktemp -d)
export TORCH_HOME=$SCRATCH/torch_home  # stand-in weights never reach the real hub cache
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
note() { echo "== $*" | tee -a "$SUMMARY"; }

START=$SECONDS
if [[ $QUICK == --quick ]]; then
  BUDGET=${BUDGET:-3600}; ITERS=2; NTRAIN=2; REPEATS=1; LIMIT=900; AMP=""
  DEV=$($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
  BACKBONE_RUNS=("swin 1x3x224x224")
else
  BUDGET=${BUDGET:-540}; ITERS=${ITERS:-40}; NTRAIN=16; REPEATS=10; LIMIT=120; AMP=--amp; DEV=cuda
  BACKBONE_RUNS=("swin 2x3x800x1344" "vit 2x3x512x512" "cvt 1x3x800x1344" "vitdet 1x3x1024x1024"
                 "dinov2 2x3x518x518")
fi
STEPS=${STEPS:-backbone_swin recipe_mask-rcnn det_mmvtx det_mmdet seg_mmvtx recipe_upernet backbone}
# seconds a step may take: its own limit ($1) or the time left, whichever is less; 0 (and a line
# in the summary) when under 30 s are left
step_limit() {
  local left=$(( BUDGET - (SECONDS - START) ))
  if (( left < 30 )); then
    echo "   SKIPPED: $left s left of the ${BUDGET} s budget" | tee -a "$SUMMARY" >&2; echo 0
  else
    echo $(( left < $1 ? left : $1 ))
  fi
}
if [[ -n ${BACKBONES:-} ]]; then
  BACKBONE_RUNS=(); set -- $BACKBONES
  while (( $# >= 2 )); do BACKBONE_RUNS+=("$1 $2"); shift 2; done
fi
[[ $DEV == cuda ]] || AMP=""
note "device: $($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch", torch.__version__)')"

cd "$SCRATCH"
$PY "$ROOT/tools/dataset_converters/make_standin_data.py" coco --num-train $NTRAIN --num-val 4 >/dev/null
$PY "$ROOT/tools/dataset_converters/make_standin_data.py" ade20k --num-train $NTRAIN --num-val 4 >/dev/null
DET=$ROOT/configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py
SEG=$ROOT/configs/swin/upernet_swin-t-p4-w7_4xb4-160k_ade20k-512x512.py
$PY "$ROOT/tools/misc/make_standin_checkpoints.py" "$DET" "$SEG" >/dev/null 2>&1

# iteration time and memory from the training log (mmengine logs both; window_size=1 makes its
# "time" the iteration's own, not a running mean over up to 50 iterations as mmdet's default)
log_figures() {
  $PY - "$1" <<'PY'
import glob, json, statistics, sys
recs = [json.loads(l) for f in glob.glob(sys.argv[1] + '/*/vis_data/scalars.json') for l in open(f)]
train = [r for r in recs if 'loss' in r]
times = [r['time'] for r in train[len(train) // 2:]]  # the second half: past the warm-up
mem = max((r.get('memory', 0) for r in train), default=0)
metric = {k: round(v, 4) for r in recs for k, v in r.items() if k.startswith('coco/bbox_mAP') or k == 'mIoU'}
print(f'{len(train)} iterations logged, median iteration {statistics.median(times):.3f} s '
      f'(second half), peak memory {mem} MiB, last loss {train[-1]["loss"]:.4f}, val {metric}'
      if train else 'no training record')
PY
}

train_recipe() {  # name config extra-cfg-options...
  local name=$1 cfg=$2 limit; shift 2
  note "tools/train.py $(basename "$cfg") $AMP"
  limit=$(step_limit $LIMIT); (( limit > 0 )) || return 0
  (timeout $limit $PY "$ROOT/tools/train.py" "$cfg" $AMP --work-dir "$SCRATCH/$name" \
     --cfg-options default_hooks.logger.interval=1 log_processor.window_size=1 \
     val_dataloader.dataset.indices=4 "$@" \
     > "$OUT/train_$name.log" 2>&1 && echo "   finished") | tee -a "$SUMMARY" \
     || echo "   FAILED (see train_$name.log)" | tee -a "$SUMMARY"
  log_figures "$SCRATCH/$name" | sed 's/^/   /' | tee -a "$SUMMARY"
}

EPOCHS=$(( ITERS * 2 / NTRAIN )); (( EPOCHS < 1 )) && EPOCHS=1
MMDET_DET=$($PY -c 'import mmdet, os.path as p; print(p.join(p.dirname(mmdet.__file__), ".mim", "configs", "swin", "mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py"))')

recipe_benchmark() {  # preset
  local limit
  note "benchmark_recipe.py --preset $1 --device $DEV $AMP"
  limit=$(step_limit $(( LIMIT * 3 / 4 ))); (( limit > 0 )) || return 0
  (cd "$ROOT" && timeout $limit $PY tools/analysis_tools/benchmark_recipe.py --preset $1 \
    --device $DEV $AMP --repeats $REPEATS --data-root "$SCRATCH/bench_$1") > "$OUT/recipe_$1.txt" 2>&1 \
    || echo "   FAILED (see recipe_$1.txt)" | tee -a "$SUMMARY"
  tail -n 25 "$OUT/recipe_$1.txt" | sed 's/^/   /' | tee -a "$SUMMARY"
}

DONE_RUNS=" "
backbone_runs() {  # model (all: every run not done yet)
  local which=$1 run model size variants variant amp kernel tag limit
  for run in "${BACKBONE_RUNS[@]}"; do
    read -r model size <<< "$run"
    [[ $which == all || $model == "$which" ]] || continue
    [[ $DONE_RUNS == *" $model:$size "* ]] && continue
    DONE_RUNS+="$model:$size "
    # Swin and ViTDet with AMP twice: the bias / relative-position gradient through the fused
    # kernel (auto: sdpa on CUDA) and through mmvtx's recomputing backward, to see which the
    # default should be
    variants=("" $AMP); [[ $model == swin || $model == vitdet ]] && variants+=("$AMP:recompute")
    for variant in "${variants[@]}"; do
      amp=${variant%%:*}; kernel=${variant#*:}; [[ $variant == *:* ]] || kernel=auto
      tag=${model}_$size${amp:+_amp}${kernel/auto/}
      note "MMVTX_BIAS_GRAD=$kernel benchmark_backbone.py --model $model --input $size --device $DEV $amp"
      limit=$(step_limit $LIMIT); (( limit > 0 )) || continue
      (cd "$ROOT" && MMVTX_BIAS_GRAD=$kernel timeout $limit $PY tools/analysis_tools/benchmark_backbone.py \
        --model $model --input $size --device $DEV $amp) > "$OUT/backbone_$tag.txt" 2>&1 \
        || echo "   FAILED" | tee -a "$SUMMARY"
      tail -n 7 "$OUT/backbone_$tag.txt" | sed 's/^/   /' | tee -a "$SUMMARY"
    done
  done
}

for step in $STEPS; do
  case $step in
    det_mmvtx) train_recipe det_mmvtx "$DET" train_cfg.max_epochs=$EPOCHS train_cfg.val_begin=$EPOCHS ;;
    det_mmdet) train_recipe det_mmdet "$MMDET_DET" train_cfg.max_epochs=$EPOCHS train_cfg.val_begin=$EPOCHS ;;
    seg_mmvtx) train_recipe seg_mmvtx "$SEG" train_cfg.max_iters=$ITERS train_cfg.val_interval=$ITERS ;;
    recipe_mask-rcnn|recipe_upernet) recipe_benchmark "${step#recipe_}" ;;
    backbone) backbone_runs all ;;
    backbone_*) backbone_runs "${step#backbone_}" ;;
    *) echo "device_check.sh: unknown step $step in STEPS" | tee -a "$SUMMARY" >&2 ;;
  esac
done
note "done in $(( SECONDS - START )) s (budget ${BUDGET} s)"
rm -rf "$SCRATCH"
