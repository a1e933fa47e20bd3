# Shared by the segmentation experiment scripts (segmentation/*.sh); sourced, not run.
#
# The calling script sets its hyper-parameters (plain variables at its top), sources this file and
# then calls the functions below. Environment overrides every script honours:
#   DATA_ROOT   dataset folder (VOC: .../VOCdevkit/VOC2012, City: the Cityscapes folder)
#   OUT         output folder (default runs/<experiment>-<split id>): snapshots, log.txt, tb/, pseudo/
#   DEVICE      auto | cpu | cuda              NGPUS      processes (torchrun when > 1)
#   BACKBONE    resnet101 | resnet50 | mobilenet_v3_large
#   PRETRAINED  imagenet | none | PATH (backbone init of the ImageNet-initialised models)
#   COCO_INIT   converted COCO checkpoint (segmentation/convert_coco.py) for the c/l/r models;
#               empty: they start from the PRETRAINED backbone (a warning says the numbers won't match)
#   CROP "H W", TEST_SIZE "H W", WORKERS
#   AMP         1: --mixed-precision (fp16 autocast + GradScaler, the original's numerics; add
#               EXTRA_ARGS="--amp-dtype bf16" for bf16), 0: fp32. Default: 1 on CUDA, 0 on CPU
#   RATIOS      the phases' label ratios (default "0.2 0.4 0.6 0.8 1.0")
#   PARALLEL_MODELS  1: run the two models' halves of each mutual phase at the same time (their
#               labels live in separate folders); the default 0 runs them one after the other
#   EXTRA_ARGS  appended to every python call
# Rerunning a killed script continues: segmentation.main skips finished runs and complete
# labelling passes.
#
# Run names (utils/report.py parses them): <experiment>-<sid>__p<k>--<model>, e.g. dmt-voc-20-1__p3--c.
# Pseudo labels: $OUT/pseudo/<labeller run>-for-<target run>, one folder per labelling pass.

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../utils/launch.sh"


abs_path() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

# seg_setup DATASET: common settings; call after the script's own variables.
seg_setup() {
    DATASET="$1"
    EXPERIMENT="$(basename "$0" .sh)"
    EXP="$EXPERIMENT-$SID"
    local default_root
    if [ "$DATASET" = voc ]; then default_root="$REPO_ROOT/datasets/VOCdevkit/VOC2012"; else default_root="$REPO_ROOT/datasets/cityscapes"; fi
    DATA_ROOT="$(abs_path "${DATA_ROOT:-$default_root}")"
    OUT="$(abs_path "${OUT:-$REPO_ROOT/runs/$EXP}")"
    DEVICE="${DEVICE:-auto}"
    BACKBONE="${BACKBONE:-resnet101}"
    PRETRAINED="${PRETRAINED:-imagenet}"
    COCO_INIT="${COCO_INIT:-}"
    [ -n "$COCO_INIT" ] && COCO_INIT="$(abs_path "$COCO_INIT")"
    if [ "$DATASET" = voc ]; then WORKERS="${WORKERS:-4}"; else WORKERS="${WORKERS:-8}"; fi
    AMP="${AMP:-$(amp_default "$DEVICE")}"
    RATIOS="${RATIOS:-0.2 0.4 0.6 0.8 1.0}"
    EXTRA_ARGS="${EXTRA_ARGS:-}"
    COMMON_ARGS=(--dataset "$DATASET" --data-root "$DATA_ROOT" --out-dir "$OUT" --device "$DEVICE"
                 --workers "$WORKERS" --backbone "$BACKBONE" --pretrained "$PRETRAINED")
    [ -n "${CROP:-}" ] && COMMON_ARGS+=(--crop-size $CROP)
    [ -n "${TEST_SIZE:-}" ] && COMMON_ARGS+=(--test-size $TEST_SIZE)
    AMP_ARGS=()
    [ "$AMP" = 1 ] && AMP_ARGS=(--mixed-precision)
    declare -gA MODEL_SEED=() MODEL_FLAGS=() MODEL_INIT=()
    mkdir -p "$OUT"
    echo "== $EXP: outputs in $OUT"
}

# declare_model NAME SEED coco|imagenet: a model's seed and initialisation (docs/method.md §1.1, §4.2).
declare_model() {
    MODEL_SEED[$1]="$2"
    if [ "$3" = coco ]; then
        MODEL_FLAGS[$1]="--coco"
        MODEL_INIT[$1]="$COCO_INIT"
        if [ -z "$COCO_INIT" ]; then
            echo "warning: COCO_INIT is empty: model $1 starts from the '$PRETRAINED' backbone with the COCO input" \
                 "convention, not from the COCO DeepLab-v2 weights; the numbers won't match the paper" >&2
        fi
    else
        MODEL_FLAGS[$1]=""
        MODEL_INIT[$1]=""
    fi
}

