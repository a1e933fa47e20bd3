#!/usr/bin/env bash
# DMT with difference-maximised sampling on PASCAL VOC 2012, 1/106 labels (100 images),
# docs/method.md §1.3 and §7.3 (dmt-voc-106-1lr.sh).
#   ./segmentation/dmt-voc-106.sh [SPLIT_ID, default 1]
# Two COCO-initialised models: baselines l on 106-l (80 images, seed 1) and r on 106-r (80, seed 2);
# in the phases both train on the whole 106 set, r (seed 1) on l's labels, l (seed 2) on r's.
# Every variable below can be overridden from the environment (see segmentation/dmt_lib.sh).
SID=${1:-1}
TRAIN_SET=${TRAIN_SET:-106}
BASE_EPOCHS=${BASE_EPOCHS:-300}   # 300 ep x 10 it = 3,000 iterations
BASE_LR=${BASE_LR:-0.002}
BASE_VAL=${BASE_VAL:-100}
BASE_BATCH=${BASE_BATCH:-8}
PHASE_EPOCHS=${PHASE_EPOCHS:-4}   # 4 ep x 1,498 it = 5,992 iterations
PHASE_LR=${PHASE_LR:-0.001}
PHASE_VAL=${PHASE_VAL:-500}
GAMMA1=${GAMMA1:-5}
GAMMA2=${GAMMA2:-5}
BATCH_LABELED=${BATCH_LABELED:-1}
BATCH_PSEUDO=${BATCH_PSEUDO:-7}
LABEL_BATCH=${LABEL_BATCH:-8}
source "$(dirname "$0")/dmt_lib.sh"
seg_setup voc

ensure_dms "$TRAIN_SET"
declare_model l 1 coco
declare_model r 2 coco
baseline "$(run_name 0 l)" l "$TRAIN_SET-l"
baseline "$(run_name 0 r)" r "$TRAIN_SET-r"
MODEL_SEED[l]=2; MODEL_SEED[r]=1   # the seeds swap between baselines and phases (docs/method.md §11.22)
mutual_phases l r "$TRAIN_SET"
