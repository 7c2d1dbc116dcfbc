#!/bin/bash
# A single-node OpenStack on this host with the nova-lxd driver, as real processes on loopback.
#
#   aio/cloud.sh up       install (idempotent), configure, start everything, boot a demo server
#   aio/cloud.sh start    the same without booting the demo server
#   aio/cloud.sh status   each service's PID and whether it runs
#   aio/cloud.sh restart SERVICE...   stop these services, then `start` (re-renders the config)
#   aio/cloud.sh down     stop every process it started (by PID), remove its bridges/namespaces
#   aio/cloud.sh purge    down, then delete all state (databases, images, containers, logs)
#   aio/cloud.sh tempest [REGEX]   Tempest's compute API subset against the cloud (aio/tempest.sh)
#
# Everything lives under $AIO_ROOT (default /var/tmp/nova-lxd-aio): etc/ (configuration rendered
# from aio/templates), logs/ (one file per service), run/ (PID files), data/ (databases, images,
# the backend's containers). The configuration is an example of a real deployment: read it there.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
AIO=$REPO/aio
export AIO_ROOT=${AIO_ROOT:-/var/tmp/nova-lxd-aio}
export AIO_ETC=$AIO_ROOT/etc AIO_LOGS=$AIO_ROOT/logs AIO_RUN=$AIO_ROOT/run AIO_DATA=$AIO_ROOT/data
export AIO_VENV=$REPO/.venv-aio
export AIO_PASSWORD=${AIO_PASSWORD:-nova-lxd-aio}
export AIO_HOST=${AIO_HOST:-aio}
export AIO_DEBUG=${AIO_DEBUG:-False}
# how long (s) to wait for a service to answer: generous, since a loaded 2-core host is slow
export AIO_WAIT=${AIO_WAIT:-300}
# every service's SQLite transactions begin IMMEDIATE (nova_lxd/aio/sqlite_immediate.py)
export NOVA_LXD_AIO_SQLITE_IMMEDIATE=1
BIN=$AIO_VENV/bin
OVS_DB=tcp:127.0.0.1:6640
# the demo tenant network (VLAN on physnet1) and server
NET=demo-net SUBNET=demo-subnet CIDR=10.77.0.0/24 IMAGE=busybox FLAVOR=c1.tiny SERVER=demo