run_name() { printf '%s__p%s--%s\n' "$EXP" "$1" "$2"; }   # run_name PHASE MODEL

seg_main() { run_py segmentation.main "${COMMON_ARGS[@]}" "$@" $EXTRA_ARGS; }

# baseline NAME MODEL TRAIN_SET [SEED]: supervised training (--state 2) from the model's init.
# Uses BASE_EPOCHS BASE_LR BASE_VAL BASE_BATCH.
baseline() {
    local name="$1" model="$2" train_set="$3" seed="${4:-${MODEL_SEED[$2]}}"
    local init=()
    [ -n "${MODEL_INIT[$model]}" ] && init=(--continue-from "${MODEL_INIT[$model]}")
    seg_main --state 2 --exp-name "$name" --train-set "$train_set" --sets-id "$SID" --seed "$seed" \
        --epochs "$BASE_EPOCHS" --lr "$BASE_LR" --val-num-steps "$BASE_VAL" --batch-size-labeled "$BASE_BATCH" \
        ${MODEL_FLAGS[$model]} "${init[@]}" "${AMP_ARGS[@]}"
}

# label LABELLER_RUN LABELLER_MODEL TARGET_RUN RATIO TRAIN_SET: CBC labelling of the whole unlabelled
# list with $OUT/LABELLER_RUN.pt (its own input convention) into $OUT/pseudo/LABELLER_RUN-for-TARGET_RUN.
# Uses LABEL_BATCH and LABEL_AMP (default AMP).
label() {
    local labeller="$1" model="$2" target="$3" ratio="$4" train_set="$5"
    local amp=()
    [ "${LABEL_AMP:-$AMP}" = 1 ] && amp=(--mixed-precision)
    seg_main --state 1 --labeling --exp-name "$labeller-for-$target" --continue-from "$OUT/$labeller.pt" \
        --pseudo-dir "$OUT/pseudo/$labeller-for-$target" --label-ratio "$ratio" --train-set "$train_set" \
        --sets-id "$SID" --batch-size-labeled "$LABEL_BATCH" ${MODEL_FLAGS[$model]} "${amp[@]}"
}

# phase_train NAME MODEL FROM_RUN PSEUDO_FROM TRAIN_SET: one phase's DMT training (--state 1) of MODEL
# starting from $OUT/FROM_RUN.pt, on the labels of $OUT/pseudo/PSEUDO_FROM-for-NAME.
# Uses PHASE_EPOCHS PHASE_LR PHASE_VAL GAMMA1 GAMMA2 BATCH_LABELED BATCH_PSEUDO LOSS.
phase_train() {
    local name="$1" model="$2" from="$3" labeller="$4" train_set="$5"
    seg_main --state 1 --exp-name "$name" --continue-from "$OUT/$from.pt" --pseudo-dir "$OUT/pseudo/$labeller-for-$name" \
        --train-set "$train_set" --sets-id "$SID" --seed "${MODEL_SEED[$model]}" --loss "${LOSS:-dmt}" \
        --epochs "$PHASE_EPOCHS" --lr "$PHASE_LR" --val-num-steps "$PHASE_VAL" --gamma1 "$GAMMA1" --gamma2 "$GAMMA2" \
        --batch-size-labeled "$BATCH_LABELED" --batch-size-pseudo "$BATCH_PSEUDO" ${MODEL_FLAGS[$model]} "${AMP_ARGS[@]}"
}

# mutual_phases A B TRAIN_SET: dynamic mutual training (docs/method.md §1.1; the l/r loop of §1.3 and the
# naive/flip ablations of §1.4). For phase k = 1, 2, ... with ratio r_k from RATIOS:
#   label with p{k-1}--B, train A from p{k-1}--A; label with p{k-1}--A, train B from p{k-1}--B.
# Each model learns from the other's previous-phase snapshot; $OUT/<EXP>__p0--{A,B}.pt must exist.
mutual_phases() {
    local a="$1" b="$2" train_set="$3" k=0 ratio
    for ratio in $RATIOS; do
        k=$((k + 1))
        local prev_a prev_b next_a next_b
        prev_a="$(run_name $((k - 1)) "$a")"; prev_b="$(run_name $((k - 1)) "$b")"
        next_a="$(run_name "$k" "$a")"; next_b="$(run_name "$k" "$b")"
        if [ "${PARALLEL_MODELS:-0}" = 1 ]; then
            # A's and B's halves of a phase only read phase k-1 snapshots and write their own label
            # folders, so they can run at the same time (two processes; one core each on a CPU).
            in_parallel "label $prev_b $b $next_a $ratio $train_set && phase_train $next_a $a $prev_a $prev_b $train_set" \
                        "label $prev_a $a $next_b $ratio $train_set && phase_train $next_b $b $prev_b $prev_a $train_set"
        else
            label "$prev_b" "$b" "$next_a" "$ratio" "$train_set"
            phase_train "$next_a" "$a" "$prev_a" "$prev_b" "$train_set"
            label "$prev_a" "$a" "$next_b" "$ratio" "$train_set"
            phase_train "$next_b" "$b" "$prev_b" "$prev_a" "$train_set"
        fi
    done
}

