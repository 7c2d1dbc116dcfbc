#!/bin/bash
# devstack plugin for nova-lxd: system containers as Nova instances.
#
# Enable it in local.conf:   enable_plugin nova-lxd https://opendev.org/x/nova-lxd
# devstack sources this file with the mode ($1: stack, unstack, clean) and, for stack, the
# phase ($2: pre-install, install, post-config, extra, test-config).  Functions used here
# (iniset, iniget, is_service_enabled, run_process, stop_process, setup_develop,
# install_package, add_user_to_group, get_python_exec_prefix, echo_summary, die) are devstack's.

# shellcheck disable=SC2154  # DEST, DATA_DIR, NOVA_CONF, ... are set by devstack

NOVA_LXD_PLUGIN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

function _nova_lxd_facts {
    "$PYTHON" "$NOVA_LXD_PLUGIN_DIR/tools/driver_facts.py" "$@"
}

function _nova_lxd_endpoint {
    if [[ $NOVA_LXD_BACKEND == lxd ]]; then
        echo "$NOVA_LXD_LXD_SOCKET"
    else
        echo "$NOVA_LXD_DATA_DIR/unix.socket"
    fi
}

# The LXD data directory holding the socket, for the `lxd` command line.
function _nova_lxd_lxd_dir {
    dirname "$NOVA_LXD_LXD_SOCKET"
}

# -- pre-install ----------------------------------------------------------------------------
function install_nova_lxd_packages {
    local packages
    packages=$(grep -v '^\s*#' "$NOVA_LXD_PLUGIN_DIR/files/debs/nova-lxd" | tr '\n' ' ')
    # shellcheck disable=SC2086  # one word per package
    install_package $packages
    if [[ $NOVA_LXD_BACKEND == lxd ]]; then
        install_package lxd lxd-client
    fi
}

# Root's subordinate id range, for unprivileged containers; added once, and remembered so that
# clean removes only what stack added.
function configure_nova_lxd_subids {
    local file
    for file in "$NOVA_LXD_SUBUID_FILE" "$NOVA_LXD_SUBGID_FILE"; do
        if ! sudo grep -qs "^root:$NOVA_LXD_SUBID_RANGE\$" "$file"; then
            echo "root:$NOVA_LXD_SUBID_RANGE" | sudo tee -a "$file" >/dev/null
            echo "$file" | sudo tee -a "$NOVA_LXD_CONF_DIR/devstack-subids" >/dev/null
        fi
    done
}

# -- install --------------------------------------------------------------------------------
function install_nova_lxd {
    setup_develop "$NOVA_LXD_DIR"
}

# -- post-config ----------------------------------------------------------------------------
function configure_nova_lxd_compute {
    iniset "$NOVA_CONF" DEFAULT compute_driver lxd.LXDDriver
    iniset "$NOVA_CONF" lxd endpoint "$(_nova_lxd_endpoint)"
    iniset "$NOVA_CONF" lxd timeout "$NOVA_LXD_TIMEOUT"
    if [[ -n $NOVA_LXD_MIGRATION_ENDPOINTS ]]; then
        iniset "$NOVA_CONF" lxd migration_endpoints "$NOVA_LXD_MIGRATION_ENDPOINTS"
    fi
    if [[ $NOVA_LXD_BACKEND == lxd ]]; then
        # the pool the preseed creates; the bundled backend's is always `default`
        iniset "$NOVA_CONF" lxd pool "$NOVA_LXD_STORAGE_POOL"
    fi
}

function configure_nova_lxd_backend {
    local conf=$NOVA_LXD_BACKEND_CONF
    sudo mkdir -p "$(dirname "$conf")"
    iniset -sudo "$conf" backend data_dir "$NOVA_LXD_DATA_DIR"
    # nova-compute runs as the stack user: its group may use the socket (mode 0660)
    iniset -sudo "$conf" backend socket_group "$(id -gn "$STACK_USER")"
    iniset -sudo "$conf" backend socket_mode 0660
    iniset -sudo "$conf" backend bridge_subnet "$NOVA_LXD_BACKEND_BRIDGE_SUBNET"
    iniset -sudo "$conf" backend storage_driver "$NOVA_LXD_STORAGE_DRIVER"
    iniset -sudo "$conf" backend debug "$ENABLE_DEBUG_LOG_LEVEL"
}

