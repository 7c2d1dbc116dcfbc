#!/bin/bash
# Tempest (OpenStack's own API test suite, from PyPI) against the all-in-one cloud.
#
#   aio/tempest.sh [REGEX] [tempest run options...]
#
# Installs Tempest into $AIO_CACHE/tempest (idempotent: aio/install.sh tempest), starts the cloud
# if it is not running (aio/cloud.sh start), makes the shared network Tempest's projects boot on,
# writes $AIO_ROOT/tempest/etc/tempest.conf from aio/templates/tempest.conf and runs the compute
# API subset (servers, flavors, images) minus the support matrix's [tempest-exclusions] (tests of
# what this image or a one-node cloud cannot do, each with its reason: aio/tempest_exclusions.py).
# Ends with the line "N passed, N failed, N skipped".
# TEMPEST_CONCURRENCY (default 2) sets the number of workers.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
AIO=$REPO/aio
export AIO_ROOT=${AIO_ROOT:-/var/tmp/nova-lxd-aio}
export AIO_LOGS=$AIO_ROOT/logs AIO_PASSWORD=${AIO_PASSWORD:-nova-lxd-aio}
REGEX=${1:-'^tempest\.api\.compute\.(servers|flavors|images)\.'}
[ $# -gt 0 ] && shift
WORKSPACE=$AIO_ROOT/tempest
TEMPEST=${AIO_CACHE:-/var/cache/nova-lxd/aio}/tempest/bin/tempest
NET=tempest-net SUBNET=tempest-subnet CIDR=10.78.0.0/24

log() { echo "aio tempest: $*" >&2; }
openstack() { OS_CLIENT_CONFIG_FILE=$AIO_ROOT/clouds.yaml "$REPO/.venv-aio/bin/openstack" --os-cloud aio "$@"; }

"$AIO/install.sh" tempest
"$AIO/cloud.sh" status >/dev/null || "$AIO/cloud.sh" start

# Tempest's projects boot their servers on this network: shared, since Tempest makes none itself
openstack network show "$NET" >/dev/null 2>&1 || openstack network create --share "$NET" >/dev/null
openstack subnet show "$SUBNET" >/dev/null 2>&1 || openstack subnet create "$SUBNET" \
    --network "$NET" --subnet-range "$CIDR" >/dev/null

id_of() { openstack "$1" show "$2" -f value -c id; }
export TEMPEST_IMAGE TEMPEST_IMAGE_ALT TEMPEST_FLAVOR TEMPEST_FLAVOR_ALT TEMPEST_NETWORK=$NET
TEMPEST_IMAGE=$(id_of image busybox)
TEMPEST_IMAGE_ALT=$TEMPEST_IMAGE
TEMPEST_FLAVOR=$(id_of flavor c1.tiny)
TEMPEST_FLAVOR_ALT=$(id_of flavor c1.small)

# the workspace registered in a file of this cloud's, not in ~/.tempest (whose names must be unique)
[ -f "$WORKSPACE/.stestr.conf" ] || "$TEMPEST" init --workspace-path "$AIO_ROOT/tempest-workspaces.yaml" \
    --name aio "$WORKSPACE" >/dev/null
# shellcheck disable=SC2016  # the names envsubst may replace
envsubst '${AIO_ROOT} ${AIO_LOGS} ${AIO_PASSWORD} ${TEMPEST_IMAGE} ${TEMPEST_IMAGE_ALT}
          ${TEMPEST_FLAVOR} ${TEMPEST_FLAVOR_ALT} ${TEMPEST_NETWORK}' \
    < "$AIO/templates/tempest.conf" > "$WORKSPACE/etc/tempest.conf"

python3 "$AIO/tempest_exclusions.py" > "$WORKSPACE/exclude.txt"

cd "$WORKSPACE"
log "running $REGEX (log: $AIO_LOGS/tempest.log)"
rc=0
"$TEMPEST" run --concurrency "${TEMPEST_CONCURRENCY:-2}" --regex "$REGEX" \
    --exclude-list "$WORKSPACE/exclude.txt" "$@" | tee "$AIO_LOGS/tempest-run.log" || rc=$?
# the counts of this run, in the plain form test tooling reads
passed=$(sed -n 's/^ - Passed: \([0-9]*\)$/\1/p' "$AIO_LOGS/tempest-run.log" | tail -1)
failed=$(sed -n 's/^ - Failed: \([0-9]*\)$/\1/p' "$AIO_LOGS/tempest-run.log" | tail -1)
skipped=$(sed -n 's/^ - Skipped: \([0-9]*\)$/\1/p' "$AIO_LOGS/tempest-run.log" | tail -1)
echo "${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
exit "$rc"
