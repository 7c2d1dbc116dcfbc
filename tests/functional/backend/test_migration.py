"""Instance migration between two bundled daemons over HTTPS (pull and push), with pylxd and the
stock `lxc` client; refusals and failures leave the source untouched and nothing on the target."""
import glob
import json
import os
import sqlite3
import subprocess
import time

import pylxd
import pytest

from tests.functional.backend.busybox_rootfs import attach, create_busybox, unique
from tests.functional.backend.migration_hosts import Hosts


@pytest.fixture(scope='module')
def hosts():
    h = Hosts()
    yield h
    h.destroy()


@pytest.fixture
def container(hosts):
    """A stopped busybox container on host a with /root/data = v3 and snapshots s1 (v1), s2 (v2)."""
    made = []

    def make(name=None, snapshots=True):
        # busybox init ignores SIGPWR: a clean stop would wait the whole shutdown timeout
        inst = create_busybox(hosts.a.local, hosts.a.daemon, name=name or unique('mig'),
                              config={'boot.host_shutdown_timeout': '1'})
        made.append(inst.name)
        for version in ('v1', 'v2', 'v3'):
            if version == 'v3' or snapshots:
                write(hosts.a, inst.name, 'root/data', version)
            if version != 'v3' and snapshots:
                inst.snapshots.create('s' + version[1], wait=True)
        return inst
    yield make
    for host in (hosts.a, hosts.b):
        for name in made:
            remove(host, name)


def remove(host, name):
    try:
        inst = host.local.instances.get(name)
    except pylxd.exceptions.NotFound:
        return
    try:
        if inst.status != 'Stopped':
            inst.stop(force=True, wait=True)
        inst.delete(wait=True)
    except pylxd.exceptions.LXDAPIException:
        # pylxd's migrate() deletes the source without waiting: that delete may win
        assert wait_gone(host, name)


def pool_dirs(host, kind, name):
    return glob.glob(os.path.join(host.daemon.data_dir, 'storage-pools', '*', kind, name))


def rootfs(host, name, snapshot=None):
    if snapshot:
        found = glob.glob(os.path.join(host.daemon.data_dir, 'storage-pools', '*',
                                       'containers-snapshots', name, snapshot, 'rootfs'))
    else:
        found = glob.glob(os.path.join(host.daemon.data_dir, 'storage-pools', '*',
                                       'containers', name, 'rootfs'))
    assert len(found) == 1, found
    return found[0]


def write(host, name, path, text):
    target = os.path.join(rootfs(host, name), path)
    with open(target, 'w') as f:
        f.write(text)
    uid = os.stat(os.path.dirname(target)).st_uid
    os.chown(target, uid, uid)


def read(host, name, path, snapshot=None):
    with open(os.path.join(rootfs(host, name, snapshot), path)) as f:
        return f.read()


def subvolume_show(path):
    """The received UUID and flags of the btrfs subvolume at path."""
    out = subprocess.run(['btrfs', 'subvolume', 'show', path], capture_output=True, text=True,
                         check=True).stdout
    fields = dict(line.strip().split(':', 1) for line in out.splitlines()[1:] if ':' in line)
    return {k: fields[k].strip() for k in ('Received UUID', 'Flags')}


