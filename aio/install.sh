#!/bin/bash
# Idempotent install of the all-in-one cloud's software: the Debian packages of the control plane
# (on top of tools/setup.sh's list) and a virtualenv .venv-aio holding one OpenStack release from
# PyPI together with this project. It is separate from the test venv .venv so the services' pins
# never move the test requirements. A second run installs nothing and takes a second.
# `aio/install.sh tempest` also installs Tempest into .venv-tempest (for aio/tempest.sh).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
log() { echo "aio install: $*" >&2; }

# The node's own services (bindep.txt lists them too): broker, virtual switch, DHCP server and the
# metadata proxy Neutron runs in its DHCP namespaces.
DEBS=(rabbitmq-server openvswitch-switch dnsmasq-base haproxy ethtool)
# OpenStack 2026.2: the Nova this driver is built for and the services of the same release.
PIPS=(nova==34.0.0 keystone==30.0.0 glance==33.0.0 openstack-placement==16.0.0 neutron==29.0.0
      python-openstackclient==10.5.0 uWSGI==2.0.31)

# shellcheck source=tools/debs.sh
. "$REPO/tools/debs.sh"
install_debs "${DEBS[@]}"

VENV=$REPO/.venv-aio
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
digest=$(printf '%s\n' "${PIPS[@]}" | cat - requirements.txt constraints.txt setup.cfg | sha256sum)
stamp=$VENV/.aio-requirements
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    log "installing OpenStack services into $VENV (a few minutes on a fresh machine; uWSGI compiles)"
    "$VENV/bin/pip" install -q --disable-pip-version-check -c constraints.txt "${PIPS[@]}" -e . 2>&1 \
        | grep -v -E 'WARNING: Location' >&2 || true
    "$VENV/bin/python" -c 'import nova.virt.lxd, keystone, glance, placement, neutron' \
        || { log "the OpenStack install in $VENV is incomplete"; exit 1; }
    echo "$digest" > "$stamp"
fi
# SQLite transactions that queue for the write lock instead of failing (nova_lxd/aio/sqlite_immediate.py),
# loaded into each Python process of the venv that runs with NOVA_LXD_AIO_SQLITE_IMMEDIATE set
pth=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nova_lxd_aio_sqlite.pth
line="import os; os.environ.get('NOVA_LXD_AIO_SQLITE_IMMEDIATE') and __import__('nova_lxd.aio.sqlite_immediate').aio.sqlite_immediate.install()"
[ "$(cat "$pth" 2>/dev/null)" = "$line" ] || echo "$line" > "$pth"

# `install.sh tempest`: Tempest in a venv of its own (its oslo pins never move the services')
if [ "${1:-}" = tempest ]; then
    TEMPEST_VENV=$REPO/.venv-tempest TEMPEST_PIN=tempest==47.0.0
    [ -x "$TEMPEST_VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$TEMPEST_VENV"
    if [ "$(cat "$TEMPEST_VENV/.aio-tempest" 2>/dev/null)" != "$TEMPEST_PIN" ]; then
        log "installing $TEMPEST_PIN into $TEMPEST_VENV"
        "$TEMPEST_VENV/bin/pip" install -q --disable-pip-version-check "$TEMPEST_PIN" 2>&1 \
            | grep -v -E 'WARNING: Location' >&2 || true
        "$TEMPEST_VENV/bin/tempest" --version >/dev/null
        echo "$TEMPEST_PIN" > "$TEMPEST_VENV/.aio-tempest"
    fi
fi
