#!/bin/bash
# The main job: set the host up, start the bundled backend, build a busybox image locally with
# nova-lxd-image, launch a system container from it, run a command in it, show its state, then stop
# and delete it, stop the backend and remove its directory.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec .venv/bin/python tools/demo.py "$@"