log() { echo "aio: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------------------- processes
# start NAME CMD...: run CMD in its own session (so its children can be stopped with it), output
# to logs/NAME.log, PID in run/NAME.pid. Already running -> nothing.
start() {
    local name=$1; shift
    if running "$name"; then return 0; fi
    setsid "$@" >>"$AIO_LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$AIO_RUN/$name.pid"
    log "started $name (pid $!)"
}

running() {
    local pid
    pid=$(cat "$AIO_RUN/$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null
}

# stop NAME...: SIGTERM to each one's process group, all at once (each may take seconds to shut
# down), then SIGKILL to what is left after 20 s
stop() {
    local name pid pids=() alive
    for name in "$@"; do
        pid=$(cat "$AIO_RUN/$name.pid" 2>/dev/null) || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            log "stopping $name (pid $pid)"
        fi
        pids+=("$pid")
        rm -f "$AIO_RUN/$name.pid"
    done
    for _ in $(seq 200); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    # a process group can outlive its leader (uWSGI workers, agents' children)
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

# wait_http URL [SECONDS]: until the URL answers at all (any HTTP status)
wait_http() {
    local url=$1 deadline=$((SECONDS + ${2:-$AIO_WAIT}))
    # each try bounded: a server that accepts and never answers must not stall the start
    until curl -s -o /dev/null --max-time 5 --noproxy '*' "$url"; do
        ((SECONDS < deadline)) || die "$url did not answer; see $AIO_LOGS"
        sleep 0.5
    done
}

# uwsgi NAME PORT MODULE ENV...: a WSGI application under uWSGI on 127.0.0.1:PORT
# The application loads in the worker (--lazy-apps): loaded in the master, it started threads
# there, and a worker forked while one of them held Python's GIL waited for it forever (seen:
# nova-api never answering).
uwsgi() {
    local name=$1 port=$2 module=$3; shift 3
    start "$name" env "$@" "$BIN/uwsgi" --master --lazy-apps --die-on-term --need-app \
        --enable-threads --processes 1 --threads 4 --http-socket "127.0.0.1:$port" \
        --wsgi "$module" --home "$AIO_VENV" --add-header 'Connection: close' --buffer-size 65535 \
        --hook-master-start 'unix_signal:15 gracefully_kill_them_all'
}

# ---------------------------------------------------------------------------- configuration
render() {
    mkdir -p "$AIO_ETC"/{keystone,glance,placement,nova,nova-lxd,neutron} "$AIO_LOGS" "$AIO_RUN" \
        "$AIO_DATA"/{glance,nova,neutron,backend}
    # shellcheck disable=SC2016  # the names envsubst may replace, not their values
    local vars='${AIO_ROOT} ${AIO_ETC} ${AIO_LOGS} ${AIO_RUN} ${AIO_DATA} ${AIO_VENV} ${AIO_PASSWORD} ${AIO_HOST} ${AIO_DEBUG}'
    local t svc
    for t in "$AIO"/templates/*; do
        case ${t##*/} in
            tempest*) continue ;;   # rendered by aio/tempest.sh, which knows the image and flavor IDs
            keystone*) svc=keystone ;; glance*) svc=glance ;; placement*) svc=placement ;;
            nova*) svc=nova ;; backend*) svc=nova-lxd ;; *) svc=neutron ;;
        esac
        envsubst "$vars" < "$t" > "$AIO_ETC/$svc/${t##*/}"
    done
    # the services' own paste pipelines, as their wheels ship them
    cp "$AIO_VENV/etc/nova/api-paste.ini" "$AIO_ETC/nova/"
    cp "$AIO_VENV/etc/glance/glance-api-paste.ini" "$AIO_ETC/glance/"
    cp "$AIO_VENV/etc/neutron/api-paste.ini" "$AIO_ETC/neutron/"
    cat > "$AIO_ROOT/clouds.yaml" <<EOF
# written by aio/cloud.sh: OS_CLIENT_CONFIG_FILE=$AIO_ROOT/clouds.yaml openstack --os-cloud aio ...
clouds:
  aio:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: admin
      password: $AIO_PASSWORD
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
EOF
}

# ---------------------------------------------------------------------------- services
# SQLite serves every service here. Several processes write each database (Nova's API, conductor
# and scheduler; Neutron's API, RPC and periodic workers), so the write-ahead log keeps readers
# from blocking writers ("database is locked"). The mode is stored in the file: set once.
sqlite_wal() {
    "$BIN/python" -c 'import sqlite3, sys
for db in sys.argv[1:]: sqlite3.connect(db).execute("PRAGMA journal_mode=WAL")' "$@"
}

start_ovs() {
    local ovs=$AIO_DATA/ovs
    mkdir -p "$ovs"
    [ -f "$ovs/conf.db" ] || ovsdb-tool create "$ovs/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    export OVS_RUNDIR=$ovs OVS_DBDIR=$ovs
    start ovsdb-server ovsdb-server "$ovs/conf.db" --remote="punix:$ovs/db.sock" \
        --remote="ptcp:6640:127.0.0.1" --pidfile="$ovs/ovsdb-server.pid" --unixctl="$ovs/ovsdb-server.ctl"
    until ovs-vsctl --db="$OVS_DB" --timeout=2 show >/dev/null 2>&1; do sleep 0.5; done 2>/dev/null
    ovs-vsctl --db="$OVS_DB" --no-wait init
    start ovs-vswitchd ovs-vswitchd "$OVS_DB" --pidfile="$ovs/ovs-vswitchd.pid" \
        --unixctl="$ovs/ovs-vswitchd.ctl"
    ovs-vsctl --db="$OVS_DB" --timeout=30 --may-exist add-br br-phys \
        -- set bridge br-phys datapath_type=netdev
}

