"""Create/start/snapshot/stop/delete cycles with failures injected at random steps leave nothing.

The injected failures are requests the daemon must refuse (bad config, bad action, bad snapshot
name, unknown key) sent at a random step of each cycle.

NOVA_LXD_LEAK_CYCLES sets the count (20 by default; the issue's full run is 200). Everything is
scoped to a private daemon: its mounts, its loop devices, its containers' cgroups, dnsmasq processes
of its data dir, its files and its database rows; and its resident memory.
"""
import os
import random
import sqlite3
import subprocess

import pylxd
import pytest

from tests.backend_fixture import BackendDaemon
from tests.functional.backend.busybox_rootfs import create_busybox

CYCLES = int(os.environ.get('NOVA_LXD_LEAK_CYCLES', '20'))
STEPS = ['create', 'start', 'snapshot', 'stop', 'delete']
RSS_GROWTH_LIMIT_KIB = 48 * 1024


@pytest.fixture
def own_backend():
    daemon = BackendDaemon()
    daemon.start()
    yield daemon
    daemon.destroy()


def _footprint(daemon, prefix):
    """What the daemon holds on the host for instances whose names start with prefix."""
    with open('/proc/mounts') as f:
        mounts = sorted(line.split()[1] for line in f if daemon.data_dir in line)
    loops = subprocess.run(['losetup', '-l', '-n', '-O', 'NAME,BACK-FILE'], capture_output=True,
                           text=True).stdout
    loops = sorted(line for line in loops.splitlines() if daemon.data_dir in line)
    cgroups = sorted(name for controller in ('memory', 'pids', 'cpu', 'devices')
                     for name in os.listdir('/sys/fs/cgroup/' + controller)
                     if prefix in name)
    dnsmasq = sorted(pid for pid in os.listdir('/proc') if pid.isdigit()
                     and _cmdline(pid).startswith('dnsmasq') and daemon.data_dir in _cmdline(pid))
    files = []
    for root, dirs, names in os.walk(daemon.data_dir):
        files += [os.path.join(root, n) for n in dirs + names if prefix in n]
    db = sqlite3.connect(os.path.join(daemon.data_dir, 'nova-lxd.db'))
    rows = db.execute('SELECT kind, name FROM resources WHERE name LIKE ? OR doc LIKE ?',
                      (prefix + '%', '%' + prefix + '%')).fetchall()
    db.close()
    return {'mounts': mounts, 'loops': loops, 'cgroups': cgroups, 'dnsmasq': dnsmasq,
            'files': files, 'rows': rows}


def _cmdline(pid):
    try:
        with open('/proc/%s/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def _rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        return int(next(line for line in f if line.startswith('VmRSS:')).split()[1])


def _inject(client, name, step, rng):
    """A failure at `step`: a request the daemon must refuse without side effects."""
    if step == 'create':
        with pytest.raises(pylxd.exceptions.LXDAPIException):
            client.instances.create({'name': name + '-bad', 'source': {'type': 'none'},
                                     'config': {'limits.memory': 'lots'}}, wait=True)
    elif step == 'start':
        with pytest.raises(pylxd.exceptions.LXDAPIException):
            client.api.instances[name].state.put(json={'action': 'explode'})
    elif step == 'snapshot':
        with pytest.raises(pylxd.exceptions.LXDAPIException):
            client.instances.get(name).snapshots.create('bad/name', wait=True)
    else:
        with pytest.raises(pylxd.exceptions.LXDAPIException):
            client.api.instances[name].patch(json={'config': {'no.such.key': '1'}})


def _cycle(client, backend, name, rng):
    fail_at = rng.choice(STEPS)
    if fail_at == 'create':
        _inject(client, name, 'create', rng)
    inst = create_busybox(client, backend, name)
    for step in STEPS[1:]:
        if step == fail_at:
            _inject(client, name, step, rng)
        if step == 'start':
            inst.start(wait=True)
        elif step == 'snapshot':
            inst.snapshots.create('s1', wait=True)
        elif step == 'stop':
            inst.sync()
            if inst.status == 'Running':
                inst.stop(force=True, wait=True)
        else:
            inst.delete(wait=True)


def test_cycles_leave_nothing_behind(own_backend):
    client = own_backend.client()
    prefix = 'leak%s-' % os.getpid()
    rng = random.Random(20261122)
    pid = own_backend.process.pid
    empty = _footprint(own_backend, prefix)     # the pool's mount and loop, lxcfs: kept
    assert not (empty['cgroups'] or empty['files'] or empty['rows']), empty
    warmup = max(2, CYCLES // 10)
    for i in range(CYCLES):
        if i == warmup:
            rss_after_warmup = _rss_kib(pid)
        _cycle(client, own_backend, '%s%d' % (prefix, i), rng)
    assert client.instances.all() == []
    left = _footprint(own_backend, prefix)
    assert left == empty, left
    assert _rss_kib(pid) - rss_after_warmup < RSS_GROWTH_LIMIT_KIB
