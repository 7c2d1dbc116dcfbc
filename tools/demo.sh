#!/bin/bash
# The main job: set the host up, start the bundled backend, build a busybox image locally with
# nova-lxd-image, launch a system container from it, run a command in it, show its state, then stop
# and delete it and stop the backend. Everything lives under DEMO_DIR (default /var/tmp/nova-lxd-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec .venv/bin/python tools/demo.py "$@"
