# shellcheck shell=bash
# A minimal stand-in for the devstack functions plugin.sh calls.  devstack's own functions
# cannot run here (they need a full devstack checkout, systemd and a running cloud), so these
# keep devstack's signatures and record each call in $CALLS, one line each, fields split by '|'.
# shellcheck disable=SC2034  # variables below are devstack's globals, read by plugin.sh

STUB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

function _record { local IFS='|'; echo "$*" >> "$CALLS"; }

function sudo {
    _record sudo "$@"
    "$@"
}
function install_package { _record install_package "$@"; }
function setup_develop { _record setup_develop "$@"; }
function run_process { _record run_process "$@"; }
function stop_process { _record stop_process "$@"; }
function add_user_to_group { _record add_user_to_group "$@"; }
function get_python_exec_prefix { echo "$STUB_DIR/bin"; }
function echo_summary { echo "summary: $*"; }
function die { echo "die: $*" >&2; exit 1; }

function enable_service { ENABLED_SERVICES+=",$1"; }
function is_service_enabled {
    local service
    for service in "$@"; do
        [[ ,$ENABLED_SERVICES, == *,$service,* ]] && return 0
    done
    return 1
}

function iniset {
    if [[ $1 == -sudo ]]; then
        shift
    fi
    _record iniset "$@"
    "$PYTHON" "$STUB_DIR/ini.py" set "$@"
}
function iniget { "$PYTHON" "$STUB_DIR/ini.py" get "$@"; }
