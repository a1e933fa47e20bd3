# Sourced by every experiment script (segmentation/*.sh, classification/*.sh).
#
#   NGPUS=4 ./segmentation/dmt-voc-20.sh 1     # 4 processes through torchrun (DDP)
#   PYTHON=/path/to/python ./...               # which interpreter (default: .venv's if present)
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
    if [ "$NGPUS" -gt 1 ]; then
        (cd "$REPO_ROOT" && "$PYTHON" -m utils.torchrun --standalone --nproc_per_node="$NGPUS" -- "$module" "$@")
    else
        (cd "$REPO_ROOT" && "$PYTHON" -m "$module" "$@")
    fi
}
