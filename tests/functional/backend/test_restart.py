"""Daemon restarts with containers running: they keep running and are reconciled afterwards."""
import asyncio
import concurrent.futures
import json
import os
import queue
import random
import signal
import socket
import sqlite3
import ssl
import time
import subprocess
import threading

import aiohttp
import pytest

from nova_lxd.backend.instances import monitor
from tests.backend_fixture import BackendDaemon
from tests.functional.backend import netns
from tests.functional.backend.busybox_rootfs import attach, create_busybox, unique


@pytest.fixture
def own_backend():
    daemon = BackendDaemon()
    daemon.start()
    yield daemon
    daemon.destroy()


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_containers_survive_daemon_restart(own_backend, sig):
    client = own_backend.client()
    running = create_busybox(client, own_backend, unique('run'))
    stopped = create_busybox(client, own_backend, unique('stop'))
    vanished = create_busybox(client, own_backend, unique('gone'))
    running.start(wait=True)
    vanished.start(wait=True)
    pid = running.state().pid
    with open(os.path.join(own_backend.data_dir, 'lxcfs.pid')) as f:
        lxcfs_pid = int(f.read())

    own_backend.stop(sig)
    assert _alive(pid)                          # the container does not depend on the daemon
    assert _alive(lxcfs_pid)                    # nor does its lxcfs
    assert attach(own_backend, running.name, 'hostname').strip() == running.name
    # behind the daemon's back, one container goes away
    subprocess.run(['lxc-stop', '-k', '-P', os.path.join(own_backend.data_dir, 'containers'),
                    '-n', vanished.name], check=True)

    client = own_backend.start()
    assert client.instances.get(running.name).status == 'Running'
    assert client.instances.get(running.name).state().pid == pid
    assert client.instances.get(stopped.name).status == 'Stopped'
    gone = client.instances.get(vanished.name)
    assert gone.status == 'Stopped'
    assert gone.config['volatile.last_state.power'] == 'STOPPED'
    with open(os.path.join(own_backend.data_dir, 'lxcfs.pid')) as f:
        assert int(f.read()) == lxcfs_pid       # adopted, not restarted
    # everything is still manageable
    client.instances.get(running.name).stop(wait=True)
    gone.start(wait=True)
    assert client.instances.get(vanished.name).status == 'Running'


def test_lxcfs_restarted_when_it_dies(own_backend):
    with open(os.path.join(own_backend.data_dir, 'lxcfs.pid')) as f:
        old = int(f.read())
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    new = old
    while time.monotonic() < deadline and new == old:
        time.sleep(0.2)
        try:
            with open(os.path.join(own_backend.data_dir, 'lxcfs.pid')) as f:
                new = int(f.read())
        except ValueError:
            pass
    assert new != old and _alive(new)
    client = own_backend.client()
    inst = create_busybox(client, own_backend, config={'limits.memory': '64MiB'})
    inst.start(wait=True)
    meminfo = attach(own_backend, inst.name, 'cat', '/proc/meminfo')
    assert 'MemTotal:          65536 kB' in meminfo


def test_interrupted_create_is_cleaned_up(own_backend):
    """A row left half-created by a crash disappears at the next start, with its volume."""
    client = own_backend.client()
    inst = create_busybox(client, own_backend, unique('half'))
    own_backend.stop(signal.SIGKILL)
    db = sqlite3.connect(os.path.join(own_backend.data_dir, 'nova-lxd.db'))
    doc = json.loads(db.execute("SELECT doc FROM resources WHERE kind='instance' AND name=?",
                                (inst.name,)).fetchone()[0])
    doc['_creating'] = True
    db.execute("UPDATE resources SET doc=? WHERE kind='instance' AND name=?",
               (json.dumps(doc), inst.name))
    db.commit()
    db.close()
    client = own_backend.start()
    assert not client.instances.exists(inst.name)
    for sub in ('storage-pools', 'containers', 'logs'):
        for _, dirs, _ in os.walk(os.path.join(own_backend.data_dir, sub)):
            assert inst.name not in dirs


