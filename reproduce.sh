#!/usr/bin/env bash
# A whole paper table with one command: every experiment script the table needs, with its split ids
# (segmentation) or seeds (CIFAR-10), one experiment per slot (GPU) at a time, dependencies first,
# then `python -m utils.report` on the table's runs. The plan comes from utils/reproduce.py.
#
#   ./reproduce.sh TABLE [--gpus 0,1,2,3 | --slots N] [--splits ID ...] [--out DIR] [--dry-run]
#                  [--bench FILE] [--slurm]
#
# See `./reproduce.sh --help` and README.md ("Reproduce the paper").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$ROOT/utils/launch.sh"   # PYTHON, PYTHONPATH (run_py is not used here)

usage() {
    cat <<EOF
usage: ./reproduce.sh TABLE [--gpus LIST | --slots N] [--splits ID ...] [--out DIR]
                      [--dry-run] [--bench FILE] [--slurm]

Runs every experiment script of a paper table (docs/method.md §10), one experiment per slot at a
time, each after its dependencies (abl-baseline before the ablations, the CL run before the DMT run
of the same CIFAR seed), then writes DIR/report-TABLE.md: one row per experiment and split id /
seed, and the tables of python -m utils.report. Killed and rerun, it continues: every script skips
its finished runs and resumes an interrupted one.

TABLE:
$("$PYTHON" -m utils.reproduce tables)

options:
  --gpus LIST     slots, comma-separated: a GPU index (CUDA_VISIBLE_DEVICES=i), 'cpu' (DEVICE=cpu, no
                  GPU visible), or GPUs joined by '+' for one experiment on several GPUs through
                  torchrun (e.g. 0+1,2+3: NGPUS=2 each). Default: every GPU nvidia-smi lists, else cpu
  --slots N       N parallel slots on the CPU (same as --gpus cpu,cpu,... N times), e.g. for tests
  --splits ID...  split ids (seeds for CIFAR-10) instead of the table's (segmentation 0 1 2, the
                  ablations 2, SBD 0, CIFAR-10 1-5)
  --out DIR       where the runs go (DIR/<experiment>-<id>), their logs (DIR/logs/) and the report
                  (default runs/, the scripts' own default)
  --dry-run       print the plan (commands in order, slot, dependencies, GPU-hours) and run nothing
  --bench FILE    with --dry-run: GPU-hours from the rates measured by
                  python -m bench.segmentation --json FILE (else projected from the paper's 8 h per
                  VOC 1/20 run, docs/method.md §10)
  --slurm         submit the table to SLURM instead: one job array per experiment script
                  (scripts/slurm/experiment.sbatch, array index = split id / seed), dependencies as
                  --dependency=afterok, then a report job; DIR must be on a shared filesystem.
                  SBATCH_ARGS="..." adds sbatch options (partition, account, time ...)

Every environment override of the scripts applies to all of them (DATA_ROOT, COCO_INIT, BACKBONE,
AMP, RATIOS, ...); VOC_ROOT, CITY_ROOT and CIFAR_ROOT set DATA_ROOT per dataset (for 'all').
Each experiment's output goes to DIR/logs/<experiment>-<id>.log; a failed experiment is reported
with its log and the others still finish; the exit status is then 2.
EOF
}

die() { echo "error: $*" >&2; exit 2; }

TABLE="" SLOTS_SPEC="" SPLITS=() DRY_RUN=0 BENCH="" SLURM=0 RUNS="" REPORT_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --gpus) [ $# -ge 2 ] || die "--gpus: give a list, e.g. --gpus 0,1,2,3 or --gpus cpu,cpu"; SLOTS_SPEC="$2"; shift 2 ;;
        --slots)
            [ $# -ge 2 ] && [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "--slots: give a positive number of CPU slots, e.g. --slots 2"
            SLOTS_SPEC="$(printf 'cpu,%.0s' $(seq "$2"))"; SLOTS_SPEC="${SLOTS_SPEC%,}"; shift 2 ;;
        --splits)
            shift
            while [ $# -gt 0 ] && [[ "$1" != --* ]]; do
                [[ "$1" =~ ^[0-9]+$ ]] || die "--splits $1: give split ids / seeds as non-negative integers, e.g. --splits 0 1 2"
                SPLITS+=("$1"); shift
            done
            [ ${#SPLITS[@]} -gt 0 ] || die "--splits: give at least one split id / seed" ;;
        --dry-run) DRY_RUN=1; shift ;;
        --bench) [ $# -ge 2 ] || die "--bench: give the JSON file of python -m bench.segmentation --json FILE"; BENCH="$(realpath -m "$2")"; shift 2 ;;
        --slurm) SLURM=1; shift ;;
        --out) [ $# -ge 2 ] || die "--out: give a folder"; RUNS="$(realpath -m "$2")"; shift 2 ;;
        --report-only) REPORT_ONLY=1; shift ;;   # used by the SLURM report job
        -*) die "$1: unknown option; see ./reproduce.sh --help" ;;
        *) [ -z "$TABLE" ] || die "$1: one TABLE at a time (already '$TABLE'); see ./reproduce.sh --help"; TABLE="$1"; shift ;;
    esac
