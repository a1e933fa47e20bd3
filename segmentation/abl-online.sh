#!/usr/bin/env bash
# Online pseudo-labelling ablation, PASCAL VOC 2012 1/50, split 2 (docs/method.md §1.4, §3.2, §7.3 abl_online.sh):
# one 20-epoch run from c in which the unlabelled images are trained on the current prediction
# (ignored where max p <= 0.9), no curriculum.
# Needs abl-baseline.sh first (BASELINE_OUT, default runs/abl-baseline-<split id>).
#   ./segmentation/abl-online.sh [SPLIT_ID, default 2]
# Every variable below can be overridden from the environment (see segmentation/dmt_lib.sh).
SID=${1:-2}
TRAIN_SET=${TRAIN_SET:-50}
EPOCHS=${EPOCHS:-20}              # 20 ep x 1,482 it = 29,640 iterations
LR=${LR:-0.001}
VAL=${VAL:-500}
THRESHOLD=${THRESHOLD:-0.9}
BATCH_LABELED=${BATCH_LABELED:-1}
BATCH_PSEUDO=${BATCH_PSEUDO:-7}
DOUBLE_STEP=${DOUBLE_STEP:-1}     # 1: two optimizer steps per iteration, as main_online.py (docs/method.md §11.18)
source "$(dirname "$0")/dmt_lib.sh"
seg_setup voc
ablation_setup
declare_model c 1 coco
adopt_baseline "$BASELINE_OUT" "abl-baseline-${SID}__p0--c" c
double=()
[ "$DOUBLE_STEP" = 1 ] && double=(--online-double-step)
seg_main --state 1 --loss online --online-threshold "$THRESHOLD" "${double[@]}" --exp-name "$(run_name 1 c)" \
    --continue-from "$OUT/$(run_name 0 c).pt" --train-set "$TRAIN_SET" --sets-id "$SID" --seed "${MODEL_SEED[c]}" \
    --epochs "$EPOCHS" --lr "$LR" --val-num-steps "$VAL" --batch-size-labeled "$BATCH_LABELED" \
    --batch-size-pseudo "$BATCH_PSEUDO" ${MODEL_FLAGS[c]} "${AMP_ARGS[@]}"
