#!/bin/bash
# Idempotent setup of a Debian 12 host for nova-lxd: the Debian packages of bindep.txt, the
# subordinate id range for unprivileged containers, and the virtual environment .venv with the project
# and its test requirements. A second run installs nothing and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "setup: $*" >&2; }
# pip's chatter about this host's package mirrors and build backends says nothing actionable
quiet() { grep -v -E 'WARNING: Location|BuildBackendWarning|^ *(!!|\*+)?$|^ {2,}' >&2 || true; }

# 1. Debian packages (bindep.txt is the one list)
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/\[.*\]//' bindep.txt | awk 'NF {print $1}')
# shellcheck source=tools/debs.sh
. tools/debs.sh
install_debs "${wanted[@]}"

# 2. Subordinate ids: containers' root maps to host ids from 1000000 on (unprivileged containers)
for f in /etc/subuid /etc/subgid; do
    if ! grep -qs '^root:1000000:1000000000$' "$f"; then
        log "adding root:1000000:1000000000 to $f"
        echo 'root:1000000:1000000000' >> "$f"
    fi
done

# 3. The virtual environment, reinstalled only when a requirements or packaging file changed
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
digest=$(cat requirements.txt test-requirements.txt constraints.txt setup.py setup.cfg | sha256sum)
stamp=.venv/.nova-lxd-requirements
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    log "installing Python packages into .venv (a few minutes on a fresh machine)"
    pip() { .venv/bin/pip install -q --disable-pip-version-check "$@" 2>&1 | quiet; }
    pip -U pip wheel setuptools
    pip -c constraints.txt -r test-requirements.txt -e .
    echo "$digest" > "$stamp"
fi