done
[ -n "$TABLE" ] || die "give a TABLE (voc, city, sbd, ablations, cifar10, cifar10-1000, all); ./reproduce.sh --help lists them"
[ -z "$BENCH" ] || [ "$DRY_RUN" = 1 ] || die "--bench $BENCH: only with --dry-run (it projects GPU-hours)"
[ -z "$BENCH" ] || [ -f "$BENCH" ] || die "--bench $BENCH: no such file; write it with python -m bench.segmentation --json FILE"
RUNS="${RUNS:-$ROOT/runs}"
case "$RUNS" in *[[:space:]]*) die "--out $RUNS: the output folder must have no spaces in its path" ;; esac
cd "$ROOT"

if [ -z "$SLOTS_SPEC" ]; then
    n_gpus=0
    if command -v nvidia-smi > /dev/null 2>&1; then n_gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"; fi
    if [ "$n_gpus" -gt 0 ]; then SLOTS_SPEC="$(seq -s, 0 $((n_gpus - 1)))"; else SLOTS_SPEC=cpu; fi
fi
IFS=, read -r -a SLOTS <<< "$SLOTS_SPEC"
for s in "${SLOTS[@]}"; do
    [[ "$s" =~ ^(cpu|[0-9]+(\+[0-9]+)*)$ ]] || die "--gpus $SLOTS_SPEC: '$s' is not a GPU index, GPUs joined by '+', or 'cpu'"
done

