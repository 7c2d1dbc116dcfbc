#!/bin/bash
# The whole test suite: sets the host up (tools/setup.sh), then runs every test: the main run on
# two workers and, alongside it from the start, the all-in-one cloud test (marker `aio`: a whole
# OpenStack on loopback with its own ports, paths and bridges, in a process of its own; it mostly
# waits on its services); then, once both are done, the `isolated` tests in a fresh process of
# their own (they hold process-global state, and their private Open vSwitch cannot run beside the
# cloud's: each userspace datapath claims the tap device `ovs-netdev`). Any part failing fails the
# command; the output ends with each part's summary line.
# Extra arguments go to the main and isolated runs (e.g. a path, or -k); with arguments the aio
# test is left out unless NOVA_LXD_AIO_TEST=1 (NOVA_LXD_AIO_TEST=0 leaves it out of a full run).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export PYTHONDONTWRITEBYTECODE=1
pytest() { .venv/bin/python -m pytest -p no:cacheprovider "$@"; }
logs=$(mktemp -d /var/tmp/nova-lxd-test-logs.XXXXXX)

aio_pid=
if [ "${NOVA_LXD_AIO_TEST:-$(($# == 0))}" = 1 ]; then
    echo "the all-in-one cloud test runs alongside; its output: $logs/aio.log" >&2
    # its own SIGINT handling (a background job's is ignored), so an interrupt tears its cloud down
    ( trap - INT; exec .venv/bin/python -m pytest -p no:cacheprovider -n 0 -m aio \
        tests/functional/aio/test_cloud.py > "$logs/aio.log" 2>&1 ) &
    aio_pid=$!
fi
# interrupted: the aio test purges its cloud, and is waited for
# shellcheck disable=SC2317  # run by the trap
stop_aio() {
    [ -n "$aio_pid" ] || return 0
    kill -INT "$aio_pid" 2>/dev/null || true
    wait "$aio_pid" 2>/dev/null || true
}
trap 'stop_aio; exit 130' INT TERM

status=0
pytest "$@" 2>&1 | tee "$logs/main.log" || status=$?
if [ -n "$aio_pid" ]; then
    echo "waiting for the all-in-one cloud test (its output: $logs/aio.log)" >&2
    aio=0
    wait "$aio_pid" || aio=$?
    aio_pid=
    echo "======== the all-in-one cloud test (tests/functional/aio/test_cloud.py, marker aio)"
    cat "$logs/aio.log"
    [ "$status" = 0 ] && status=$aio
fi
# exit code 5: nothing selected (e.g. arguments that name no isolated test)
isolated=0
pytest -n 0 "$@" -m isolated 2>&1 | tee "$logs/isolated.log" || isolated=$?
[ "$isolated" = 5 ] && isolated=0
[ "$status" = 0 ] && status=$isolated

summary() { grep -E '^=+ .*(passed|failed|error|no tests ran).* =+$' "$1" | tail -1; }
echo "main run:     $(summary "$logs/main.log")"
[ ! -f "$logs/aio.log" ] || echo "aio run:      $(summary "$logs/aio.log")"
echo "isolated run: $(summary "$logs/isolated.log")"
rm -rf "$logs"
exit "$status"