# RabbitMQ as its own user, its state under data/, reachable on loopback only (broker and epmd)
rabbit_env() {
    local env=(HOME=/var/lib/rabbitmq RABBITMQ_NODENAME=rabbit@localhost
        RABBITMQ_MNESIA_BASE="$AIO_DATA/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$AIO_LOGS"
        RABBITMQ_PID_FILE="$AIO_DATA/rabbitmq/rabbit.pid" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        ERL_EPMD_ADDRESS=127.0.0.1
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}')
    env "${env[@]}" setpriv --reuid rabbitmq --regid rabbitmq --init-groups "$@"
}

start_rabbitmq() {
    mkdir -p "$AIO_DATA/rabbitmq"
    chown rabbitmq: "$AIO_DATA/rabbitmq" "$AIO_LOGS"
    # `start` needs a program, so the environment is passed through this script itself
    start rabbitmq "$0" _rabbit_env /usr/lib/rabbitmq/bin/rabbitmq-server
    rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -q wait --timeout "$AIO_WAIT" "$AIO_DATA/rabbitmq/rabbit.pid" >/dev/null
    rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -q add_user openstack "$AIO_PASSWORD" 2>/dev/null \
        || rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -q change_password openstack "$AIO_PASSWORD"
    rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -q set_permissions openstack '.*' '.*' '.*'
}

# ---------------------------------------------------------------------------- databases
# Each service's database is independent of the others and of every running service, so they are
# made side by side: each is a minute of Python start-up and migrations on a loaded host.
init_databases() {
    local pids=() pid rc=0
    init_keystone_db & pids+=($!)
    init_glance_placement_db & pids+=($!)
    init_nova_db & pids+=($!)
    init_neutron_db & pids+=($!)
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    ((rc == 0)) || die "a database was not made; see the messages above and $AIO_LOGS"
}

init_keystone_db() {
    local k=$AIO_ETC/keystone/keystone.conf
    "$BIN/keystone-manage" --config-file "$k" db_sync
    "$BIN/keystone-manage" --config-file "$k" fernet_setup --keystone-user root --keystone-group root
    "$BIN/keystone-manage" --config-file "$k" credential_setup --keystone-user root --keystone-group root
    "$BIN/keystone-manage" --config-file "$k" bootstrap --bootstrap-password "$AIO_PASSWORD" \
        --bootstrap-admin-url http://127.0.0.1:5000/v3 --bootstrap-public-url http://127.0.0.1:5000/v3 \
        --bootstrap-internal-url http://127.0.0.1:5000/v3 --bootstrap-region-id RegionOne
    sqlite_wal "$AIO_DATA/keystone.sqlite"
}

start_keystone() {
    uwsgi keystone 5000 keystone.wsgi.api:application OS_KEYSTONE_CONFIG_DIR="$AIO_ETC/keystone"
    wait_http http://127.0.0.1:5000/v3
    "$BIN/python" "$AIO/bootstrap.py" identity
}

init_glance_placement_db() {
    "$BIN/glance-manage" --config-file "$AIO_ETC/glance/glance-api.conf" db_sync >/dev/null
    sqlite_wal "$AIO_DATA/glance.sqlite"
    "$BIN/placement-manage" --config-file "$AIO_ETC/placement/placement.conf" db sync
    sqlite_wal "$AIO_DATA/placement.sqlite"
}

start_glance_placement() {
    uwsgi glance-api 9292 glance.wsgi.api:application OS_GLANCE_CONFIG_DIR="$AIO_ETC/glance"
    uwsgi placement-api 8778 placement.wsgi.api:application OS_PLACEMENT_CONFIG_DIR="$AIO_ETC/placement"
}