PLAN_ARGS=("$TABLE" --runs "$RUNS")
[ ${#SPLITS[@]} -eq 0 ] || PLAN_ARGS+=(--splits "${SPLITS[@]}")

if [ "$DRY_RUN" = 1 ]; then
    exec "$PYTHON" -m utils.reproduce show "${PLAN_ARGS[@]}" --slots "$SLOTS_SPEC" ${BENCH:+--bench "$BENCH"}
fi
PLAN="$("$PYTHON" -m utils.reproduce plan "${PLAN_ARGS[@]}")" || exit 2

J_NAME=() J_DEPS=() J_SCRIPT=() J_ID=() J_LOG=() J_ENV=() J_STATE=()
while IFS=$'\t' read -r name deps script id log env; do
    J_NAME+=("$name"); deps="${deps#-}"; J_DEPS+=("${deps//,/ }"); J_SCRIPT+=("$script"); J_ID+=("$id"); J_LOG+=("$log")
    J_ENV+=("$env"); J_STATE+=(pending)
done <<< "$PLAN"
N=${#J_NAME[@]}
mkdir -p "$RUNS/logs"
STATUS="$RUNS/logs/status-$TABLE.tsv"

# ---------------------------------------------------------------------------------------- report
report() {
    local dirs=() i out tmp
    for ((i = 0; i < N; i++)); do
        out="${J_ENV[i]%% *}"; out="${out#OUT=}"
        [ -f "$out/log.txt" ] && dirs+=("$out")
    done
    tmp="$RUNS/.report-$TABLE.md.tmp.$$"
    local status=(--status "$STATUS")
    [ "$REPORT_ONLY" = 0 ] || status=()   # SLURM: no local status file; the logs tell
    "$PYTHON" -m utils.reproduce summary "${PLAN_ARGS[@]}" "${status[@]}" > "$tmp"
    if [ ${#dirs[@]} -gt 0 ]; then
        local extra=()
        if "$PYTHON" -m utils.report --help 2>/dev/null | grep -q -- '--plots'; then extra=(--plots "$RUNS/plots-$TABLE"); fi
        if ! "$PYTHON" -m utils.report "${dirs[@]}" --gpu-hours "${extra[@]}" >> "$tmp"; then
            echo "warning: python -m utils.report failed on ${dirs[*]} (its message is above)" >&2
        fi
    else
        echo "No run of '$TABLE' has written a log.txt line yet." >> "$tmp"
    fi
    mv "$tmp" "$RUNS/report-$TABLE.md"
    echo "== report: $RUNS/report-$TABLE.md"
}

if [ "$REPORT_ONLY" = 1 ]; then report; exit 0; fi

# ----------------------------------------------------------------------------------------- SLURM
if [ "$SLURM" = 1 ]; then
    command -v sbatch > /dev/null 2>&1 || die "--slurm: sbatch not found on PATH; run this on a SLURM login node"
    declare -A ARRAY_JOB=()
    exps=() all_jobs=()
    for ((i = 0; i < N; i++)); do
        exp="${J_NAME[i]%-*}"
        [[ " ${exps[*]} " == *" $exp "* ]] || exps+=("$exp")
    done
    for exp in "${exps[@]}"; do
        ids=() deps=() script=""
        for ((i = 0; i < N; i++)); do
            [ "${J_NAME[i]%-*}" = "$exp" ] || continue
            ids+=("${J_ID[i]}"); script="${J_SCRIPT[i]}"
            for d in ${J_DEPS[i]}; do
                [[ " ${deps[*]} " == *" ${ARRAY_JOB[${d%-*}]} "* ]] || deps+=("${ARRAY_JOB[${d%-*}]}")
            done
        done
        array="$(IFS=,; echo "${ids[*]}")"
        dep_args=()
        [ ${#deps[@]} -eq 0 ] || dep_args=("--dependency=afterok:$(IFS=:; echo "${deps[*]}")")
        # shellcheck disable=SC2086  # SBATCH_ARGS is a list of options
        reply="$(sbatch --parsable --job-name "$exp" --array "$array" --chdir "$ROOT" \
                 --output "$RUNS/logs/%x-%a.log" --export "ALL,DMT_REPO=$ROOT,RUNS_DIR=$RUNS" \
                 "${dep_args[@]}" ${SBATCH_ARGS:-} "$ROOT/scripts/slurm/experiment.sbatch" "$script")" \
            || die "sbatch failed for $exp (its message is above); nothing more submitted"
        ARRAY_JOB[$exp]="${reply%%;*}"
        all_jobs+=("${reply%%;*}")
        echo "submitted $exp --array $array as job ${reply%%;*}${deps:+ (after ${deps[*]})}"
    done
    report_cmd="$(printf '%q ' ./reproduce.sh "$TABLE" --report-only --out "$RUNS" ${SPLITS[@]+--splits "${SPLITS[@]}"})"
    # shellcheck disable=SC2086
    reply="$(sbatch --parsable --job-name "report-$TABLE" --chdir "$ROOT" --output "$RUNS/logs/%x.log" \
             --dependency="afterany:$(IFS=:; echo "${all_jobs[*]}")" ${SBATCH_ARGS:-} --wrap "$report_cmd")" \
        || die "sbatch failed for the report job (its message is above)"
    echo "submitted the report as job ${reply%%;*} (after all): $RUNS/report-$TABLE.md"
    exit 0
fi

# ------------------------------------------------------------------------------------- local run
exec 9> "$RUNS/.reproduce.lock"
flock -n 9 || die "$RUNS: another reproduce.sh, or experiments it started, still run on this folder; wait for them or stop them first"

set -m   # each experiment in its own process group, so that an interrupt stops it whole
declare -A PID_JOB=() PID_SLOT=()
SLOT_FREE=()
for ((s = 0; s < ${#SLOTS[@]}; s++)); do SLOT_FREE+=(1); done
: > "$STATUS"

stop_all() {
    local pid tries
    for pid in "${!PID_JOB[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    wait || true
    # the group leaders are gone; wait for the rest of each group (the programs they ran), 10 s at most
    for pid in "${!PID_JOB[@]}"; do
        for ((tries = 0; tries < 100; tries++)); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    echo "interrupted: rerun the same command to continue" >&2
    exit 130
}
trap stop_all INT TERM

state_of() {  # state_of NAME
    local i
    for ((i = 0; i < N; i++)); do [ "${J_NAME[i]}" = "$1" ] && { echo "${J_STATE[i]}"; return; }; done
    echo ok   # not in the plan: nothing to wait for
}

start_job() {  # start_job INDEX SLOT
    local i="$1" s="$2" slot="${SLOTS[$2]}"
    {
        echo "== $(date -u '+%F %T') UTC reproduce.sh: ${J_ENV[i]} bash ${J_SCRIPT[i]} ${J_ID[i]} (slot $s: $slot)"
    } >> "${J_LOG[i]}"
    (
        if [ "$slot" = cpu ]; then
            export CUDA_VISIBLE_DEVICES="" DEVICE=cpu
        else
            export CUDA_VISIBLE_DEVICES="${slot//+/,}"
            [[ "$slot" != *+* ]] || export NGPUS="$(tr '+' '\n' <<< "$slot" | wc -l)"
        fi
        # shellcheck disable=SC2086  # K=V words, paths without spaces
        export ${J_ENV[i]}
        exec bash "${J_SCRIPT[i]}" "${J_ID[i]}"
    ) >> "${J_LOG[i]}" 2>&1 < /dev/null &
    PID_JOB[$!]="$i"; PID_SLOT[$!]="$s"; SLOT_FREE[s]=0; J_STATE[i]=running
    echo "[$(date -u +%T)] start  ${J_NAME[i]} on slot $s ($([ "$slot" = cpu ] && echo CPU || echo "GPU ${slot//+/,}")); log ${J_LOG[i]}"
}

FAILED=()
while :; do
    for ((i = 0; i < N; i++)); do
        [ "${J_STATE[i]}" = pending ] || continue
        ready=1
        for d in ${J_DEPS[i]}; do
            case "$(state_of "$d")" in
                ok) ;;
                failed | skipped)
                    J_STATE[i]=skipped; ready=0
                    printf '%s\tskipped: needs %s, which did not finish\n' "${J_NAME[i]}" "$d" >> "$STATUS"
                    FAILED+=("${J_NAME[i]}: not run, it needs $d, which did not finish")
                    echo "[$(date -u +%T)] skip   ${J_NAME[i]}: it needs $d, which did not finish" >&2
                    break ;;
                *) ready=0 ;;
            esac
        done
        [ "$ready" = 1 ] || continue
        for ((s = 0; s < ${#SLOTS[@]}; s++)); do
            if [ "${SLOT_FREE[s]}" = 1 ]; then start_job "$i" "$s"; break; fi
        done
    done
    [ ${#PID_JOB[@]} -gt 0 ] || break
    if wait -n -p pid; then rc=0; else rc=$?; fi
    [ -n "${pid:-}" ] && [ -n "${PID_JOB[$pid]+x}" ] || continue
    i="${PID_JOB[$pid]}"; SLOT_FREE[${PID_SLOT[$pid]}]=1
    unset "PID_JOB[$pid]" "PID_SLOT[$pid]"
    if [ "$rc" = 0 ]; then
        J_STATE[i]=ok
        printf '%s\tok\n' "${J_NAME[i]}" >> "$STATUS"
        echo "[$(date -u +%T)] done   ${J_NAME[i]}"
    else
        J_STATE[i]=failed
        printf '%s\tfailed (exit %s)\n' "${J_NAME[i]}" "$rc" >> "$STATUS"
        FAILED+=("${J_NAME[i]}: failed (exit $rc), see ${J_LOG[i]}")
        echo "[$(date -u +%T)] FAILED ${J_NAME[i]} (exit $rc): see ${J_LOG[i]}" >&2
    fi
done
trap - INT TERM
set +m

report
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "error: ${#FAILED[@]} of $N experiment(s) of '$TABLE' did not finish:" >&2
    printf '  %s\n' "${FAILED[@]}" >&2
    echo "fix the cause (see the logs) and rerun the same command: finished runs are skipped" >&2
    exit 2
fi
echo "== all $N experiment(s) of '$TABLE' finished"