# in_parallel "COMMANDS" ...: run each command line in a background subshell, wait for all, and
# fail (exit 2) if any failed. Arguments are word-split: run names and paths must have no spaces.
in_parallel() {
    local pids=() cmd pid failed=0
    for cmd in "$@"; do
        ( eval "$cmd" ) &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    if [ "$failed" = 1 ]; then
        echo "error: a parallel step failed (see its error above); rerun the script to continue" >&2
        exit 2
    fi
}

# self_training_phases M TRAIN_SET: the CBST/DST ablations (docs/method.md §1.4): M labels for itself,
# phase k trains M from p{k-1}--M on p{k-1}--M's labels at ratio r_k.
self_training_phases() {
    local m="$1" train_set="$2" k=0 ratio
    for ratio in $RATIOS; do
        k=$((k + 1))
        local prev next
        prev="$(run_name $((k - 1)) "$m")"; next="$(run_name "$k" "$m")"
        label "$prev" "$m" "$next" "$ratio" "$train_set"
        phase_train "$next" "$m" "$prev" "$prev" "$train_set"
    done
}

# ensure_dms: the DMS left/right subsets {f}-l/{f}-r (docs/method.md §1.3, §5.4), written once for every
# default factor so that the random stream matches the original's.
ensure_dms() {
    local sets="$DATA_ROOT/ImageSets/Segmentation"
    if [ ! -f "$sets/$1-l_labeled_$SID.txt" ]; then
        run_py segmentation.dms_sample --sets-dir "$sets"
    fi
}

# ensure_sbd_split: train_labeled_0 (VOC train) / train_unlabeled_0 (the SBD rest), docs/method.md §5.3.
ensure_sbd_split() {
    if [ ! -f "$DATA_ROOT/ImageSets/Segmentation/train_labeled_0.txt" ]; then
        run_py segmentation.sbd_split --voc-root "$DATA_ROOT"
    fi
}

# adopt_baseline FROM_OUT FROM_RUN MODEL: start an ablation from abl-baseline's snapshot, copied to
# this experiment's phase-0 name (as abl_baseline.sh did, docs/method.md §1.4).
adopt_baseline() {
    local src="$1/$2.pt" dst="$OUT/$(run_name 0 "$3").pt"
    if [ ! -f "$dst" ]; then
        if [ ! -f "$src" ]; then
            echo "error: $src: baseline snapshot not found; run segmentation/abl-baseline.sh $SID first" \
                 "(or set BASELINE_OUT)" >&2
            exit 2
        fi
        cp "$src" "$dst.tmp.$$" && mv "$dst.tmp.$$" "$dst"
    fi
}

# dmt_ci TRAIN_SET: the DMT experiment of docs/method.md §1.1 — baselines c (COCO init, seed 1) and
# i (ImageNet init, seed 2) on TRAIN_SET, then the mutual phases (i labels for c, c for i).
dmt_ci() {
    declare_model c 1 coco
    declare_model i 2 imagenet
    baseline "$(run_name 0 c)" c "$1"
    baseline "$(run_name 0 i)" i "$1"
    mutual_phases c i "$1"
}

# ablation_setup: where abl-baseline.sh put its snapshots (BASELINE_OUT, default runs/abl-baseline-<sid>).
ablation_setup() {
    BASELINE_OUT="$(abs_path "${BASELINE_OUT:-$REPO_ROOT/runs/abl-baseline-$SID}")"
}

# ablation_mutual TRAIN_SET: the l/r mutual loop of the naive/flip ablations (docs/method.md §1.4), from
# abl-baseline's l and r, with the phase seeds of docs/method.md §1.3 (r 1, l 2).
ablation_mutual() {
    ablation_setup
    declare_model l 2 coco
    declare_model r 1 coco
    adopt_baseline "$BASELINE_OUT" "abl-baseline-${SID}__p0--l" l
    adopt_baseline "$BASELINE_OUT" "abl-baseline-${SID}__p0--r" r
    mutual_phases l r "$1"
}

# ablation_self_training TRAIN_SET: the CBST/DST self-training loop from abl-baseline's c (docs/method.md §1.4).
ablation_self_training() {
    ablation_setup
    declare_model c 1 coco
    adopt_baseline "$BASELINE_OUT" "abl-baseline-${SID}__p0--c" c
    self_training_phases c "$1"
}