def test_autostart_after_containers_went_away(own_backend):
    """As after a host reboot: boot.autostart instances come back, others stay stopped."""
    client = own_backend.client()
    auto = create_busybox(client, own_backend, unique('auto'),
                          config={'boot.autostart': 'true'})
    manual = create_busybox(client, own_backend, unique('manual'))
    auto.start(wait=True)
    manual.start(wait=True)
    own_backend.stop(signal.SIGTERM)
    for inst in (auto, manual):
        subprocess.run(['lxc-stop', '-k', '-P', os.path.join(own_backend.data_dir, 'containers'),
                        '-n', inst.name], check=True)
    client = own_backend.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and client.instances.get(auto.name).status != 'Running':
        time.sleep(0.1)
    assert client.instances.get(auto.name).status == 'Running'
    assert client.instances.get(manual.name).status == 'Stopped'


def _listening_sockets(pid):
    """The inodes of the listening sockets the process holds: unix (flag __SO_ACCEPTCON), TCP."""
    listening = set()
    with open('/proc/net/unix') as f:
        listening |= {line.split()[6] for line in f if line.split()[3] == '00010000'}
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        with open(table) as f:
            listening |= {line.split()[9] for line in f if line.split()[3] == '0A'}
    owned = set()
    for fd in os.listdir('/proc/%d/fd' % pid):
        target = os.readlink('/proc/%d/fd/%s' % (pid, fd))
        if target.startswith('socket:['):
            owned.add(target[8:-1])
    return listening & owned


def _https_get(port):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE    # its own certificate
    with socket.create_connection(('127.0.0.1', port), timeout=30) as raw:
        with context.wrap_socket(raw) as sock:
            sock.sendall(b'GET /1.0 HTTP/1.1\r\nHost: lxd\r\nConnection: close\r\n\r\n')
            return sock.recv(64)


def _child_states(pid):
    out = subprocess.run(['ps', '-o', 'pid=,stat=', '--ppid', str(pid)],
                         capture_output=True, text=True).stdout
    return dict(line.split() for line in out.splitlines())


@pytest.fixture
def quick_backend():
    """Connections idle for 1 s are closed, so the daemon is soon quiet enough to re-execute."""
    daemon = BackendDaemon(config={'keepalive_timeout': 1})
    daemon.start()
    yield daemon
    netns.sweep_test_networks(daemon.client())
    daemon.destroy()


class _EventListener:
    """A lifecycle events websocket on the unix socket, read on a thread: every message kept."""

    def __init__(self, path):
        self._messages = queue.Queue()
        connected = threading.Event()
        threading.Thread(target=asyncio.run, args=(self._listen(path, connected),),
                         daemon=True).start()
        assert connected.wait(30)

    async def _listen(self, path, connected):
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
            async with session.ws_connect('http://lxd/1.0/events?type=lifecycle') as ws:
                connected.set()
                async for message in ws:
                    self._messages.put((message.type, message.data))
                self._messages.put(('closed', ws.close_code))

    def next(self, timeout=60):
        kind, data = self._messages.get(timeout=timeout)
        return json.loads(data)['metadata']['action'] if kind == aiohttp.WSMsgType.TEXT else (
            kind, data)