nova_manage() { "$BIN/nova-manage" --config-file "$AIO_ETC/nova/nova.conf" "$@"; }

init_nova_db() {
    local cells
    nova_manage api_db sync
    cells=$(nova_manage cell_v2 list_cells 2>/dev/null || true)
    grep -q ' cell0 ' <<<"$cells" || nova_manage cell_v2 map_cell0 \
        --database_connection "sqlite:///$AIO_DATA/nova_cell0.sqlite?timeout=60"
    grep -q ' cell1 ' <<<"$cells" || nova_manage cell_v2 create_cell --name cell1 >/dev/null
    nova_manage db sync
    sqlite_wal "$AIO_DATA"/nova_*.sqlite
}

start_nova() {
    local conf=$AIO_ETC/nova/nova.conf
    # the paste pipeline must come first: nova's WSGI loader builds the app from the first file
    local novaenv=(OS_NOVA_CONFIG_DIR="$AIO_ETC/nova" "OS_NOVA_CONFIG_FILES=api-paste.ini;nova.conf")
    uwsgi nova-api 8774 nova.wsgi.osapi_compute:application "${novaenv[@]}"
    uwsgi nova-metadata 8775 nova.wsgi.metadata:application "${novaenv[@]}"
    start nova-conductor "$BIN/nova-conductor" --config-file "$conf"
    start nova-scheduler "$BIN/nova-scheduler" --config-file "$conf"
    # the bundled backend, then the compute service that drives it
    start nova-lxd-backend "$BIN/nova-lxd-backend" --config-file "$AIO_ETC/nova-lxd/backend.conf" \
        --data-dir "$AIO_DATA/backend" --log-file "$AIO_LOGS/nova-lxd-backend.log"
    until [ -S "$AIO_DATA/backend/unix.socket" ]; do sleep 0.2; done
    # nova-compute gives up early if the conductor does not answer: wait for it first
    wait_rpc_ready nova-conductor
    start nova-compute "$BIN/nova-compute" --config-file "$conf"
}

# wait until a service's log says its RPC server is consuming
wait_rpc_ready() {
    local deadline=$((SECONDS + AIO_WAIT))
    until grep -q -E 'Connected to AMQP|Starting .* node|Created (RPC|consumer)' "$AIO_LOGS/$1.log" 2>/dev/null; do
        ((SECONDS < deadline)) || die "$1 did not start; see $AIO_LOGS/$1.log"
        sleep 0.5
    done
}

init_neutron_db() {
    local n=$AIO_ETC/neutron
    if [ ! -f "$AIO_DATA/neutron.sqlite" ]; then
        "$BIN/python" "$AIO/neutron_db.py" "sqlite:///$AIO_DATA/neutron.sqlite"
        "$BIN/neutron-db-manage" --config-file "$n/neutron.conf" --config-file "$n/ml2_conf.ini" \
            stamp heads >>"$AIO_LOGS/neutron-db-manage.log" 2>&1
    fi
    sqlite_wal "$AIO_DATA/neutron.sqlite"
}

start_neutron() {
    local n=$AIO_ETC/neutron
    local server=(--config-file "$n/neutron.conf" --config-file "$n/ml2_conf.ini")
    # the API under uWSGI; RPC workers and periodic tasks as their own processes
    uwsgi neutron-api 9696 neutron.wsgi.api:application OS_NEUTRON_CONFIG_DIR="$n" \
        "OS_NEUTRON_CONFIG_FILES=neutron.conf;ml2_conf.ini"
    start neutron-rpc-server "$BIN/neutron-rpc-server" "${server[@]}"
    start neutron-periodic-workers "$BIN/neutron-periodic-workers" "${server[@]}"
    wait_http http://127.0.0.1:9696
    start neutron-openvswitch-agent "$BIN/neutron-openvswitch-agent" \
        --config-file "$n/neutron.conf" --config-file "$n/openvswitch_agent.ini"
    start neutron-dhcp-agent "$BIN/neutron-dhcp-agent" \
        --config-file "$n/neutron.conf" --config-file "$n/dhcp_agent.ini"
    start neutron-metadata-agent "$BIN/neutron-metadata-agent" \
        --config-file "$n/neutron.conf" --config-file "$n/metadata_agent.ini"
}

