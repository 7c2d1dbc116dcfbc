#!/bin/bash
# The whole test suite: sets the host up (tools/setup.sh), then runs every test: first the main
# run on two workers, then the `isolated` tests in a fresh process of their own (they hold
# process-global state). pytest's summary line ends the output. Extra arguments go to pytest
# (e.g. a path, -k, or `-m slow` for the all-in-one cloud test).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export PYTHONDONTWRITEBYTECODE=1
pytest() { .venv/bin/python -m pytest -p no:cacheprovider "$@"; }
status=0
pytest "$@" || status=$?
# exit code 5: nothing selected (e.g. arguments that name no isolated test)
isolated=0
pytest -n 0 "$@" -m isolated || isolated=$?
[ "$isolated" = 5 ] && isolated=0
[ "$status" = 0 ] && status=$isolated
exit "$status"
