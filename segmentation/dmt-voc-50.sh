#!/usr/bin/env bash
# DMT on PASCAL VOC 2012, 1/50 labels (211 images), docs/method.md §1.1.
#   ./segmentation/dmt-voc-50.sh [SPLIT_ID, default 1]
# Baselines c (COCO init, seed 1) and i (ImageNet init, seed 2), then 5 phases of mutual training.
# Every variable below can be overridden from the environment (see segmentation/dmt_lib.sh).
SID=${1:-1}
TRAIN_SET=${TRAIN_SET:-50}
BASE_EPOCHS=${BASE_EPOCHS:-212}   # dst-cbc 1/50 schedule (docs/method.md §7.3, unscripted in DMT)
BASE_LR=${BASE_LR:-0.002}
BASE_VAL=${BASE_VAL:-140}
BASE_BATCH=${BASE_BATCH:-8}
PHASE_EPOCHS=${PHASE_EPOCHS:-4}   # phase settings unscripted [open]: those of dmt-voc-20 (the closest scripted)
PHASE_LR=${PHASE_LR:-0.001}
PHASE_VAL=${PHASE_VAL:-500}
GAMMA1=${GAMMA1:-5}
GAMMA2=${GAMMA2:-5}
BATCH_LABELED=${BATCH_LABELED:-1}
BATCH_PSEUDO=${BATCH_PSEUDO:-7}
LABEL_BATCH=${LABEL_BATCH:-8}
source "$(dirname "$0")/dmt_lib.sh"
seg_setup voc
dmt_ci "$TRAIN_SET"
