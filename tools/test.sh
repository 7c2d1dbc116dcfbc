#!/bin/bash
# The whole test suite: sets the host up (tools/setup.sh), then runs every test; pytest's summary
# line ends the output. Extra arguments go to pytest (e.g. a path or -k).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export PYTHONDONTWRITEBYTECODE=1
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
