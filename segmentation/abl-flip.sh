#!/usr/bin/env bash
# Flip ablation, PASCAL VOC 2012 1/50, split 2 (docs/method.md §1.4, §3.2, §7.3 abl_flip.sh):
# the l/r mutual loop of docs/method.md §1.3 (phases on the whole 211-image set); where the model being trained
# disagrees and is surer than the labeller, the target flips to its prediction with w = (1 - c)^5.
# Needs abl-baseline.sh first (BASELINE_OUT, default runs/abl-baseline-<split id>).
#   ./segmentation/abl-flip.sh [SPLIT_ID, default 2]
# Every variable below can be overridden from the environment (see segmentation/dmt_lib.sh).
SID=${1:-2}
TRAIN_SET=${TRAIN_SET:-50}
LOSS=${LOSS:-flip}
PHASE_EPOCHS=${PHASE_EPOCHS:-4}
PHASE_LR=${PHASE_LR:-0.001}
PHASE_VAL=${PHASE_VAL:-500}
GAMMA1=${GAMMA1:-5}
GAMMA2=${GAMMA2:-5}
BATCH_LABELED=${BATCH_LABELED:-1}
BATCH_PSEUDO=${BATCH_PSEUDO:-7}
LABEL_BATCH=${LABEL_BATCH:-8}
LABEL_AMP=${LABEL_AMP:-1}
source "$(dirname "$0")/dmt_lib.sh"
seg_setup voc
ablation_mutual "$TRAIN_SET"
