# shellcheck shell=bash
# install_debs PKG...: install the Debian packages not installed yet (nothing to do: no apt call).
# Sourced by tools/setup.sh and aio/install.sh; expects a `log` function.
install_debs() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # no daemon starts here (no init system): whoever needs one starts it by hand
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