def wait_gone(host, name, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not host.local.instances.exists(name):
            return True
        time.sleep(0.1)
    return False


def db_names(host, kind, prefix):
    db = sqlite3.connect('file:%s?mode=ro' % os.path.join(host.daemon.data_dir, 'nova-lxd.db'),
                         uri=True)
    try:
        return [row[0] for row in db.execute(
            'SELECT name FROM resources WHERE kind = ? AND name LIKE ?', (kind, prefix + '%'))]
    finally:
        db.close()


def nothing_of(host, name):
    """No record, volume, snapshot volume or snapshot record of `name` on the host."""
    assert not host.local.instances.exists(name)
    assert db_names(host, 'instance', name) == []
    assert db_names(host, 'snapshot', name + '/') == []
    assert pool_dirs(host, 'containers', name) == []
    assert pool_dirs(host, 'containers-snapshots', name) in ([], [d for d in pool_dirs(
        host, 'containers-snapshots', name) if not os.listdir(d)])
    assert glob.glob(os.path.join(host.daemon.data_dir, 'storage-pools', '*', 'containers',
                                  '.migrate-*')) == []


# -- success ----------------------------------------------------------------------------------

def test_pylxd_migrate_stopped_container_with_two_snapshots(hosts, container):
    inst = container()
    name = inst.name
    source = hosts.a.remote.instances.get(name)
    source.migrate(hosts.b.local, wait=True)
    assert wait_gone(hosts.a, name)
    nothing_of(hosts.a, name)
    moved = hosts.b.local.instances.get(name)
    assert moved.status == 'Stopped'
    assert moved.config['boot.host_shutdown_timeout'] == '1'     # the config came along
    assert sorted(s.name for s in moved.snapshots.all()) == ['s1', 's2']
    assert read(hosts.b, name, 'root/data') == 'v3'
    assert read(hosts.b, name, 'root/data', 's1') == 'v1'
    assert read(hosts.b, name, 'root/data', 's2') == 'v2'
    # the received instance volume was moved into place writable, without the received UUID
    # that would let a later incremental stream take it for an unchanged parent
    volume = os.path.dirname(rootfs(hosts.b, name))
    assert subvolume_show(volume) == {'Received UUID': '-', 'Flags': '-'}
    assert subvolume_show(os.path.dirname(rootfs(hosts.b, name, 's1')))['Flags'] == 'readonly'
    assert glob.glob(os.path.join(os.path.dirname(volume), '.migrate-*')) == []
    # it runs there, and a restore brings back a snapshot's data
    moved.start(wait=True)
    assert attach(hosts.b.daemon, name, 'cat', '/root/data') == 'v3'
    moved.stop(force=True, wait=True)
    moved.restore_snapshot('s1', wait=True)
    assert read(hosts.b, name, 'root/data') == 'v1'


def test_pylxd_migrate_running_container_stateless_comes_back_running(hosts, container):
    inst = container(snapshots=False)
    name = inst.name
    inst.start(wait=True)
    attach(hosts.a.daemon, name, 'sh', '-c', 'echo written-while-running > /root/live')
    source = hosts.a.remote.instances.get(name)
    source.migrate(hosts.b.local, live=False, wait=True)
    assert wait_gone(hosts.a, name)
    moved = hosts.b.local.instances.get(name)
    assert moved.status == 'Running'
    assert attach(hosts.b.daemon, name, 'cat', '/root/live') == 'written-while-running\n'
    assert attach(hosts.b.daemon, name, 'cat', '/root/data') == 'v3'


def test_live_migration_is_refused_with_the_reason(hosts, container):
    inst = container(snapshots=False)
    inst.start(wait=True)
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        hosts.a.remote.instances.get(inst.name).migrate(hosts.b.local, live=True, wait=True)
    message = str(err.value)
    assert 'CRIU' in message and 'live: false' in message
    inst.sync()
    assert inst.status == 'Running'
    assert not hosts.b.local.instances.exists(inst.name)


def test_stopped_container_ignores_live(hosts, container):
    """As LXD: live only matters for a running container."""
    inst = container(snapshots=False)
    hosts.a.remote.instances.get(inst.name).migrate(hosts.b.local, live=True, wait=True)
    assert read(hosts.b, inst.name, 'root/data') == 'v3'


def test_lxc_move_pull_and_push_and_copy(hosts, container):
    inst = container()
    name = inst.name
    hosts.a.local.api.instances[name].patch(json={
        'profiles': ['default'], 'config': {'user.moved': 'yes'},
        'devices': {'scratch': {'type': 'disk', 'source': '/tmp', 'path': '/mnt'}}})
    out = hosts.lxc('move', 'hosta:%s' % name, 'hostb:')
    assert out.returncode == 0, out.stderr
    assert wait_gone(hosts.a, name)
    assert read(hosts.b, name, 'root/data', 's2') == 'v2'
    moved = hosts.b.local.instances.get(name)
    assert moved.config['user.moved'] == 'yes' and moved.profiles == ['default']
    assert moved.devices['scratch'] == {'type': 'disk', 'source': '/tmp', 'path': '/mnt'}
    # and back, in push mode, under a new name
    back = name + '-back'
    out = hosts.lxc('move', 'hostb:%s' % name, 'hosta:%s' % back, '--mode', 'push')
    assert out.returncode == 0, out.stderr
    try:
        assert not hosts.b.local.instances.exists(name)
        assert read(hosts.a, back, 'root/data') == 'v3'
        assert sorted(s.name for s in hosts.a.local.instances.get(back).snapshots.all()) == \
            ['s1', 's2']
        # a copy keeps the source; --instance-only leaves the snapshots behind
        out = hosts.lxc('copy', 'hosta:%s' % back, 'hostb:%s' % name, '--instance-only')
        assert out.returncode == 0, out.stderr
        assert read(hosts.a, back, 'root/data') == 'v3'
        assert read(hosts.b, name, 'root/data') == 'v3'
        assert hosts.b.local.instances.get(name).snapshots.all() == []
    finally:
        remove(hosts.a, back)


def test_lxc_copy_of_a_snapshot_to_another_server(hosts, container):
    inst = container()
    copy = inst.name + '-s1'
    out = hosts.lxc('copy', 'hosta:%s/s1' % inst.name, 'hostb:%s' % copy)
    try:
        assert out.returncode == 0, out.stderr
        assert read(hosts.b, copy, 'root/data') == 'v1'
        assert hosts.b.local.instances.get(copy).snapshots.all() == []
        assert read(hosts.a, inst.name, 'root/data', 's1') == 'v1'
    finally:
        remove(hosts.b, copy)


def test_lxc_move_running_container_stateless(hosts, container):
    inst = container(snapshots=False)
    name = inst.name
    inst.start(wait=True)
    out = hosts.lxc('move', 'hosta:%s' % name, 'hostb:')
    assert out.returncode != 0 and 'CRIU' in out.stderr, out.stderr   # stateful by default
    assert hosts.a.local.instances.get(name).status == 'Running'
    # a stateless copy (relayed by the client here): the source runs on, the copy is stopped
    copy = name + '-copy'
    out = hosts.lxc('copy', 'hosta:%s' % name, 'hostb:%s' % copy, '--stateless',
                    '--mode', 'relay')
    try:
        assert out.returncode == 0, out.stderr
        assert hosts.a.local.instances.get(name).status == 'Running'
        assert hosts.b.local.instances.get(copy).status == 'Stopped'
        assert read(hosts.b, copy, 'root/data') == 'v3'
    finally:
        remove(hosts.b, copy)
    out = hosts.lxc('move', 'hosta:%s' % name, 'hostb:', '--stateless')
    assert out.returncode == 0, out.stderr
    assert not hosts.a.local.instances.exists(name)
    assert hosts.b.local.instances.get(name).status == 'Running'
    assert attach(hosts.b.daemon, name, 'cat', '/root/data') == 'v3'


def _migration_source(hosts, name, **extra):
    op = hosts.a.remote.api.instances[name].post(json=dict({'migration': True}, **extra)).json()
    return {'type': 'migration', 'mode': 'pull', 'certificate': hosts.a.certificate(),
            'operation': hosts.a.url + op['operation'],
            'secrets': op['metadata']['metadata']}, op['operation']


def test_tar_stream_to_a_dir_pool_reshifts_the_id_map(hosts, container):
    """Target pool dir (no btrfs receive) and a privileged target: files are re-owned."""
    hosts.b.local.api.storage_pools.post(json={'name': 'dirpool', 'driver': 'dir'})
    try:
        inst = container()
        name = inst.name
        unprivileged_uid = os.stat(os.path.join(rootfs(hosts.a, name), 'bin/busybox')).st_uid
        assert unprivileged_uid != 0
        source, _ = _migration_source(hosts, name)
        hosts.b.local.instances.create({
            'name': name, 'source': source, 'config': {'security.privileged': 'true'},
            'devices': {'root': {'type': 'disk', 'path': '/', 'pool': 'dirpool'}}}, wait=True)
        assert '/storage-pools/dirpool/' in rootfs(hosts.b, name)
        assert read(hosts.b, name, 'root/data', 's1') == 'v1'
        assert read(hosts.b, name, 'root/data') == 'v3'
        assert os.stat(os.path.join(rootfs(hosts.b, name), 'bin/busybox')).st_uid == 0
        moved = hosts.b.local.instances.get(name)
        assert json.loads(moved.config['volatile.last_state.idmap']) == []
        # a copy: the source still has it
        assert read(hosts.a, name, 'root/data') == 'v3'
        remove(hosts.b, name)
    finally:
        hosts.b.local.api.storage_pools['dirpool'].delete()


# -- failures ---------------------------------------------------------------------------------

def _wait_op(host, op_url):
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        host.local.operations.wait_for_operation(op_url.split('/')[-1])
    return str(err.value)


def test_bad_secret_leaves_the_source_untouched_and_nothing_on_the_target(hosts, container):
    inst = container()
    source, _ = _migration_source(hosts, inst.name)
    source['secrets'] = {'control': 'a' * 64, 'fs': 'b' * 64}
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        hosts.b.local.instances.create({'name': inst.name, 'source': source}, wait=True)
    assert 'secret' in str(err.value)
    nothing_of(hosts.b, inst.name)
    assert read(hosts.a, inst.name, 'root/data') == 'v3'
    assert read(hosts.a, inst.name, 'root/data', 's1') == 'v1'


def test_pinned_certificate_mismatch_is_refused(hosts, container):
    inst = container(snapshots=False)
    source, _ = _migration_source(hosts, inst.name)
    source['certificate'] = hosts.b.certificate()     # not the source's
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        hosts.b.local.instances.create({'name': inst.name, 'source': source}, wait=True)
    assert 'pinned certificate' in str(err.value)
    nothing_of(hosts.b, inst.name)
    assert read(hosts.a, inst.name, 'root/data') == 'v3'


def test_bad_requests_are_refused_before_anything_is_made(hosts, container):
    inst = container(snapshots=False)
    bad = [{'type': 'migration', 'mode': 'relay'},
           {'type': 'migration', 'mode': 'pull', 'operation': 'http://x/1.0/operations/1',
            'secrets': {'control': 'a', 'fs': 'b'}, 'certificate': hosts.a.certificate()},
           {'type': 'migration', 'mode': 'pull', 'operation': hosts.a.url + '/1.0/operations/1',
            'secrets': {'control': 'a'}, 'certificate': hosts.a.certificate()},
           {'type': 'migration', 'mode': 'pull', 'operation': hosts.a.url + '/1.0/operations/1',
            'secrets': {'control': 'a', 'fs': 'b'}}]
    for source in bad:
        with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
            hosts.b.local.api.instances.post(json={'name': inst.name, 'source': source})
        assert err.value.response.status_code == 400, source
        nothing_of(hosts.b, inst.name)
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        hosts.a.local.api.instances[inst.name].post(json={'migration': True, 'target': {
            'operation': hosts.b.url + '/1.0/operations/x', 'secrets': {}}})
    assert err.value.response.status_code == 400


async def _peer_sockets(session, base_url, op_id, secrets):
    sockets = {}
    for name in ('control', 'fs'):
        sockets[name] = await session.ws_connect(
            '%s/1.0/operations/%s/websocket?secret=%s' % (base_url.replace('https', 'wss'),
                                                          op_id, secrets[name]), ssl=False)
    return sockets


def test_target_going_away_mid_transfer_restarts_the_running_source(hosts, container):
    """A target that accepts, reads the first bytes of the volume and vanishes."""
    import asyncio
    import aiohttp
    inst = container()
    name = inst.name
    inst.start(wait=True)
    resp = hosts.a.remote.api.instances[name].post(json={'migration': True}).json()
    op_id = resp['operation'].split('/')[-1]

    async def vanishing_target():
        async with aiohttp.ClientSession() as session:
            sockets = await _peer_sockets(session, hosts.a.url, op_id, resp['metadata']['metadata'])
            header = json.loads((await sockets['control'].receive()).data)
            assert header['type'] == 'header' and header['running'] is True
            assert [s['name'] for s in header['snapshots']] == ['s1', 's2']
            await sockets['control'].send_str(json.dumps({'type': 'accept', 'format': 'tar'}))
            assert json.loads((await sockets['fs'].receive()).data)['kind'] == 'snapshot'
            assert (await sockets['fs'].receive()).type == aiohttp.WSMsgType.BINARY
            for ws in sockets.values():
                await ws.close()
    asyncio.run(vanishing_target())
    assert 'went away' in _wait_op(hosts.a, op_id)
    inst.sync()
    assert inst.status == 'Running'
    assert attach(hosts.a.daemon, name, 'cat', '/root/data') == 'v3'
    assert sorted(s.name for s in inst.snapshots.all()) == ['s1', 's2']


def test_source_going_away_mid_transfer_leaves_nothing_on_the_target(hosts):
    """Push mode: a source that sends a header and part of a volume, then vanishes."""
    import asyncio
    import aiohttp
    name = unique('half')
    resp = hosts.b.local.api.instances.post(json={
        'name': name, 'source': {'type': 'migration', 'mode': 'push'}}).json()
    op_id = resp['operation'].split('/')[-1]
    secrets = resp['metadata']['metadata']
    assert set(secrets) == {'control', 'fs'} and all(isinstance(v, str) for v in secrets.values())

    async def vanishing_source():
        async with aiohttp.ClientSession() as session:
            sockets = await _peer_sockets(session, hosts.b.url, op_id, secrets)
            await sockets['control'].send_str(json.dumps({
                'type': 'header', 'formats': ['tar'], 'snapshots': [{'name': 'snap0'}],
                'idmap': '', 'running': False}))
            accept = json.loads((await sockets['control'].receive()).data)
            assert accept == {'type': 'accept', 'format': 'tar'}
            await sockets['fs'].send_str(json.dumps({'type': 'volume', 'kind': 'snapshot',
                                                     'name': 'snap0'}))
            await sockets['fs'].send_bytes(b'\0' * 10240)   # two empty tar blocks: a valid end
            await sockets['fs'].send_str(json.dumps({'type': 'volume-end'}))
            await sockets['fs'].send_str(json.dumps({'type': 'volume', 'kind': 'instance',
                                                     'name': name}))
            await sockets['fs'].send_bytes(os.urandom(4096))
            await sockets['fs'].close()       # the target is reading fs: it answers at once
            await sockets['control'].close()
    asyncio.run(vanishing_source())
    assert 'went away' in _wait_op(hosts.b, op_id)
    nothing_of(hosts.b, name)


def test_target_daemon_killed_mid_transfer(hosts, container):
    """A real target dying (SIGKILL) mid-receive.

    The source gets its running container back; the target, restarted on its directory, has
    nothing of it. (The last test of the module: it restarts host b.)
    """
    import signal
    inst = container(snapshots=False)
    name = inst.name
    with open(os.path.join(rootfs(hosts.a, name), 'root/blob'), 'wb') as f:
        f.write(os.urandom(300 << 20))
    inst.start(wait=True)
    source, op_url = _migration_source(hosts, name)
    hosts.b.local.api.instances.post(json={'name': name, 'source': source})
    staging = os.path.join(hosts.b.daemon.data_dir, 'storage-pools', '*', 'containers',
                           '.migrate-*')
    deadline = time.monotonic() + 60
    while not glob.glob(staging) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert glob.glob(staging), 'the target never started receiving'
    hosts.b.daemon.stop(sig=signal.SIGKILL)
    try:
        assert 'went away' in _wait_op(hosts.a, op_url)
        inst.sync()
        assert inst.status == 'Running'
        assert attach(hosts.a.daemon, name, 'cat', '/root/data') == 'v3'
    finally:
        hosts.b.local = hosts.b.daemon.start()
    nothing_of(hosts.b, name)
    assert hosts.b.local.instances.all() == []