# ---------------------------------------------------------------------------- the cloud's content
openstack() { OS_CLIENT_CONFIG_FILE=$AIO_ROOT/clouds.yaml "$BIN/openstack" --os-cloud aio "$@"; }

admin_env() {
    export OS_AUTH_URL=http://127.0.0.1:5000/v3 OS_USERNAME=admin OS_PASSWORD=$AIO_PASSWORD \
        OS_PROJECT_NAME=admin OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default \
        OS_IDENTITY_API_VERSION=3 OS_REGION_NAME=RegionOne
}

content() {
    wait_http http://127.0.0.1:8774
    "$BIN/python" "$AIO/bootstrap.py" flavors
    # the compute host shows up in cell1
    local deadline=$((SECONDS + AIO_WAIT))
    until nova_manage cell_v2 discover_hosts --strict >/dev/null 2>&1 \
            || openstack compute service list --service nova-compute -f value -c State | grep -q up; do
        ((SECONDS < deadline)) || die "nova-compute did not register; see $AIO_LOGS/nova-compute.log"
        sleep 2
    done
    if ! openstack image show "$IMAGE" >/dev/null 2>&1; then
        local cache=$REPO/.cache/aio
        mkdir -p "$cache"
        ls "$cache"/*.tar.* >/dev/null 2>&1 || "$BIN/nova-lxd-image" -q build busybox -o "$cache"
        OS_CLIENT_CONFIG_FILE=$AIO_ROOT/clouds.yaml "$BIN/nova-lxd-image" -q upload \
            "$(ls "$cache"/*.tar.* | head -1)" --name "$IMAGE" --public --os-cloud aio
    fi
    openstack network show "$NET" >/dev/null 2>&1 || openstack network create "$NET" >/dev/null
    openstack subnet show "$SUBNET" >/dev/null 2>&1 || openstack subnet create "$SUBNET" \
        --network "$NET" --subnet-range "$CIDR" --dns-nameserver 10.77.0.1 >/dev/null
}

boot_demo() {
    openstack server show "$SERVER" >/dev/null 2>&1 \
        || openstack server create --wait --image "$IMAGE" --flavor "$FLAVOR" --network "$NET" "$SERVER" >/dev/null
    openstack server show "$SERVER" -c name -c status -c addresses -c OS-EXT-SRV-ATTR:instance_name
    log "console log of $SERVER:"
    openstack console log show "$SERVER" | tail -20
}

# ---------------------------------------------------------------------------- commands
SERVICES=(ovsdb-server ovs-vswitchd rabbitmq keystone glance-api placement-api nova-api
          nova-metadata nova-conductor nova-scheduler nova-lxd-backend nova-compute neutron-api
          neutron-rpc-server neutron-periodic-workers neutron-openvswitch-agent neutron-dhcp-agent neutron-metadata-agent)

cmd_start() {
    "$AIO/install.sh"
    render
    admin_env
    local databases
    init_databases & databases=$!
    start_ovs
    start_rabbitmq
    wait "$databases" || exit 1
    start_keystone
    start_glance_placement
    wait_http http://127.0.0.1:9292
    wait_http http://127.0.0.1:8778
    start_neutron
    start_nova
    content
    log "the cloud is up: OS_CLIENT_CONFIG_FILE=$AIO_ROOT/clouds.yaml openstack --os-cloud aio ..."
}

cmd_up() {
    cmd_start
    boot_demo
}

cmd_status() {
    local name state rc=0
    for name in "${SERVICES[@]}"; do
        if running "$name"; then state="running (pid $(cat "$AIO_RUN/$name.pid"))"
        else state=stopped; rc=3; fi
        printf '%-28s %s\n' "$name" "$state"
    done
    return $rc
}

# processes the agents started that left their session (dnsmasq, haproxy): by their PID files
stop_agent_children() {
    local f pid
    for f in "$AIO_DATA"/neutron/external/pids/*.pid* "$AIO_DATA"/neutron/dhcp/*/pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && log "stopped agent child pid $pid ($f)"
        rm -f "$f"
    done
}

