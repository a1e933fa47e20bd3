#!/usr/bin/env bash
# DMT on the SBD images, docs/method.md §1.1 and §7.3 (dmt-voc-sbd-0.sh): the 1,464 VOC 2012 train images
# labelled, the 9,118 other trainaug (SBD) images unlabelled.
#   ./segmentation/dmt-voc-sbd.sh [SPLIT_ID, default 0]
# The oracle (all 10,582 labels, seed 0; COCO init assumed), baselines c (seed 1) and i (seed 2) on
# the 1,464, then 5 phases of mutual training.
# Every variable below can be overridden from the environment (see segmentation/dmt_lib.sh).
SID=${1:-0}
TRAIN_SET=${TRAIN_SET:-train}
ORACLE_EPOCHS=${ORACLE_EPOCHS:-30}  # 30 ep x 1,323 it = 39,690 iterations
ORACLE_VAL=${ORACLE_VAL:-500}
ORACLE_SEED=${ORACLE_SEED:-0}
BASE_EPOCHS=${BASE_EPOCHS:-85}     # 85 ep x 183 it = 15,555 iterations
BASE_LR=${BASE_LR:-0.002}
BASE_VAL=${BASE_VAL:-350}
BASE_BATCH=${BASE_BATCH:-8}
PHASE_EPOCHS=${PHASE_EPOCHS:-5}    # 5 ep x 1,303 it = 6,515 iterations
PHASE_LR=${PHASE_LR:-0.001}
PHASE_VAL=${PHASE_VAL:-500}        # not in the table: the VOC default
GAMMA1=${GAMMA1:-5}
GAMMA2=${GAMMA2:-5}
BATCH_LABELED=${BATCH_LABELED:-1}
BATCH_PSEUDO=${BATCH_PSEUDO:-7}
LABEL_BATCH=${LABEL_BATCH:-8}
source "$(dirname "$0")/dmt_lib.sh"
seg_setup voc

ensure_sbd_split
declare_model oracle "$ORACLE_SEED" coco
BASE_EPOCHS=$ORACLE_EPOCHS BASE_VAL=$ORACLE_VAL baseline "${EXP}__oracle" oracle 1
dmt_ci "$TRAIN_SET"
