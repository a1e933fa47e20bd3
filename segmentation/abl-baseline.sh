#!/usr/bin/env bash
# Baselines of the ablations, PASCAL VOC 2012 1/50, split 2 (docs/method.md §1.4, §7.3 abl_baseline.sh):
# c on 50 (211 images, seed 1), l on 50-l (168, seed 1), r on 50-r (168, seed 2), all COCO-initialised.
# Run it before abl-cbst/abl-dst/abl-naive/abl-flip/abl-online.sh, which copy its snapshots.
#   ./segmentation/abl-baseline.sh [SPLIT_ID, default 2]
# Every variable below can be overridden from the environment (see segmentation/dmt_lib.sh).
SID=${1:-2}
TRAIN_SET=${TRAIN_SET:-50}
BASE_EPOCHS=${BASE_EPOCHS:-134}
BASE_LR=${BASE_LR:-0.002}
BASE_VAL=${BASE_VAL:-220}
BASE_BATCH=${BASE_BATCH:-8}       # validation batch 8 + 7 = 15, as the original's
source "$(dirname "$0")/dmt_lib.sh"
seg_setup voc

ensure_dms "$TRAIN_SET"
declare_model c 1 coco
declare_model l 1 coco
declare_model r 2 coco
baseline "$(run_name 0 c)" c "$TRAIN_SET"
baseline "$(run_name 0 l)" l "$TRAIN_SET-l"
baseline "$(run_name 0 r)" r "$TRAIN_SET-r"
