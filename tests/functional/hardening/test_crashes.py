"""SIGKILL the daemon right after it accepted a create, start, snapshot or publish; restart it.

Afterwards: the containers that were running still run, every instance, snapshot and image the
API lists is whole and nothing half-made is on disk or listed, and the interrupted operation is
reported failed (the restarted daemon logs it as interrupted; it is never left running).

Migration: the source or the target daemon is SIGKILLed mid-transfer of a stopped container with
a snapshot and data; the other side fails its operation and cleans up, the restarted one reports
its operation interrupted; the source's instance is whole and usable (and migrates afterwards),
the target has no trace of it, no staging volume, mount or database row is left on either host.
"""
import glob
import os
import signal
import sqlite3
import shutil
import time

import pylxd
import pytest

from tests.backend_fixture import BackendDaemon
from tests.functional.backend.busybox_rootfs import attach, create_busybox, unique


@pytest.fixture
def own_backend():
    daemon = BackendDaemon()
    daemon.start()
    yield daemon
    daemon.destroy()


def _submit(client, action, target):
    """Send one async request; return its operation id."""
    api = client.api
    if action == 'create':
        resp = api.instances.post(json={'name': target, 'source': {'type': 'none'}})
    elif action == 'start':
        resp = api.instances[target].state.put(json={'action': 'start'})
    elif action == 'snapshot':
        resp = api.instances[target].snapshots.post(json={'name': 'snap0'})
    else:
        resp = api.images.post(json={'source': {'type': 'instance', 'name': target}})
    body = resp.json()
    assert body['type'] == 'async', body
    return body['metadata']['id']


def _finished(client, action, target):
    if action == 'create':
        return client.instances.exists(target)
    if action == 'start':
        return client.instances.get(target).status == 'Running'
    if action == 'snapshot':
        return 'snap0' in {s.name for s in client.instances.get(target).snapshots.all()}
    return bool(client.images.all())     # the only image this daemon has is the published one


def _entries(path):
    return set(os.listdir(path)) if os.path.isdir(path) else set()


def _assert_consistent(daemon, client):
    names = {inst.name for inst in client.instances.all()}
    for inst in client.instances.all():
        assert inst.status in ('Running', 'Stopped'), (inst.name, inst.status)
        inst.state()
        on_disk = _entries(os.path.join(daemon.data_dir, 'storage-pools', 'default',
                                        'containers-snapshots', inst.name))
        assert on_disk <= {snap.name for snap in inst.snapshots.all()}, on_disk
    pool = os.path.join(daemon.data_dir, 'storage-pools', 'default')
    assert _entries(os.path.join(pool, 'containers')) == names
    assert _entries(os.path.join(daemon.data_dir, 'containers')) <= names
    fingerprints = {image.fingerprint for image in client.images.all()}
    for image in client.images.all():
        image.export().read(1)      # its files are whole enough to export
    assert {e.split('.', 1)[0] for e in _entries(os.path.join(daemon.data_dir, 'images'))} \
        <= fingerprints
    assert _entries(os.path.join(pool, 'images')) <= fingerprints


@pytest.mark.parametrize('action', ['create', 'start', 'snapshot', 'publish'])
def test_sigkill_during_an_operation(own_backend, action):
    client = own_backend.client()
    bystander = create_busybox(client, own_backend, unique('by'))
    bystander.start(wait=True)
    init_pid = bystander.state().pid
    target = unique(action[:4])
    if action != 'create':
        create_busybox(client, own_backend, target)

    op_id = _submit(client, action, target)
    own_backend.stop(signal.SIGKILL)
    client = own_backend.start()

    # the running container was left alone and is still managed
    bystander = client.instances.get(bystander.name)
    assert bystander.status == 'Running' and bystander.state().pid == init_pid
    assert attach(own_backend, bystander.name, 'echo', 'alive') == 'alive\n'
    # the operation is never left running: either the kill came after it finished (its result
    # is all there) or the restarted daemon reports it failed
    interrupted = ('Operation %s' % op_id) in own_backend.log()
    if interrupted:
        assert 'Operation %s (' % op_id in own_backend.log() and \
            'was interrupted by a daemon restart: failed' in own_backend.log()
    else:
        assert _finished(client, action, target), '%s neither finished nor reported' % op_id
    resp = client.api.session.get(client.api._api_endpoint + '/operations/' + op_id)
    assert resp.status_code == 404 or resp.json()['metadata']['status'] != 'Running'
    assert all(op['status'] != 'Running'
               for ops in (client.api.operations.get(params={'recursion': 1}).json()['metadata']
                           or {}).values() for op in ops)
    _assert_consistent(own_backend, client)
    # and the interrupted target can be used or retried
    if action == 'create':
        if client.instances.exists(target):
            client.instances.get(target).delete(wait=True)
        client.instances.create({'name': target, 'source': {'type': 'none'}}, wait=True)
    elif action == 'snapshot':
        inst = client.instances.get(target)
        if 'snap0' not in {s.name for s in inst.snapshots.all()}:
            inst.snapshots.create('snap0', wait=True)
    elif action == 'start':
        inst = client.instances.get(target)
        if inst.status != 'Running':
            inst.start(wait=True)
        assert attach(own_backend, target, 'echo', 'up') == 'up\n'


