#!/usr/bin/env bash
# DMT on Cityscapes, 1/30 labels (100 images), docs/method.md §1.1.
#   ./segmentation/dmt-city-30.sh [SPLIT_ID, default 1]
# Baselines c (COCO init — the head does not fit 19 classes and stays random —, seed 1) and
# i (ImageNet init, seed 2), then 5 phases of mutual training.
# Every variable below can be overridden from the environment (see segmentation/dmt_lib.sh).
SID=${1:-1}
TRAIN_SET=${TRAIN_SET:-30}
BASE_EPOCHS=${BASE_EPOCHS:-330}   # dst-cbc 1/30 schedule (docs/method.md §7.3, unscripted in DMT)
BASE_LR=${BASE_LR:-0.004}
BASE_VAL=${BASE_VAL:-100}
BASE_BATCH=${BASE_BATCH:-8}
PHASE_EPOCHS=${PHASE_EPOCHS:-10}  # phase settings unscripted [open]: those of dmt-city-8 (the closest scripted)
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
