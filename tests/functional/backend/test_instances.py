"""Instances on the bundled backend through pylxd: real liblxc containers with a busybox rootfs."""
import json
import os
import pathlib
import shutil
import tempfile

import pylxd
import pytest

from tests.functional.backend.busybox_rootfs import (attach, cleanup, create_busybox,
                                                     host_root, rootfs_path, unique)


@pytest.fixture
def instance(client, backend):
    inst = create_busybox(client, backend)
    yield inst
    cleanup(inst)


def _host_uid(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('Uid:'):
                return int(line.split()[1])


def _wait_console(backend, name, text):
    import time
    path = os.path.join(backend.data_dir, 'logs', name, 'console.log')
    for _ in range(100):
        if os.path.exists(path) and text in open(path, errors='replace').read():
            return True
        time.sleep(0.05)
    return False


def test_lifecycle_unprivileged(client, backend, instance):
    name = instance.name
    assert instance.status == 'Stopped'
    assert instance.expanded_devices['root']['type'] == 'disk'
    instance.start(wait=True)
    instance.sync()
    assert instance.status == 'Running'
    state = instance.state()
    assert state.pid > 0 and state.processes >= 1
    assert state.memory['usage'] > 0 and state.cpu['usage'] > 0
    assert 'lo' in state.network
    assert any(a['address'] == '127.0.0.1' for a in state.network['lo']['addresses'])
    # unprivileged: the container's init runs as a high host uid
    assert _host_uid(state.pid) == host_root()[0] >= 100000
    assert attach(backend, name, 'id', '-u').strip() == '0'
    assert attach(backend, name, 'hostname').strip() == name
    # its own pid namespace: init is PID 1 inside
    assert attach(backend, name, 'cat', '/proc/1/comm').strip() == 'init'
    assert _wait_console(backend, name, 'busybox booted')
    instance.freeze(wait=True)
    instance.sync()
    assert instance.status == 'Frozen'
    instance.unfreeze(wait=True)
    instance.sync()
    assert instance.status == 'Running'
    instance.restart(wait=True)
    instance.sync()
    assert instance.status == 'Running'
    assert instance.state().pid != state.pid
    instance.stop(wait=True)        # clean: busybox init halts on SIGUSR1
    instance.sync()
    assert instance.status == 'Stopped'
    rootfs = rootfs_path(backend, name)
    instance.delete(wait=True)
    assert not client.instances.exists(name)
    assert not os.path.exists(rootfs)
    assert not os.path.exists(os.path.join(backend.data_dir, 'containers', name))


def test_recursion_levels_and_containers_alias(client, backend, instance):
    instance.start(wait=True)
    base = client.api._api_endpoint
    urls = client.api.session.get(base + '/instances').json()['metadata']
    assert '/1.0/instances/%s' % instance.name in urls
    full = client.api.session.get(base + '/instances?recursion=2').json()['metadata']
    mine = [i for i in full if i['name'] == instance.name][0]
    assert mine['state']['status'] == 'Running' and mine['state']['pid'] > 0
    legacy = client.api.session.get(base + '/containers/%s' % instance.name).json()
    assert legacy['metadata']['name'] == instance.name
    assert client.containers.get(instance.name).status == 'Running'


def test_delete_while_running_is_refused(client, instance):
    instance.start(wait=True)
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        instance.delete(wait=True)
    assert err.value.response.status_code == 400
    assert 'running' in str(err.value).lower()
    assert client.instances.get(instance.name).status == 'Running'


def test_stop_forced(client, instance):
    instance.start(wait=True)
    instance.stop(force=True, wait=True)
    instance.sync()
    assert instance.status == 'Stopped'


@pytest.mark.parametrize('config, key', [
    ({'limits.bogus': '1'}, 'limits.bogus'),
    ({'nonsense': 'x'}, 'nonsense'),
    ({'limits.memory': 'lots'}, 'limits.memory'),
    ({'limits.cpu.allowance': '200%'}, 'limits.cpu.allowance'),
    ({'security.privileged': 'maybe'}, 'security.privileged'),
    ({'raw.lxc': 'lxc.rootfs.path = /'}, 'raw.lxc'),
])
def test_bad_config_refused_on_create_leaves_nothing(client, backend, config, key):
    name = unique()
    resp = client.api.session.post(client.api._api_endpoint + '/instances',
                                   data=json.dumps({'name': name, 'config': config,
                                                    'source': {'type': 'none'}}))
    assert resp.status_code == 400
    assert key in resp.json()['error']
    assert not client.instances.exists(name)
    assert not os.path.exists(os.path.join(backend.data_dir, 'storage-pools', 'default',
                                           'containers', name))


def test_bad_device_refused(client):
    resp = client.api.session.post(client.api._api_endpoint + '/instances', data=json.dumps({
        'name': unique(), 'source': {'type': 'none'},
        'devices': {'d': {'type': 'disk', 'path': '/mnt', 'source': 'relative/path'}}}))
    assert resp.status_code == 400 and 'relative/path' in resp.json()['error']
    resp = client.api.session.post(client.api._api_endpoint + '/instances', data=json.dumps({
        'name': unique(), 'source': {'type': 'none'},
        'devices': {'d': {'type': 'warp-drive'}}}))
    assert resp.status_code == 400 and 'warp-drive' in resp.json()['error']


def test_bad_config_refused_on_update(client, instance):
    instance.config['limits.typo'] = '1'
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        instance.save(wait=True)
    assert 'limits.typo' in str(err.value)
    assert 'limits.typo' not in client.instances.get(instance.name).config


def test_etag_mismatch_is_412(client, instance):
    url = client.api._api_endpoint + '/instances/' + instance.name
    current = client.api.session.get(url)
    etag = current.headers['ETag']
    body = current.json()['metadata']
    body['description'] = 'changed'
    resp = client.api.session.put(url, data=json.dumps(body), headers={'If-Match': '"stale"'})
    assert resp.status_code == 412
    resp = client.api.session.patch(url, data=json.dumps({'description': 'patched'}),
                                    headers={'If-Match': etag})
    assert resp.status_code == 200
    assert client.instances.get(instance.name).description == 'patched'


def test_privileged_and_isolated_idmaps(client, backend):
    priv = create_busybox(client, backend, config={'security.privileged': 'true'})
    iso1 = create_busybox(client, backend, config={'security.idmap.isolated': 'true'})
    iso2 = create_busybox(client, backend, config={'security.idmap.isolated': 'true'})
    try:
        for inst in (priv, iso1, iso2):
            inst.start(wait=True)
        assert _host_uid(priv.state().pid) == 0
        uid1, uid2 = _host_uid(iso1.state().pid), _host_uid(iso2.state().pid)
        assert uid1 != uid2 and min(uid1, uid2) > host_root()[0]
        bases = {client.instances.get(i.name).config['volatile.idmap.base'] for i in (iso1, iso2)}
        assert len(bases) == 2 and '0' not in bases
        # the rootfs was shifted to the isolated range
        assert os.stat(rootfs_path(backend, iso1.name) + '/bin/busybox').st_uid == uid1
    finally:
        for inst in (priv, iso1, iso2):
            cleanup(inst)


def test_privilege_toggle_shifts_rootfs(client, backend, instance):
    rootfs = rootfs_path(backend, instance.name)
    assert os.stat(rootfs + '/etc/passwd').st_uid == host_root()[0]
    instance.config['security.privileged'] = 'true'
    instance.save(wait=True)
    instance.start(wait=True)
    assert os.stat(rootfs + '/etc/passwd').st_uid == 0
    assert _host_uid(instance.state().pid) == 0


def test_rename_and_copy(client, backend, instance):
    old, new = instance.name, unique('renamed')
    instance.rename(new, wait=True)
    assert not client.instances.exists(old)
    renamed = client.instances.get(new)
    copy_name = unique('copy')
    copy = client.instances.create({'name': copy_name,
                                    'source': {'type': 'copy', 'source': new}}, wait=True)
    try:
        assert os.path.exists(rootfs_path(backend, copy_name) + '/bin/busybox')
        assert copy.config['volatile.uuid'] != renamed.config['volatile.uuid']
        copy.start(wait=True)
        assert attach(backend, copy_name, 'hostname').strip() == copy_name
    finally:
        cleanup(copy)
        cleanup(renamed)


def test_rename_to_existing_is_refused(client, backend, instance):
    other = create_busybox(client, backend)
    try:
        with pytest.raises(pylxd.exceptions.LXDAPIException):
            instance.rename(other.name, wait=True)
    finally:
        cleanup(other)


def test_rename_over_stale_logs_of_a_deleted_instance(client, backend, instance):
    """A log directory left by a deleted instance of the target name must not break the rename.

    Not half-way either: the Nova driver's resize revert renames `<name>-resize` back to `<name>`.
    """
    target = unique('reused')
    stale = os.path.join(backend.data_dir, 'logs', target)
    os.makedirs(stale)
    with open(os.path.join(stale, 'lxc.log'), 'w') as f:
        f.write('left by an earlier instance\n')
    instance.rename(target, wait=True)
    renamed = client.instances.get(target)
    try:
        assert os.path.exists(rootfs_path(backend, target) + '/bin/busybox')
        assert not os.path.exists(os.path.join(stale, 'lxc.log'))
    finally:
        cleanup(renamed)


def test_templates_rendered_on_start(client, backend, instance):
    instance_dir = os.path.dirname(rootfs_path(backend, instance.name))
    os.makedirs(os.path.join(instance_dir, 'templates'))
    with open(os.path.join(instance_dir, 'templates', 'hostname.tpl'), 'w') as f:
        f.write('{{ container.name }}\n')
    with open(os.path.join(instance_dir, 'templates', 'hosts.tpl'), 'w') as f:
        f.write('127.0.1.1 {{ instance.name }} {{ config_get("user.alias", "none") }}\n')
    with open(os.path.join(instance_dir, 'metadata.yaml'), 'w') as f:
        f.write('architecture: x86_64\ncreation_date: 1\ntemplates:\n'
                '  /etc/hostname:\n    when: [start]\n    template: hostname.tpl\n'
                '  /etc/hosts:\n    when: [start]\n    template: hosts.tpl\n')
    instance.config['user.alias'] = 'web'
    instance.save(wait=True)
    instance.start(wait=True)
    assert attach(backend, instance.name, 'cat', '/etc/hostname').strip() == instance.name
    assert attach(backend, instance.name, 'cat', '/etc/hosts').split() == \
        ['127.0.1.1', instance.name, 'web']
    st = os.stat(os.path.join(rootfs_path(backend, instance.name), 'etc/hostname'))
    assert st.st_uid == host_root()[0]


@pytest.fixture
def shared_dir():
    # an unprivileged container's root must be able to reach the source: not under /tmp/pytest-*
    path = tempfile.mkdtemp(prefix='nova-lxd-shared-', dir='/var/tmp')
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def test_disk_device_bind_and_hotplug(client, backend, instance, shared_dir):
    source = shared_dir
    (source / 'hello').write_text('from the host\n')
    instance.devices['data'] = {'type': 'disk', 'source': str(source), 'path': '/mnt/data',
                                'readonly': 'true'}
    instance.save(wait=True)
    instance.start(wait=True)
    assert attach(backend, instance.name, 'cat', '/mnt/data/hello') == 'from the host\n'
    # hot-plug a second one into the running container, then remove it
    instance.devices['live'] = {'type': 'disk', 'source': str(source), 'path': '/srv/live'}
    instance.save(wait=True)
    assert attach(backend, instance.name, 'cat', '/srv/live/hello') == 'from the host\n'
    del instance.devices['live']
    instance.save(wait=True)
    assert 'hello' not in attach(backend, instance.name, 'ls', '/srv/live')


def test_unix_char_device(client, backend, instance):
    instance.devices['z'] = {'type': 'unix-char', 'source': '/dev/zero', 'path': '/dev/myzero'}
    instance.save(wait=True)
    instance.start(wait=True)
    out = attach(backend, instance.name, 'sh', '-c',
                 'head -c 4 /dev/myzero | od -An -tx1')
    assert out.split() == ['00', '00', '00', '00']


def test_missing_instance_is_404(client):
    with pytest.raises(pylxd.exceptions.NotFound):
        client.instances.get('no-such-instance')
    resp = client.api.session.put(client.api._api_endpoint + '/instances/nope/state',
                                  data=json.dumps({'action': 'start'}))
    assert resp.status_code == 404


def test_logs_listing_and_console(client, backend, instance):
    instance.start(wait=True)
    assert _wait_console(backend, instance.name, 'busybox booted')
    base = client.api._api_endpoint + '/instances/' + instance.name
    logs = client.api.session.get(base + '/logs').json()['metadata']
    assert '/1.0/instances/%s/logs/console.log' % instance.name in logs
    assert 'busybox booted' in client.api.session.get(base + '/console').text


def test_ephemeral_instance_is_deleted_when_stopped(client, backend):
    inst = create_busybox(client, backend)
    inst.ephemeral = True
    inst.save(wait=True)
    inst.start(wait=True)
    inst.stop(wait=True)
    assert not client.instances.exists(inst.name)


def test_filter_on_list(client, backend, instance):
    base = client.api._api_endpoint + '/instances'
    found = client.api.session.get(base, params={
        'recursion': '1', 'filter': 'name eq %s' % instance.name}).json()['metadata']
    assert [i['name'] for i in found] == [instance.name]
    found = client.api.session.get(base, params={
        'filter': 'name eq %s and status eq Running' % instance.name}).json()['metadata']
    assert found == []
    found = client.api.session.get(base, params={
        'filter': 'name eq %s and status eq Stopped' % instance.name}).json()['metadata']
    assert found == ['/1.0/instances/%s' % instance.name]


def test_lifecycle_events(client, backend):
    import asyncio

    import aiohttp

    name = unique()
    actions = []

    async def listen(ready, done):
        connector = aiohttp.UnixConnector(path=backend.socket)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.ws_connect('http://lxd/1.0/events?type=lifecycle') as ws:
                ready.set()
                async for msg in ws:
                    event = msg.json()
                    if event['metadata']['source'] == '/1.0/instances/%s' % name:
                        actions.append(event['metadata']['action'])
                        if event['metadata']['action'] == 'instance-deleted':
                            break
        done.set()

    async def scenario():
        ready, done = asyncio.Event(), asyncio.Event()
        task = asyncio.ensure_future(listen(ready, done))
        await asyncio.wait_for(ready.wait(), 10)

        def drive():
            inst = create_busybox(client, backend, name)
            inst.config['user.x'] = '1'
            inst.save(wait=True)
            inst.start(wait=True)
            inst.stop(force=True, wait=True)
            inst.delete(wait=True)
        await asyncio.get_running_loop().run_in_executor(None, drive)
        await asyncio.wait_for(done.wait(), 10)
        await task
    asyncio.run(scenario())
    assert actions == ['instance-created', 'instance-updated', 'instance-started',
                       'instance-stopped', 'instance-deleted']


def test_nesting_gives_writable_proc_and_cgroups(client, backend):
    inst = create_busybox(client, backend, config={'security.nesting': 'true'})
    try:
        inst.start(wait=True)
        mounts = attach(backend, inst.name, 'cat', '/proc/mounts')
        assert ' /dev/.lxc/proc proc ' in mounts
        sys_line = [line for line in mounts.splitlines() if line.split()[1] == '/sys'][0]
        assert 'rw' in sys_line.split()[3].split(',')
    finally:
        cleanup(inst)


def test_daemon_owned_volatile_keys_cannot_be_forged(client, instance):
    url = client.api._api_endpoint + '/instances/' + instance.name
    before = client.instances.get(instance.name).config
    resp = client.api.session.patch(url, data=json.dumps({'config': {
        'volatile.last_state.idmap': '[]', 'volatile.idmap.base': '5',
        'volatile.eth0.hwaddr': '00:16:3e:00:00:01'}}))
    assert resp.status_code == 200
    after = client.instances.get(instance.name).config
    assert after['volatile.last_state.idmap'] == before['volatile.last_state.idmap']
    assert after['volatile.idmap.base'] == before['volatile.idmap.base']
    assert after['volatile.eth0.hwaddr'] == '00:16:3e:00:00:01'   # a client-settable one


def test_unix_char_hotplug_and_unplug(client, backend, instance):
    instance.start(wait=True)
    instance.devices['z'] = {'type': 'unix-char', 'source': '/dev/zero', 'path': '/dev/hotzero'}
    instance.save(wait=True)
    out = attach(backend, instance.name, 'sh', '-c', 'head -c 2 /dev/hotzero | od -An -tx1')
    assert out.split() == ['00', '00']
    del instance.devices['z']
    instance.save(wait=True)
    assert 'hotzero' not in attach(backend, instance.name, 'ls', '/dev')


def test_copy_from_snapshot_and_restore(client, backend, instance):
    rootfs = rootfs_path(backend, instance.name)
    with open(os.path.join(rootfs, 'root', 'marker'), 'w') as f:
        f.write('before\n')
    instance.snapshots.create('snap0', wait=True)
    with open(os.path.join(rootfs, 'root', 'marker'), 'w') as f:
        f.write('after\n')
    copy_name = unique('fromsnap')
    copy = client.instances.create({'name': copy_name, 'source': {
        'type': 'copy', 'source': '%s/snap0' % instance.name}}, wait=True)
    try:
        with open(os.path.join(rootfs_path(backend, copy_name), 'root', 'marker')) as f:
            assert f.read() == 'before\n'
    finally:
        cleanup(copy)
    instance.restore_snapshot('snap0', wait=True)       # PUT {"restore": "snap0"}
    with open(os.path.join(rootfs_path(backend, instance.name), 'root', 'marker')) as f:
        assert f.read() == 'before\n'


def test_state_reports_interfaces_from_the_container_netns(client, backend):
    # an unattached veth from raw LXC config: enough to see addresses and counters
    inst = create_busybox(client, backend, config={'raw.lxc': '\n'.join([
        'lxc.net.0.type = veth', 'lxc.net.0.name = eth0', 'lxc.net.0.flags = up',
        'lxc.net.0.hwaddr = 00:16:3e:aa:bb:cc', 'lxc.net.0.ipv4.address = 10.254.253.2/24'])})
    try:
        inst.start(wait=True)
        attach(backend, inst.name, 'ping', '-c', '1', '-W', '1', '127.0.0.1')
        network = inst.state().network
        eth0 = network['eth0']
        assert eth0['hwaddr'] == '00:16:3e:aa:bb:cc' and eth0['state'] == 'up'
        assert {'family': 'inet', 'address': '10.254.253.2', 'netmask': '24',
                'scope': 'global'} in eth0['addresses']
        assert network['lo']['counters']['packets_received'] >= 1
        assert network['lo']['type'] == 'loopback'
    finally:
        cleanup(inst)


def test_copy_takes_snapshots_unless_instance_only(client, backend, instance):
    marker = os.path.join(rootfs_path(backend, instance.name), 'root', 'marker')
    for text in ('one', 'two'):
        with open(marker, 'w') as f:
            f.write(text)
        instance.snapshots.create('s-' + text, wait=True)
    with open(marker, 'w') as f:
        f.write('now')
    full, bare = unique('full'), unique('bare')
    sources = [{'type': 'copy', 'source': instance.name},
               {'type': 'copy', 'source': instance.name, 'instance_only': True}]
    copies = [client.instances.create({'name': name, 'source': source}, wait=True)
              for name, source in zip((full, bare), sources)]
    try:
        assert sorted(s.name for s in copies[0].snapshots.all()) == ['s-one', 's-two']
        assert copies[1].snapshots.all() == []
        for name in (full, bare):
            with open(os.path.join(rootfs_path(backend, name), 'root', 'marker')) as f:
                assert f.read() == 'now'
        copies[0].restore_snapshot('s-one', wait=True)
        with open(os.path.join(rootfs_path(backend, full), 'root', 'marker')) as f:
            assert f.read() == 'one'
    finally:
        for copy in copies:
            cleanup(copy)


def test_a_failed_start_says_why_in_liblxc_s_words(client, backend, instance):
    """The error quotes liblxc's ERROR lines, not the clean-up warnings that follow them."""
    missing = 'nlnobr%04d' % (os.getpid() % 10000)
    instance.config['raw.lxc'] = ('lxc.net.9.type = veth\nlxc.net.9.link = %s\n'
                                  'lxc.net.9.name = eth9' % missing)
    instance.save(wait=True)
    with pytest.raises(pylxd.exceptions.LXDAPIException) as failed:
        instance.start(wait=True)
    message = str(failed.value)
    assert 'Failed to start instance %s' % instance.name in message
    assert ' ERROR ' in message and missing in message, message
    instance.sync()
    assert instance.status == 'Stopped'