# -- SIGKILL mid-migration ------------------------------------------------------------------------
# Two daemons trusting each other over HTTPS; a stopped container with a snapshot and data is
# pulled from host a (source) to host b (target). The daemons find `btrfs` and `tar` first in a
# directory of wrappers: while the wrappers' directory holds a file named `stop`, a volume sender
# (`btrfs send`, `tar -c`) stops itself (SIGSTOP) before it sends a byte, so the kill lands
# mid-transfer deterministically, however loaded the host (a test that raced to catch the sender
# lost the race under load): the target has reserved the instance and started receiving.
# Everything else runs the real program.

SENDER_WRAPPERS = {
    'btrfs': 'if [ "$1" = send ] && [ -e "${0%%/*}/stop" ]; then kill -STOP $$; fi\n'
             'exec %s "$@"\n',
    'tar': 'for a; do [ "$a" = -cf ] && [ -e "${0%%/*}/stop" ] && kill -STOP $$ && break; done\n'
           'exec %s "$@"\n',
}


@pytest.fixture(scope='module')
def hosts(tmp_path_factory):
    from tests.functional.backend.migration_hosts import Hosts
    wrappers = tmp_path_factory.mktemp('sender-wrappers')
    for program, body in SENDER_WRAPPERS.items():
        path = wrappers / program
        path.write_text('#!/bin/sh\n' + body % shutil.which(program))
        path.chmod(0o755)
    pair = Hosts(env={'PATH': '%s:%s' % (wrappers, os.environ['PATH'])})
    pair.stop_senders = wrappers / 'stop'
    yield pair
    pair.destroy()


def _children(pid):
    found = []
    for entry in os.listdir('/proc'):
        try:
            with open('/proc/%s/stat' % entry) as f:
                fields = f.read().rsplit(')', 1)[1].split()
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                argv = f.read().split(b'\0')
        except (OSError, ValueError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0], [a.decode(errors='replace') for a in argv]))
    return found


