#!/usr/bin/env bash
# DMT on Cityscapes, 1/8 labels (371 images), docs/method.md §1.1 and §7.3 (dmt-city-8-1.sh).
#   ./segmentation/dmt-city-8.sh [SPLIT_ID, default 1]
# Baselines c (COCO init — the head does not fit 19 classes and stays random —, seed 1) and
# i (ImageNet init, seed 2), then 5 phases of mutual training.
# Every variable below can be overridden from the environment (see segmentation/dmt_lib.sh).
SID=${1:-1}
TRAIN_SET=${TRAIN_SET:-8}
BASE_EPOCHS=${BASE_EPOCHS:-170}   # 170 ep x 47 it = 7,990 iterations
BASE_LR=${BASE_LR:-0.004}
BASE_VAL=${BASE_VAL:-350}
BASE_BATCH=${BASE_BATCH:-8}
PHASE_EPOCHS=${PHASE_EPOCHS:-10}  # 10 ep x 434 it = 4,340 iterations
PHASE_LR=${PHASE_LR:-0.004}
PHASE_VAL=${PHASE_VAL:-300}
GAMMA1=${GAMMA1:-3}               # 5 before commit 36fde76 (docs/method.md §3.1)
GAMMA2=${GAMMA2:-3}
BATCH_LABELED=${BATCH_LABELED:-2}
BATCH_PSEUDO=${BATCH_PSEUDO:-6}
LABEL_BATCH=${LABEL_BATCH:-8}
source "$(dirname "$0")/dmt_lib.sh"
seg_setup city
dmt_ci "$TRAIN_SET"
