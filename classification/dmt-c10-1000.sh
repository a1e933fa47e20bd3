#!/usr/bin/env bash
# DMT on CIFAR-10 with 1,000 labels (100 per class): ss-dmt-full-1.sh (docs/method.md §1.2, §7.2, §7.3) for any
# seed (its split 100_seed<SEED>). The original started from a 4,000-label CL baseline by mistake
# (cl_c10-400-1__p0--ema.pt, docs/method.md §11.5); here phase 0 is the 1,000-label one
# (BASELINE_FROM=cl-c10-4000 restores the original's choice).
#   ./classification/dmt-c10-1000.sh [SEED 1-5, default 1]
# Phase 0: the phase-0 model of cl-c10-1000.sh SEED when that run has finished (as the original),
# else the supervised mixup baseline trained here. Phases 1-5 (r = 0.2 ... 1.0): label with the
# previous phase's EMA, train a freshly initialised WRN-28-2 with the dynamic loss, γ1 = γ2 = 4 with
# the sigmoid ramp (seeds 6-10). At the end every phase's EMA is tested on the test set.
# Every variable below can be overridden from the environment (see classification/dmt_lib.sh).
LABELS_PER_CLASS=${LABELS_PER_CLASS:-100}
# Phase 0 (only when no finished CL phase 0 exists): as cl-c10-1000.sh, 2,120 epochs x 2 iterations
# = 4,240 iterations.
BASE_EPOCHS=${BASE_EPOCHS:-2120}
BASE_BATCH=${BASE_BATCH:-512}
BASE_LR=${BASE_LR:-0.2}
BASE_VAL=${BASE_VAL:-1000}
BASE_ALPHA=${BASE_ALPHA:-0.75}
# Phases: 750 epochs of the pseudo loader: 20/40/60/79/99 iterations per epoch at 1,000 labels.
PHASE_EPOCHS=${PHASE_EPOCHS:-750}
PHASE_LR=${PHASE_LR:-0.1}
PHASE_VAL=${PHASE_VAL:-1000}
PHASE_ALPHA=${PHASE_ALPHA:-0.75}
BATCH_LABELED=${BATCH_LABELED:-16}
BATCH_PSEUDO=${BATCH_PSEUDO:-496}
LABEL_BATCH=${LABEL_BATCH:-64}
GAMMA1=${GAMMA1:-4}
GAMMA2=${GAMMA2:-4}
LABELED_WEIGHT=${LABELED_WEIGHT:-1}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.0005}
EMA_DECAY=${EMA_DECAY:-0.001}   # reproduces the original's inverted "EMA 0.999" (≈ last iterate, see dmt_lib.sh)
# Whose finished phase 0 to reuse (output folder: CL_OUT, default runs/<BASELINE_FROM>-<SEED>).
BASELINE_FROM=${BASELINE_FROM:-cl-c10-1000}
source "$(dirname "$0")/dmt_lib.sh"
cls_setup "${1:-1}"

cls_experiment "$BASELINE_FROM"
