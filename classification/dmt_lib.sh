# Shared by the classification experiment scripts (classification/*.sh); sourced, not run.
#
# The calling script sets its hyper-parameters (plain variables at its top), sources this file and
# calls cls_experiment. Environment overrides every script honours (besides those variables):
#   DATA_ROOT    folder holding cifar-10-batches-py/ and the split files (default datasets/cifar10;
#                missing splits are made with classification.generate_splits)
#   OUT          output folder (default runs/<experiment>-<seed>): checkpoints, log.txt, tb/, pseudo/
#   DEVICE       auto | cpu | cuda              NGPUS    processes (torchrun when > 1; batches are global)
#   WORKERS      DataLoader workers (default 8: RandAugment on 512 images per step is CPU work)
#   BACKBONE     wrn-28-2 (default, the paper's) | wrn-28-8
#   AMP          1: --mixed-precision (fp16 autocast + GradScaler, the original's numerics; add
#                EXTRA_ARGS="--amp-dtype bf16" for bf16), 0: fp32. Default: 1 on CUDA, 0 on CPU
#   RATIOS       the phases' label ratios (default "0.2 0.4 0.6 0.8 1.0")
#   PHASE_SEEDS  the phases' seeds (default "6 7 8 9 10": hard-coded in the original, docs/method.md §11.22)
#   CL_OUT       (dmt scripts) output folder of the CL run whose phase-0 model is reused
#                (default runs/<cl experiment>-<seed>)
#   EXTRA_ARGS   appended to every python call
# EMA_DECAY: the original's "EMA" (decay 0.999) applied shadow <- 0.001*shadow + 0.999*weights
# (docs/method.md §11.3), i.e. almost the last iterate, and that model labels the next phase and gives the
# reported test accuracy. Our EMA is the correct formula, so the scripts' EMA_DECAY=0.001
# reproduces the original; EMA_DECAY=0.999 gives a real moving average (changes the numbers).
# Rerunning a killed script continues: finished runs are skipped, an interrupted run resumes.
#
# Run names (utils/report.py parses them): <experiment>-<seed>__p<k> (training runs) and
# <experiment>-<seed>__p<k>--test (phase k's EMA tested on the test set; its log.txt value is the
# test accuracy), e.g. dmt-c10-4000-1__p3--test.

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../utils/launch.sh"


# cls_setup SEED: common settings; call after the script's own variables.
cls_setup() {
    SEED="$1"
    case "$SEED" in
        '' | *[!0-9]*) echo "error: seed '$SEED': pass a positive integer (1-5: the splits of docs/method.md §5.5)" >&2; exit 2 ;;
    esac
    EXPERIMENT="$(basename "$0" .sh)"
    EXP="$EXPERIMENT-$SEED"
    SPLIT="${LABELS_PER_CLASS}_seed${SEED}"
    DATA_ROOT="$(realpath -m "${DATA_ROOT:-$REPO_ROOT/datasets/cifar10}")"
    OUT="$(realpath -m "${OUT:-$REPO_ROOT/runs/$EXP}")"
    DEVICE="${DEVICE:-auto}"
    WORKERS="${WORKERS:-8}"
    BACKBONE="${BACKBONE:-wrn-28-2}"
    AMP="${AMP:-$(amp_default "$DEVICE")}"
    RATIOS="${RATIOS:-0.2 0.4 0.6 0.8 1.0}"
    PHASE_SEEDS="${PHASE_SEEDS:-6 7 8 9 10}"
    EXTRA_ARGS="${EXTRA_ARGS:-}"
    COMMON_ARGS=(--data-root "$DATA_ROOT" --out-dir "$OUT" --device "$DEVICE" --workers "$WORKERS" --backbone "$BACKBONE")
    AMP_ARGS=()
    if [ "$AMP" = 1 ]; then AMP_ARGS=(--mixed-precision); fi
    mkdir -p "$OUT"
    echo "== $EXP: $((LABELS_PER_CLASS * 10)) labels ($SPLIT), outputs in $OUT"
}

run_name() { printf '%s__p%s\n' "$EXP" "$1"; }   # run_name PHASE

fs_main() { run_py classification.main_fs "${COMMON_ARGS[@]}" "$@" $EXTRA_ARGS; }
dmt_main() { run_py classification.main_dmt "${COMMON_ARGS[@]}" "$@" $EXTRA_ARGS; }

# ensure_splits: the split files of docs/method.md §5.5 (all sizes and seeds) if this script's are missing.
ensure_splits() {
    if [ ! -f "$DATA_ROOT/cifar-10-batches-py/${SPLIT}_labeled" ]; then
        echo "== $SPLIT split not found in $DATA_ROOT: making the CIFAR-10 splits"
        run_py classification.generate_splits --root "$DATA_ROOT"
    fi
}

# baseline: phase 0, the supervised mixup baseline on ${SPLIT}_labeled, validated on the test set.
# Uses BASE_EPOCHS BASE_BATCH BASE_LR BASE_VAL BASE_ALPHA WEIGHT_DECAY EMA_DECAY.
baseline() {
    fs_main --exp-name "$(run_name 0)" --train-set "${SPLIT}_labeled" --seed "$SEED" --ra --n 1 --m 10 \
        --alpha "$BASE_ALPHA" --batch-size "$BASE_BATCH" --epochs "$BASE_EPOCHS" --lr "$BASE_LR" \
        --weight-decay "$WEIGHT_DECAY" --val-num-steps "$BASE_VAL" --ema-decay "$EMA_DECAY" "${AMP_ARGS[@]}"
}