cmd_down() {
    local name services=()
    # the OpenStack services together, then what they stood on: the backend (and its
    # containers), the broker, the virtual switch
    for name in "${SERVICES[@]}"; do
        case $name in ovsdb-server|ovs-vswitchd|rabbitmq|nova-lxd-backend) ;; *) services+=("$name") ;; esac
    done
    stop "${services[@]}"
    stop_agent_children
    stop_backend
    stop_rabbitmq
    remove_network
    stop ovs-vswitchd
    stop ovsdb-server
}

# containers stop with their backend (it leaves them running otherwise, by design)
stop_backend() {
    running nova-lxd-backend || { rm -f "$AIO_RUN/nova-lxd-backend.pid"; return 0; }
    AIO_BACKEND=$AIO_DATA/backend "$BIN/python" - <<'EOF' || true
import os, pylxd
client = pylxd.Client(endpoint=os.path.join(os.environ['AIO_BACKEND'], 'unix.socket'))
for c in client.instances.all():
    if c.status != 'Stopped':
        c.stop(force=True, wait=True)
EOF
    stop nova-lxd-backend
    "$BIN/python" -c 'import sys; from nova_lxd.backend import lxcfs; lxcfs.stop(sys.argv[1])' \
        "$AIO_DATA/backend" 2>/dev/null || true
}

stop_rabbitmq() {
    running rabbitmq || { rm -f "$AIO_RUN/rabbitmq.pid"; return 0; }
    rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -q stop "$AIO_DATA/rabbitmq/rabbit.pid" || true
    stop rabbitmq
    # epmd, which the broker started, is its own daemon
    rabbit_env epmd -kill >/dev/null 2>&1 || true
}

# the OVS ports of Neutron's namespaces and the containers' veths, then the namespaces
remove_network() {
    local ns br port
    if running ovsdb-server; then
        for br in $(ovs-vsctl --db="$OVS_DB" --timeout=10 list-br 2>/dev/null); do
            for port in $(ovs-vsctl --db="$OVS_DB" --timeout=10 list-ports "$br"); do
                ip link del "$port" 2>/dev/null || true
            done
            ovs-vsctl --db="$OVS_DB" --timeout=10 del-br "$br" || true
        done
    fi
    for ns in $(ip netns list | awk '/^qdhcp-/ {print $1}'); do
        ip netns delete "$ns" && log "removed namespace $ns"
    done
}

cmd_purge() {
    cmd_down
    "$BIN/python" -c 'import sys; from nova_lxd.backend.storage.system import unmount_tree; unmount_tree(sys.argv[1])' \
        "$AIO_DATA/backend" 2>/dev/null || true
    rm -rf "$AIO_ROOT"
    log "removed $AIO_ROOT"
}

case ${1:-} in
    up) cmd_up ;;
    start) cmd_start ;;
    status) cmd_status ;;
    down) cmd_down ;;
    purge) cmd_purge ;;
    restart) shift; stop "$@"; cmd_start ;;
    tempest) shift; exec "$AIO/tempest.sh" "$@" ;;
    _rabbit_env) shift; rabbit_env "$@" ;;
    *) echo "usage: $0 up|start|status|restart|down|purge|tempest" >&2; exit 2 ;;
esac
