#!/usr/bin/env bash
# Sets up what it needs (.venv from requirements.txt, reused when up to date) and runs the whole
# test suite, experiment scripts end to end at tiny scale included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source utils/ensure_env.sh
exec python -m pytest "$@"
