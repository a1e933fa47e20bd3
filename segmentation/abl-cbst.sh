#!/usr/bin/env bash
# CBST ablation, PASCAL VOC 2012 1/50, split 2 (docs/method.md §1.4, §7.3 abl_cbst.sh): model c self-trains on
# its own previous-phase labels with the plain loss (gamma 0), 5 phases.
# Needs abl-baseline.sh first (BASELINE_OUT, default runs/abl-baseline-<split id>).
#   ./segmentation/abl-cbst.sh [SPLIT_ID, default 2]
# Every variable below can be overridden from the environment (see segmentation/dmt_lib.sh).
SID=${1:-2}
TRAIN_SET=${TRAIN_SET:-50}
PHASE_EPOCHS=${PHASE_EPOCHS:-4}   # 4 ep x 1,482 it = 5,928 iterations
PHASE_LR=${PHASE_LR:-0.001}
PHASE_VAL=${PHASE_VAL:-500}
GAMMA1=${GAMMA1:-0}
GAMMA2=${GAMMA2:-0}
BATCH_LABELED=${BATCH_LABELED:-1}
BATCH_PSEUDO=${BATCH_PSEUDO:-7}
LABEL_BATCH=${LABEL_BATCH:-8}
source "$(dirname "$0")/dmt_lib.sh"
seg_setup voc
ablation_self_training "$TRAIN_SET"