def _stopped_sender(daemon, timeout=180):
    """The pid of the daemon's volume sender, once it has stopped itself (a wrapper above)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, state, argv in _children(daemon.process.pid):
            if state == 'T' and os.path.basename(argv[1] if len(argv) > 1 else '') in \
                    SENDER_WRAPPERS:
                return pid
        time.sleep(0.01)
    raise AssertionError('the source never started sending; log:\n' + daemon.log())


def _mounts(daemon):
    with open('/proc/mounts') as f:
        return sorted(line.split()[1] for line in f if daemon.data_dir in line)


def _rows(daemon, name):
    db = sqlite3.connect('file:%s?mode=ro' % os.path.join(daemon.data_dir, 'nova-lxd.db'),
                         uri=True)
    try:
        return db.execute('SELECT kind, name FROM resources WHERE name LIKE ?',
                          (name + '%',)).fetchall()
    finally:
        db.close()


def _pool_entries(daemon, name):
    pools = os.path.join(daemon.data_dir, 'storage-pools', '*')
    return glob.glob(os.path.join(pools, 'containers', name)) + \
        glob.glob(os.path.join(pools, 'containers-snapshots', name, '*')) + \
        glob.glob(os.path.join(pools, 'containers', '.migrate-*'))


def _no_operation_running(client):
    ops = client.api.operations.get(params={'recursion': 1}).json()['metadata'] or {}
    return all(op['status'] != 'Running' for group in ops.values() for op in group)


def _wait_failed(client, op_id):
    """The operation ended in failure (or was never known to this daemon's new life)."""
    try:
        client.operations.wait_for_operation(op_id)
    except pylxd.exceptions.NotFound:
        return 'gone'
    except pylxd.exceptions.LXDAPIException as exc:
        return str(exc)
    raise AssertionError('operation %s succeeded' % op_id)


@pytest.mark.parametrize('killed', ['source', 'target'])
def test_sigkill_during_migration(hosts, killed):
    a, b = hosts.a, hosts.b
    name = unique('migkill')
    inst = create_busybox(a.local, a.daemon, name)
    root = glob.glob(os.path.join(a.daemon.data_dir, 'storage-pools', '*', 'containers', name,
                                  'rootfs'))[0]
    owner = os.stat(os.path.join(root, 'root'))
    with open(os.path.join(root, 'root', 'data'), 'w') as f:
        f.write('before')
    inst.snapshots.create('s1', wait=True)
    with open(os.path.join(root, 'root', 'data'), 'w') as f:
        f.write('after')
    with open(os.path.join(root, 'root', 'blob'), 'wb') as f:
        for _ in range(64):
            f.write(b'\0' * (1 << 20))
    for path in ('data', 'blob'):
        os.chown(os.path.join(root, 'root', path), owner.st_uid, owner.st_gid)
    mounts = {a: _mounts(a.daemon), b: _mounts(b.daemon)}
    source_rows = _rows(a.daemon, name)

    hosts.stop_senders.touch()
    src = a.remote.api.instances[name].post(json={'migration': True}).json()
    source_op = src['metadata']['id']
    target_op = b.local.api.instances.post(json={'name': name, 'source': {
        'type': 'migration', 'mode': 'pull', 'certificate': a.certificate(),
        'operation': a.url + src['operation'],
        'secrets': src['metadata']['metadata']}}).json()['metadata']['id']
    try:
        sender = _stopped_sender(a.daemon)
    finally:
        hosts.stop_senders.unlink()
    try:
        # mid-transfer: the target has reserved the instance and is receiving
        assert _rows(b.daemon, name), 'the target reserved nothing'
        victim, survivor = (a, b) if killed == 'source' else (b, a)
        survivor_op, victim_op = (target_op, source_op) if killed == 'source' \
            else (source_op, target_op)
        victim.daemon.stop(signal.SIGKILL)
    finally:
        try:
            os.kill(sender, signal.SIGKILL if killed == 'source' else signal.SIGCONT)
        except ProcessLookupError:
            pass    # orphaned with its killed daemon, the kernel hung it up already
    # the survivor reports its side failed (the peer went away) and cleans up at once
    assert _wait_failed(survivor.local, survivor_op) != 'gone'
    victim.local = victim.daemon.start()
    # the restarted daemon reports its interrupted operation failed and never runs it again
    assert 'Operation %s (' % victim_op in victim.daemon.log()
    assert 'was interrupted by a daemon restart: failed' in victim.daemon.log()
    assert _wait_failed(victim.local, victim_op) == 'gone'
    for host in (a, b):
        assert _no_operation_running(host.local)

    # the target shows no half-made instance, on the API, in its pool or in its database
    assert not b.local.instances.exists(name)
    assert b.local.instances.all() == []
    assert _rows(b.daemon, name) == []
    # the source is whole: record, snapshot, data; nothing left of the transfer
    assert _rows(a.daemon, name) == source_rows
    assert _pool_entries(b.daemon, name) == []
    assert [os.path.basename(p) for p in _pool_entries(a.daemon, name)] == [name, 's1']
    for host in (a, b):
        assert _mounts(host.daemon) == mounts[host]
    moved = a.local.instances.get(name)
    assert moved.status == 'Stopped'
    assert [s.name for s in moved.snapshots.all()] == ['s1']
    # and usable: it starts, sees its data, and still migrates
    moved.start(wait=True)
    try:
        assert attach(a.daemon, name, 'cat', '/root/data') == 'after'
        assert attach(a.daemon, name, 'wc', '-c', '/root/blob').split()[0] == str(64 << 20)
    finally:
        moved.stop(force=True, wait=True)
    a.remote.instances.get(name).migrate(b.local, wait=True)
    assert b.local.instances.get(name).status == 'Stopped'
    b.local.instances.get(name).delete(wait=True)
    # pylxd's migrate() deletes the source without waiting for it
    deadline = time.monotonic() + 60
    while a.local.instances.exists(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not a.local.instances.exists(name)