# adopt_baseline CL_EXPERIMENT: phase 0 of a DMT script is the CL script's phase-0 model when that
# run has finished (as the original's ss-dmt-full-1.sh, docs/method.md §1.2); its EMA is copied to this
# experiment's phase-0 name (and $OUT/<p0 run>.adopted names the source). Otherwise, or when phase 0
# was already trained here, phase 0 is trained (or skipped as finished) here.
adopt_baseline() {
    local cl_exp="$1-$SEED"
    local cl_out="${CL_OUT:-$REPO_ROOT/runs/$cl_exp}"
    local src="$cl_out/${cl_exp}__p0--ema.pt" dst="$OUT/$(run_name 0)--ema.pt" marker="$OUT/$(run_name 0).adopted"
    if [ ! -f "$marker" ] && ! run_done "$OUT" "$(run_name 0)" \
       && run_done "$cl_out" "${cl_exp}__p0" && [ -f "$src" ]; then
        echo "== reusing the phase-0 model of $cl_exp: $src"
        cp "$src" "$dst.tmp.$$" && mv "$dst.tmp.$$" "$dst"
        printf '%s\n' "$src" > "$marker"
    fi
    if [ ! -f "$marker" ]; then
        echo "== phase 0 is $(run_name 0) (no finished $cl_exp phase 0 reused from $cl_out)"
        baseline
    fi
}

# label PREV_RUN RATIO: the curriculum labelling of ${SPLIT}_unlabeled with PREV_RUN's EMA into
# $OUT/pseudo/${SPLIT}_pseudo (test transform, fp32, batch LABEL_BATCH; docs/method.md §2.2).
label() {
    dmt_main --labeling --train-set "$SPLIT" --label-ratio "$2" --continue-from "$OUT/$1--ema.pt" \
        --pseudo-dir "$OUT/pseudo" --batch-size-labeled "$LABEL_BATCH"
}

# phase_train NAME SEED: a freshly initialised network on [pseudo; labelled] batches (docs/method.md §3.3).
# Uses PHASE_EPOCHS PHASE_LR PHASE_VAL PHASE_ALPHA BATCH_LABELED BATCH_PSEUDO GAMMA1 GAMMA2
# LABELED_WEIGHT WEIGHT_DECAY EMA_DECAY.
phase_train() {
    dmt_main --exp-name "$1" --train-set "$SPLIT" --pseudo-dir "$OUT/pseudo" --seed "$2" \
        --gamma1 "$GAMMA1" --gamma2 "$GAMMA2" --labeled-weight "$LABELED_WEIGHT" --alpha "$PHASE_ALPHA" \
        --lr "$PHASE_LR" --epochs "$PHASE_EPOCHS" --weight-decay "$WEIGHT_DECAY" \
        --batch-size-labeled "$BATCH_LABELED" --batch-size-pseudo "$BATCH_PSEUDO" --n 1 --m 10 \
        --valtiny --fine-grain --val-num-steps "$PHASE_VAL" --ema-decay "$EMA_DECAY" "${AMP_ARGS[@]}"
}

# curriculum_phases: phase k = 1, 2, ... with ratio r_k from RATIOS and seed s_k from PHASE_SEEDS:
# label with p{k-1}'s EMA, train p{k} from scratch (docs/method.md §1.2). A finished phase is not relabelled.
curriculum_phases() {
    local ratios=($RATIOS) seeds=($PHASE_SEEDS) k prev next
    if [ "${#seeds[@]}" -lt "${#ratios[@]}" ]; then
        echo "error: PHASE_SEEDS '$PHASE_SEEDS' has fewer seeds than RATIOS '$RATIOS' has phases; give one seed per phase" >&2
        exit 2
    fi
    for ((k = 1; k <= ${#ratios[@]}; k++)); do
        prev="$(run_name $((k - 1)))"
        next="$(run_name "$k")"
        if ! run_done "$OUT" "$next"; then  # one pseudo file for all phases: a finished phase is not relabelled
            label "$prev" "${ratios[k - 1]}"
        fi
        phase_train "$next" "${seeds[k - 1]}"
    done
}

# test_phases: every phase's EMA (p0 ... p<last>) on the test set, as <run>--test (docs/method.md §7.3).
test_phases() {
    local ratios=($RATIOS) k
    for ((k = 0; k <= ${#ratios[@]}; k++)); do
        fs_main --state 2 --exp-name "$(run_name "$k")--test" --continue-from "$OUT/$(run_name "$k")--ema.pt"
    done
}

# cls_experiment [CL_EXPERIMENT]: the whole experiment. With CL_EXPERIMENT (the DMT scripts), phase 0
# is that CL run's when it has finished (adopt_baseline), else it is trained here.
cls_experiment() {
    ensure_splits
    if [ -n "${1:-}" ]; then adopt_baseline "$1"; else baseline; fi
    curriculum_phases
    test_phases
    echo "== $EXP: done; one line per run in $OUT/log.txt"
}