function configure_nova_lxd_glance {
    local formats
    mapfile -t formats < <(_nova_lxd_facts glance-formats \
        "$(iniget "$GLANCE_API_CONF" image_format container_formats)" \
        "$(iniget "$GLANCE_API_CONF" image_format disk_formats)")
    [[ ${#formats[@]} == 2 ]] || die $LINENO "cannot work out the Glance image formats"
    iniset "$GLANCE_API_CONF" image_format container_formats "${formats[0]}"
    iniset "$GLANCE_API_CONF" image_format disk_formats "${formats[1]}"
}

# -- post-config: the backend --------------------------------------------------------------
function start_nova_lxd_backend {
    local bin
    bin=$(get_python_exec_prefix)/nova-lxd-backend
    # root: it creates containers, mounts, cgroups and network devices
    run_process "$NOVA_LXD_SERVICE" "$bin --config-file $NOVA_LXD_BACKEND_CONF" "" root
}

# `lxd init --preseed` with everything named: an explicit bridge subnet and storage pool.
function nova_lxd_lxd_preseed {
    cat <<PRESEED
networks:
- name: $NOVA_LXD_BRIDGE
  type: bridge
  config:
    ipv4.address: $NOVA_LXD_BRIDGE_SUBNET
    ipv4.nat: "true"
    ipv6.address: none
storage_pools:
- name: $NOVA_LXD_STORAGE_POOL
  driver: ${NOVA_LXD_STORAGE_DRIVER:-dir}
profiles:
- name: default
  devices:
    root:
      path: /
      pool: $NOVA_LXD_STORAGE_POOL
      type: disk
PRESEED
}

function configure_nova_lxd_lxd {
    local lxd_dir
    lxd_dir=$(_nova_lxd_lxd_dir)
    sudo env LXD_DIR="$lxd_dir" lxd waitready --timeout 60 || \
        die $LINENO "LXD is not running at $lxd_dir (NOVA_LXD_BACKEND=lxd uses an existing LXD)"
    nova_lxd_lxd_preseed | sudo env LXD_DIR="$lxd_dir" lxd init --preseed || \
        die $LINENO "lxd init --preseed failed"
    add_user_to_group "$STACK_USER" "$NOVA_LXD_LXD_GROUP"
}

# -- extra ----------------------------------------------------------------------------------
function build_nova_lxd_image {
    local out_dir=$NOVA_LXD_IMAGE_DIR/$NOVA_LXD_IMAGE output file
    local build_args=(build "$NOVA_LXD_IMAGE" --output-dir "$out_dir" --quiet)
    if [[ $NOVA_LXD_IMAGE == debian ]]; then
        build_args+=(--mirror "$NOVA_LXD_DEBIAN_MIRROR")
    fi
    sudo mkdir -p "$out_dir"
    # building a root filesystem needs root (device nodes, ownership); it prints the
    # tarball's path, then its fingerprint
    output=$(sudo "$(get_python_exec_prefix)/nova-lxd-image" "${build_args[@]}") || \
        die $LINENO "nova-lxd-image could not build the $NOVA_LXD_IMAGE image"
    file=${output%%$'\n'*}
    [[ -f $file ]] || die $LINENO "nova-lxd-image built no file (it said: $output)"
    "$(get_python_exec_prefix)/nova-lxd-image" upload "$file" --name "$NOVA_LXD_IMAGE_NAME" \
        --public --os-cloud "${OS_CLOUD:-devstack-admin}" || \
        die $LINENO "nova-lxd-image could not upload $file to Glance"
}

# -- test-config ----------------------------------------------------------------------------
function configure_nova_lxd_tempest {
    local flags flag image_id file
    mapfile -t flags < <(_nova_lxd_facts tempest-flags)
    [[ ${#flags[@]} -gt 0 ]] || die $LINENO "cannot work out the driver's tempest flags"
    for flag in "${flags[@]}"; do
        # "section option value"
        # shellcheck disable=SC2086
        iniset "$TEMPEST_CONFIG" $flag
    done
    if [[ $NOVA_LXD_IMAGE != none ]]; then
        image_id=$(OS_CLOUD=${OS_CLOUD:-devstack-admin} openstack image show \
            "$NOVA_LXD_IMAGE_NAME" -f value -c id) || \
            die $LINENO "image $NOVA_LXD_IMAGE_NAME is not in Glance"
        iniset "$TEMPEST_CONFIG" compute image_ref "$image_id"
        iniset "$TEMPEST_CONFIG" compute image_ref_alt "$image_id"
        # scenario tests upload an image file themselves: give them the container image
        for file in "$NOVA_LXD_IMAGE_DIR/$NOVA_LXD_IMAGE"/*.tar.*; do
            [[ -f $file ]] || continue
            mapfile -t flags < <(_nova_lxd_facts tempest-image "$file")
            for flag in "${flags[@]}"; do
                # shellcheck disable=SC2086
                iniset "$TEMPEST_CONFIG" $flag
            done
            break
        done
    fi
}

# -- unstack and clean ----------------------------------------------------------------------
function stop_nova_lxd {
    if is_service_enabled "$NOVA_LXD_SERVICE"; then
        stop_process "$NOVA_LXD_SERVICE"
    fi
}

# What the bundled backend leaves behind when it stops, by design: containers keep running,
# storage pools stay mounted (btrfs on a loop file).  Release them before deleting the files.
function _nova_lxd_release_data_dir {
    local dir=$1 name mount loop file
    [[ -d $dir ]] || return 0
    if [[ -d $dir/containers ]]; then
        for name in $(sudo lxc-ls -P "$dir/containers" --running -1 2>/dev/null); do
            sudo lxc-stop -P "$dir/containers" -n "$name" --kill || true
        done
    fi
    # deepest mount first
    while read -r mount; do
        sudo umount -l "$mount"
    done < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' \
                 /proc/self/mountinfo | sort -r)
    while read -r loop file; do
        if [[ $file == "$dir"/* ]]; then
            sudo losetup -d "$loop"
        fi
    done < <(sudo losetup -nl -O NAME,BACK-FILE)
}

function cleanup_nova_lxd {
    local file
    _nova_lxd_release_data_dir "$NOVA_LXD_DATA_DIR"
    sudo rm -rf "$NOVA_LXD_DATA_DIR" "$NOVA_LXD_IMAGE_DIR"
    if [[ -f $NOVA_LXD_CONF_DIR/devstack-subids ]]; then
        while read -r file; do
            sudo sed -i "\#^root:$NOVA_LXD_SUBID_RANGE\$#d" "$file"
        done < "$NOVA_LXD_CONF_DIR/devstack-subids"
    fi
    sudo rm -rf "$NOVA_LXD_CONF_DIR"
}

# -- dispatch -------------------------------------------------------------------------------
if [[ $1 == stack ]]; then
    case $2 in
        pre-install)
            echo_summary "Installing nova-lxd's packages"
            install_nova_lxd_packages
            sudo mkdir -p "$NOVA_LXD_CONF_DIR"
            configure_nova_lxd_subids
            ;;
        install)
            echo_summary "Installing nova-lxd"
            install_nova_lxd
            ;;
        post-config)
            # before devstack starts nova-compute, which needs its backend answering
            echo_summary "Configuring nova-lxd"
            if is_service_enabled n-cpu; then
                configure_nova_lxd_compute
            fi
            if is_service_enabled "$NOVA_LXD_SERVICE"; then
                configure_nova_lxd_backend
                start_nova_lxd_backend
            elif [[ $NOVA_LXD_BACKEND == lxd ]] && is_service_enabled n-cpu; then
                configure_nova_lxd_lxd
            fi
            if is_service_enabled g-api; then
                configure_nova_lxd_glance
            fi
            ;;
        extra)
            # Glance is running now
            if [[ $NOVA_LXD_IMAGE != none ]] && is_service_enabled g-api; then
                echo_summary "Building and uploading the $NOVA_LXD_IMAGE image"
                build_nova_lxd_image
            fi
            ;;
        test-config)
            if is_service_enabled tempest; then
                echo_summary "Configuring tempest for nova-lxd"
                configure_nova_lxd_tempest
            fi
            ;;
    esac
elif [[ $1 == unstack ]]; then
    stop_nova_lxd
elif [[ $1 == clean ]]; then
    cleanup_nova_lxd
fi