def _wait_for_log(daemon, text, count=1, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and daemon.log().count(text) < count:
        time.sleep(0.05)
    assert daemon.log().count(text) >= count, text


def test_sighup_reexecutes_in_place_keeping_sockets_containers_and_children(quick_backend):
    """Same PID, same listening socket, containers, dnsmasq and lxcfs untouched; no refusal."""
    daemon = quick_backend
    client = daemon.client()
    running = create_busybox(client, daemon, unique('keep'))
    running.start(wait=True)
    init = running.state().pid
    assert running.execute(['true']).exit_code == 0     # the attach helper is now our child
    network = 'nlxtn%05x' % random.getrandbits(20)
    client.networks.create(network)
    dnsmasq = [p for p, cmd in netns.dnsmasq_pids() if '--interface=%s ' % network in cmd + ' ']
    pid = daemon.process.pid
    with open(os.path.join(daemon.data_dir, 'lxcfs.pid')) as f:
        lxcfs = int(f.read())
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    client.api.patch(json={'config': {'core.https_address': '127.0.0.1:%d' % port}})
    listening = _listening_sockets(pid)
    assert len(listening) == 2                          # the unix socket and HTTPS
    client.api.session.close()

    events = _EventListener(daemon.socket)
    os.kill(pid, signal.SIGHUP)
    # quiet once the operations are forgotten (5 s) and idle connections closed (1 s)
    _wait_for_log(daemon, 'Re-executing as asked')
    # the new image is starting: a client connecting now waits and is served, never refused
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(daemon.socket)
        sock.sendall(b'GET /1.0 HTTP/1.1\r\nHost: lxd\r\nConnection: close\r\n\r\n')
        assert sock.recv(64).startswith(b'HTTP/1.1 200')
    reexecuted = 'serving on %s (re-executed, sockets inherited)' % daemon.socket
    _wait_for_log(daemon, reexecuted)
    # the events listener was handed over: the new image's events come on the same stream,
    # and so again after a second re-exec (this time from the image that adopted it)
    profile = unique('evt')
    daemon.client().profiles.create(profile)
    assert events.next() == 'profile-created'
    os.kill(pid, signal.SIGHUP)
    _wait_for_log(daemon, reexecuted, count=2)
    daemon.client().profiles.get(profile).delete()
    assert events.next() == 'profile-deleted'
    assert daemon.process.poll() is None and _listening_sockets(pid) == listening
    assert _https_get(port).startswith(b'HTTP/1.1 200')     # TLS set up again on the same socket

    client = daemon.client()
    assert client.instances.get(running.name).state().pid == init
    assert [p for p, cmd in netns.dnsmasq_pids()
            if '--interface=%s ' % network in cmd + ' '] == dnsmasq
    with open(os.path.join(daemon.data_dir, 'lxcfs.pid')) as f:
        assert int(f.read()) == lxcfs and _alive(lxcfs)
    # the old image's attach helper ended with it and is reaped, not left a zombie
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and 'Z' in ''.join(_child_states(pid).values()):
        time.sleep(0.2)
    assert 'Z' not in ''.join(_child_states(pid).values())
    # and everything is still manageable
    assert running.execute(['hostname']).stdout.strip() == running.name
    client.networks.get(network).delete()
    assert not any('--interface=%s ' % network in cmd + ' ' for _, cmd in netns.dnsmasq_pids())
    client.instances.get(running.name).stop(wait=True)


def test_a_container_stopping_by_itself_around_a_reexec_is_reported_on_the_kept_stream(
        quick_backend):
    """Stopped while the daemon cannot look, a re-exec asked for: reported on the kept stream.

    Whichever image notices it (the old one's monitor watch, the new one's reconciliation),
    the listener's stream is handed over, never closed.
    """
    daemon = quick_backend
    inst = create_busybox(daemon.client(), daemon, unique('gap'))
    inst.start(wait=True)
    inst.client.api.session.close()
    events = _EventListener(daemon.socket)
    pid = daemon.process.pid
    lxcpath = os.path.join(daemon.data_dir, 'containers')
    os.kill(pid, signal.SIGSTOP)
    try:
        attach(daemon, inst.name, 'poweroff')
        deadline = time.monotonic() + 30
        while inst.name in monitor.running_pids(lxcpath) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert inst.name not in monitor.running_pids(lxcpath)
        os.kill(pid, signal.SIGHUP)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert events.next() in ('instance-shutdown', 'instance-stopped')
    _wait_for_log(daemon, 'serving on %s (re-executed, sockets inherited)' % daemon.socket)
    assert daemon.client().instances.get(inst.name).status == 'Stopped'
    daemon.client().profiles.create(unique('after'))      # and the stream goes on
    assert events.next() == 'profile-created'


def test_no_reexec_while_an_operation_runs(quick_backend):
    daemon = quick_backend
    client = daemon.client()
    inst = create_busybox(client, daemon, unique('busy'))
    inst.start(wait=True)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        long_exec = pool.submit(inst.execute, ['sleep', '9'])
        time.sleep(1)
        os.kill(daemon.process.pid, signal.SIGHUP)
        time.sleep(6)                  # the start operation is forgotten; the exec runs on
        assert 'Re-executing as asked' not in daemon.log()
        assert long_exec.result(timeout=30).exit_code == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and 're-executed' not in daemon.log():
        time.sleep(0.2)
    assert 'serving on %s (re-executed, sockets inherited)' % daemon.socket in daemon.log()
    assert daemon.client().instances.get(inst.name).status == 'Running'
