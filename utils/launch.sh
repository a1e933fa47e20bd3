# Sourced by every experiment script (segmentation/*.sh, classification/*.sh).
#
#   NGPUS=4 ./segmentation/dmt-voc-20.sh 1     # 4 processes through torchrun (DDP)
#   PYTHON=/path/to/python ./...               # which interpreter (default: .venv's if present)
#   NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 MASTER_PORT=29500 NGPUS=8 ./...   # on each of 2 nodes
#
# run_py MODULE ARGS... runs `python -m MODULE ARGS...` from the repository root, through
# torchrun (`python -m utils.torchrun --standalone --nproc_per_node=$NGPUS -- MODULE ARGS...`) when
# NGPUS > 1: the program's arguments go to the program untouched, a failure ends with the failed
# process's one error line (shown once) and exit status, without torchrun's traceback. Batch flags
# stay global batches, split over the processes. Every program skips a run whose outputs are
# already complete, so re-running a killed script continues where it stopped.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
NGPUS="${NGPUS:-1}"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"

run_py() {
    local module="$1"; shift
    if multinode_enabled; then run_py_multinode "$module" "$@"; return; fi   # several nodes: below
    if [ "$NGPUS" -gt 1 ]; then
        (cd "$REPO_ROOT" && "$PYTHON" -m utils.torchrun --standalone --nproc_per_node="$NGPUS" -- "$module" "$@")
    else
        (cd "$REPO_ROOT" && "$PYTHON" -m "$module" "$@")
    fi
}

# ------------------------------------------------------------------------------ several nodes
# torchrun across nodes, c10d rendezvous. run_py uses it when NNODES > 1, or when the script runs
# under `srun` (a SLURM job step) on more than one node:
#   NNODES      nodes (under srun: SLURM_NNODES)          NGPUS  processes per node (default 1)
#   NODE_RANK   this node's index (under srun: SLURM_NODEID; passed as --node-rank; the c10d
#               rendezvous may order the nodes differently, which changes nothing in the results)
#   RDZV_ENDPOINT host:port of the rendezvous, or MASTER_ADDR (under srun: the first host of
#               SLURM_JOB_NODELIST, through `scontrol show hostnames` when available) and
#               MASTER_PORT (default 29500)
#   RDZV_ID     the job's rendezvous id (default SLURM_JOB_ID, else "dmt"); each run_py call adds
#               its own suffix, so that the k-th program of a script meets the k-th on every node
# Every node runs the same experiment script (same arguments, shared output folder); rank 0 writes.
MULTINODE_CALLS=0

# run_done OUT_DIR EXP: true when run EXP of OUT_DIR has finished — the programs' own "already
# done" record (utils/run_files.py), asked for where a script must decide before calling a program.
run_done() {
    (cd "$REPO_ROOT" && "$PYTHON" -m utils.run_files done "$1" "$2")
}

multinode_enabled() {
    if [ -n "${NNODES:-}" ]; then
        [ "$NNODES" -gt 1 ]
    else
        [ -n "${SLURM_STEP_ID:-${SLURM_STEPID:-}}" ] && [ "${SLURM_NNODES:-1}" -gt 1 ]
    fi
}

# multinode_args: the torchrun options for this node (prints one per line); exit 2 with one line
# when something is missing.
multinode_args() {
    local nnodes="${NNODES:-${SLURM_NNODES:-1}}" node_rank="${NODE_RANK:-${SLURM_NODEID:-}}"
    local endpoint="${RDZV_ENDPOINT:-}" addr="${MASTER_ADDR:-}"
    if [ -z "$node_rank" ]; then
        echo "error: NNODES=$nnodes: set NODE_RANK (0 .. $((nnodes - 1))) on each node, or run under srun" >&2
        return 2
    fi
    if [ -z "$endpoint" ]; then
        if [ -z "$addr" ] && [ -n "${SLURM_JOB_NODELIST:-}" ]; then
            if command -v scontrol > /dev/null 2>&1; then
                addr="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
            else
                # the first host of a list such as gpu[07-08,10],cpu1 -> gpu07
                addr="$(sed -E 's/^([^,[]*)(\[([^],-]+))?.*/\1\3/' <<< "$SLURM_JOB_NODELIST")"
            fi
        fi
        if [ -z "$addr" ]; then
            echo "error: NNODES=$nnodes: set MASTER_ADDR (the first node's address) or RDZV_ENDPOINT=host:port" >&2
            return 2
        fi
        endpoint="$addr:${MASTER_PORT:-29500}"
    fi
    printf '%s\n' --nnodes="$nnodes" --node-rank="$node_rank" --nproc-per-node="$NGPUS" \
        --rdzv-backend=c10d --rdzv-endpoint="$endpoint" --rdzv-id="$1" --max-restarts=0
}

run_py_multinode() {
    local module="$1"; shift
    MULTINODE_CALLS=$((MULTINODE_CALLS + 1))
    local id args
    id="${RDZV_ID:-${SLURM_JOB_ID:-dmt}}-$MULTINODE_CALLS-$(printf '%s\0' "$module" "$@" | cksum | cut -d' ' -f1)"
    args="$(multinode_args "$id")" || exit 2
    local opts=()
    mapfile -t opts <<< "$args"
    if [ -f "$REPO_ROOT/utils/torchrun.py" ]; then  # the project's torchrun: program flags untouched
        (cd "$REPO_ROOT" && "$PYTHON" -m utils.torchrun "${opts[@]}" -- "$module" "$@")
    else
        (cd "$REPO_ROOT" && "$PYTHON" -m torch.distributed.run "${opts[@]}" -m "$module" "$@")
    fi
}

# amp_default DEVICE (the scripts' AMP default): the AMP default follows the device: 1 on CUDA (the original's scripts trained
# with apex O1 mixed precision), 0 on CPU (one stderr line says so: half precision is emulated or
# slow on many CPUs; an fp16 training step measured 10-200x slower than fp32 on a CPU here).
# DEVICE=auto asks the interpreter whether CUDA is available (once per script, ~1 s).
amp_default() {
    local cuda=0
    case "$1" in
        cuda*) cuda=1 ;;
        cpu) cuda=0 ;;
        *) if "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then cuda=1; fi ;;
    esac
    if [ "$cuda" = 1 ]; then
        echo 1
    else
        echo "note: AMP=0 (fp32) on CPU, where half precision is emulated and slow; AMP=1 forces fp16 mixed precision" >&2
        echo 0
    fi
}
