# Sourced by ./test.sh and ./demo.sh: makes sure .venv exists with requirements.txt installed,
# then puts it first on PATH. Reuses an existing .venv when its recorded requirements match.
# Needs only a Python >= 3.10 on the machine (PYTHON=... to choose one).
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_py="${PYTHON:-python3}"
_venv="$_root/.venv"
_stamp="$_venv/.requirements.sha256"
_want="$(sha256sum "$_root/requirements.txt" | cut -d' ' -f1)"

if ! "$_py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    echo "error: $_py is missing or older than Python 3.10; install Python >= 3.10 or set PYTHON=/path/to/python3" >&2
    exit 2
fi
if [ -x "$_venv/bin/python" ] && [ -f "$_stamp" ] && [ "$(cat "$_stamp")" = "$_want" ] \
   && "$_venv/bin/python" -c 'import torch, torchvision, tensorboard, pytest' 2>/dev/null; then
    :  # reuse
else
    echo "setting up $_venv (first run only; torch is large, this takes a few minutes)" >&2
    [ -x "$_venv/bin/python" ] || "$_py" -m venv "$_venv"
    "$_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$_root/requirements.txt"
    echo "$_want" > "$_stamp"
fi
export PATH="$_venv/bin:$PATH"
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
