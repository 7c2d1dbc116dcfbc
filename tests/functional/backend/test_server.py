"""The daemon's server endpoints, through pylxd and the stock `lxc` client."""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pylxd
import pytest

from tests.backend_fixture import BackendDaemon


def test_pylxd_connects_and_is_trusted(client):
    assert client.trusted
    info = client.host_info
    assert info['api_version'] == '1.0'
    assert info['environment']['server'] == 'nova-lxd'
    assert 'BEGIN CERTIFICATE' in info['environment']['certificate']


def test_root_lists_api_versions(client):
    assert client.api._api_endpoint.endswith('/1.0')
    body = client.api.session.get(client.api._api_endpoint[:-4]).json()
    assert body['metadata'] == ['/1.0']


def test_unknown_path_is_lxd_error(client):
    with pytest.raises(pylxd.exceptions.NotFound):
        client.api.nothing.get()
    resp = client.api.session.get(client.api._api_endpoint + '/nothing')
    body = resp.json()
    assert resp.status_code == 404
    assert body['type'] == 'error' and body['error_code'] == 404


def test_server_config_roundtrip_and_refusal(client):
    client.api.patch(json={'config': {'user.owner': 'tests'}})
    assert client.api.get().json()['metadata']['config']['user.owner'] == 'tests'
    resp = client.api.session.patch(client.api._api_endpoint,
                                    data=json.dumps({'config': {'no.such.key': '1'}}))
    assert resp.status_code == 400
    assert 'no.such.key' in resp.json()['error']
    client.api.patch(json={'config': {'user.owner': ''}})
    assert 'user.owner' not in client.api.get().json()['metadata']['config']


def test_trust_password_is_stored_hashed(backend, client):
    client.api.patch(json={'config': {'core.trust_password': 'sekrit'}})
    assert client.api.get().json()['metadata']['config']['core.trust_password'] is True
    with open(os.path.join(backend.data_dir, 'nova-lxd.db'), 'rb') as f:
        assert b'sekrit' not in f.read()
    client.api.patch(json={'config': {'core.trust_password': ''}})


def test_stock_lxc_client_reads_server_info(backend):
    out = subprocess.run(['lxc', 'info'], env=dict(os.environ, LXD_DIR=backend.data_dir),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert 'server: nova-lxd' in out.stdout


def test_sigterm_stops_cleanly_and_removes_socket():
    daemon = BackendDaemon()
    try:
        daemon.start()
        daemon.stop(signal.SIGTERM)
        assert not os.path.exists(daemon.socket)
    finally:
        daemon.destroy()


def test_a_daemon_that_dies_while_starting_leaves_nothing():
    daemon = BackendDaemon(extra_args=['--no-such-option'])
    with pytest.raises(RuntimeError, match='backend exited'):
        daemon.start()
    assert daemon.process is None and not os.path.exists(daemon.data_dir)


def _get_on(sock):
    """One keep-alive GET /1.0 on an open unix-socket connection; the reply's status line."""
    sock.sendall(b'GET /1.0 HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n')
    reply = b''
    while b'\r\n\r\n' not in reply:
        reply += sock.recv(65536)
    head, _, body = reply.partition(b'\r\n\r\n')
    length = int(re.search(rb'(?i)content-length: *(\d+)', head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b'\r\n', 1)[0]


def test_idle_connections_are_closed_after_keepalive_timeout(backend):
    """An idle client connection (and what the daemon holds for it) lasts keepalive_timeout."""
    daemon = BackendDaemon(config={'keepalive_timeout': 1})
    try:
        client = daemon.start()
        with socket.socket(socket.AF_UNIX) as short, socket.socket(socket.AF_UNIX) as default:
            short.connect(daemon.socket)
            default.connect(backend.socket)     # the shared daemon: the default, 30 s
            assert _get_on(short).endswith(b'200 OK')
            assert _get_on(default).endswith(b'200 OK')
            time.sleep(2.5)
            short.settimeout(5)
            assert short.recv(1) == b''         # closed by the daemon
            assert _get_on(default).endswith(b'200 OK')     # still open
        # pylxd finds its pooled connection closed and opens another
        assert client.api.get().json()['metadata']['api_version'] == '1.0'
        time.sleep(2.5)
        assert client.api.get().json()['metadata']['api_version'] == '1.0'
    finally:
        daemon.destroy()


def test_the_daemon_makes_cgroup_moves_cheap(backend):
    """Started, it has turned on cgroup2's favordynmods (the host's; see backend/cgroups.py).

    Another worker's daemon may just have started its lxcfs, whose cgroup2 mount resets the
    option until that daemon sets it again: a moment, so the check looks for a few seconds.
    """
    from nova_lxd.backend import cgroups
    deadline = time.monotonic() + 5
    mount = cgroups.cgroup2_mount()
    while mount and cgroups.OPTION not in mount[1] and time.monotonic() < deadline:
        time.sleep(0.05)
        mount = cgroups.cgroup2_mount()
    assert mount is not None, 'this host mounts cgroup2 (ARCHITECTURE.md)'
    assert cgroups.OPTION in mount[1], mount
