#!/bin/bash
# Idempotent install of the all-in-one cloud's software: the Debian packages of the control plane
# (on top of tools/setup.sh's list), one OpenStack release from PyPI, and this project.
#
# The OpenStack release (about 600 MB, minutes to install: uWSGI compiles) lives outside the clone,
# in a virtualenv under $AIO_CACHE (default /var/cache/nova-lxd/aio) that every clone on the host
# shares, so a fresh clone (CI) does not install it again. The clone's own .venv-aio is a thin
# virtualenv on top of it: a .pth file puts the shared site-packages on its path, this project is
# installed editable into it, and the shared console scripts are copied with its interpreter, so
# each service runs this clone's code. It is separate from the test venv .venv, so the services'
# pins never move the test requirements. A second run installs nothing and takes a second.
# `aio/install.sh tempest` also installs Tempest into $AIO_CACHE/tempest (for aio/tempest.sh).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
log() { echo "aio install: $*" >&2; }
quiet() { grep -v -E 'WARNING: Location|BuildBackendWarning|^ *(!!|\*+)?$|^ {2,}' >&2 || true; }

# The node's own services (bindep.txt lists them too): broker, virtual switch, DHCP server and the
# metadata proxy Neutron runs in its DHCP namespaces.
DEBS=(rabbitmq-server openvswitch-switch dnsmasq-base haproxy ethtool)
# OpenStack 2026.2: the Nova this driver is built for and the services of the same release.
PIPS=(nova==34.0.0 keystone==30.0.0 glance==33.0.0 openstack-placement==16.0.0 neutron==29.0.0
      python-openstackclient==10.5.0 uWSGI==2.0.31)
TEMPEST_PIN=tempest==47.0.0
PYTHON=${PYTHON:-python3}
AIO_CACHE=${AIO_CACHE:-/var/cache/nova-lxd/aio}

# shellcheck source=tools/debs.sh
. "$REPO/tools/debs.sh"
install_debs "${DEBS[@]}"

mkdir -p "$AIO_CACHE"
# one installer at a time per host (two clones may start at once)
exec 9>"$AIO_CACHE/.lock"
flock 9

# 1. The shared OpenStack venv, with this project's runtime requirements (not the project itself)
SHARED=$AIO_CACHE/openstack
digest=$({ "$PYTHON" -c 'import sys; print(sys.version)'; printf '%s\n' "${PIPS[@]}"
           cat requirements.txt constraints.txt; } | sha256sum)
if [ "$(cat "$SHARED/.aio-requirements" 2>/dev/null)" != "$digest" ]; then
    if [ ! -x "$SHARED/bin/python" ]; then
        log "creating $SHARED"
        "$PYTHON" -m venv "$SHARED"
        # the clone's editable install of this project builds with these
        "$SHARED/bin/pip" install -q --disable-pip-version-check -U pip setuptools wheel 2>&1 | quiet
    fi
    log "installing OpenStack into $SHARED (minutes on a fresh host; uWSGI compiles)"
    "$SHARED/bin/pip" install -q --disable-pip-version-check -c constraints.txt "${PIPS[@]}" \
        -r requirements.txt 2>&1 | quiet
    "$SHARED/bin/python" -W ignore -c 'import nova, keystone, glance, placement, neutron, pylxd' \
        || { log "the OpenStack install in $SHARED is incomplete"; exit 1; }
    echo "$digest" > "$SHARED/.aio-requirements"
fi

# 2. The clone's thin venv over it
VENV=$REPO/.venv-aio
shared_site=$("$SHARED/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stamp="$shared_site $digest $(sha256sum < setup.cfg)"
if [ "$(cat "$VENV/.aio-overlay" 2>/dev/null)" != "$stamp" ]; then
    log "making $VENV (over $SHARED)"
    rm -rf "$VENV"
    "$PYTHON" -m venv --without-pip "$VENV"
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # addsitedir also runs the shared dir's own .pth files (namespace packages, setuptools)
    echo "import site; site.addsitedir('$shared_site')" > "$site/00-aio-openstack.pth"
    # the console scripts of the shared venv, run by this venv's interpreter
    for f in "$SHARED"/bin/*; do
        name=${f##*/}
        [ -f "$f" ] || continue
        case $name in python*|activate*|Activate*|pip*) continue ;; esac
        if head -c 64 "$f" | grep -q "^#!$SHARED/bin/python"; then
            { echo "#!$VENV/bin/python"; tail -n +2 "$f"; } > "$VENV/bin/$name"
            chmod 755 "$VENV/bin/$name"
        else
            ln -sf "$f" "$VENV/bin/$name"     # uwsgi (a binary) and the like
        fi
    done
    # data files the services read from the venv (the paste pipelines, rootwrap filters)
    for d in etc share; do [ ! -d "$SHARED/$d" ] || ln -sfn "$SHARED/$d" "$VENV/$d"; done
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        --no-build-isolation -e . 2>&1 | quiet
    "$VENV/bin/python" -W ignore -c 'import nova.virt.lxd, keystone, glance, placement, neutron' \
        || { log "$VENV cannot import the cloud's packages"; exit 1; }
    echo "$stamp" > "$VENV/.aio-overlay"
fi
# SQLite transactions that queue for the write lock instead of failing (nova_lxd/aio/sqlite_immediate.py),
# loaded into each Python process of the venv that runs with NOVA_LXD_AIO_SQLITE_IMMEDIATE set
pth=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nova_lxd_aio_sqlite.pth
line="import os; os.environ.get('NOVA_LXD_AIO_SQLITE_IMMEDIATE') and __import__('nova_lxd.aio.sqlite_immediate').aio.sqlite_immediate.install()"
[ "$(cat "$pth" 2>/dev/null)" = "$line" ] || echo "$line" > "$pth"

# 3. `install.sh tempest`: Tempest in a venv of its own (its oslo pins never move the services')
if [ "${1:-}" = tempest ]; then
    TEMPEST_VENV=$AIO_CACHE/tempest
    if [ "$(cat "$TEMPEST_VENV/.aio-tempest" 2>/dev/null)" != "$TEMPEST_PIN" ]; then
        [ -x "$TEMPEST_VENV/bin/python" ] || "$PYTHON" -m venv "$TEMPEST_VENV"
        log "installing $TEMPEST_PIN into $TEMPEST_VENV"
        "$TEMPEST_VENV/bin/pip" install -q --disable-pip-version-check "$TEMPEST_PIN" 2>&1 | quiet
        "$TEMPEST_VENV/bin/tempest" --version >/dev/null
        echo "$TEMPEST_PIN" > "$TEMPEST_VENV/.aio-tempest"
    fi
fi
