"""Daemon restarts with containers running: they keep running and are reconciled afterwards."""
import json
import os
import signal
import sqlite3
import time
import subprocess

import pytest

from tests.backend_fixture import BackendDaemon
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
