"""Instance snapshots: pylxd and `lxc` against real containers on the default (btrfs) pool."""
import datetime
import glob
import os
import subprocess

import pylxd
import pytest

from tests.functional.backend.busybox_rootfs import cleanup, create_busybox
from tests.functional.backend.terminal import wait_until


@pytest.fixture
def instance(backend):
    inst = create_busybox(backend.client(), backend, config={'user.phase': 'before'})
    yield inst
    cleanup(inst)


def _lxc(backend, *args):
    return subprocess.run(['lxc'] + list(args), env=dict(os.environ, LXD_DIR=backend.data_dir),
                          capture_output=True, text=True, timeout=120)


def _snapshot_dir(backend, name, snap):
    found = glob.glob(os.path.join(backend.data_dir, 'storage-pools', '*',
                                   'containers-snapshots', name, snap))
    return found[0] if found else None


def _api(client, name):
    return client.api.instances[name].snapshots


def test_running_snapshot_is_cow_and_keeps_the_config_of_its_time(backend, client, instance):
    instance.start(wait=True)
    instance.files.put('/root/state', b'v1')
    instance.snapshots.create('s1', wait=True)
    instance.config['user.phase'] = 'after'
    instance.save(wait=True)

    snap = instance.snapshots.get('s1')
    assert snap.name == 's1' and snap.stateful is False
    meta = _api(client, instance.name).s1.get().json()['metadata']
    assert meta['config']['user.phase'] == 'before'
    assert meta['expires_at'].startswith('0001-01-01')
    assert datetime.datetime.fromisoformat(meta['created_at'])
    assert [s.name for s in instance.snapshots.all()] == ['s1']
    listing = _api(client, instance.name).get(params={'recursion': 1}).json()['metadata']
    assert [s['name'] for s in listing] == ['s1']
    assert _api(client, instance.name).get().json()['metadata'] == \
        ['/1.0/instances/%s/snapshots/s1' % instance.name]

    path = _snapshot_dir(backend, instance.name, 's1')
    with open(os.path.join(path, 'rootfs', 'root', 'state'), 'rb') as f:
        assert f.read() == b'v1'
    pool = client.storage_pools.get('default')
    if pool.driver == 'btrfs':   # a read-only subvolume snapshot: nothing was copied
        show = subprocess.run(['btrfs', 'subvolume', 'show', path], capture_output=True,
                              text=True)
        assert show.returncode == 0 and 'readonly' in show.stdout, show.stdout + show.stderr
    instance.sync()
    assert instance.status == 'Running'   # thawed after the snapshot


def test_restore_brings_back_a_deleted_file_and_the_config(client, instance):
    instance.start(wait=True)
    instance.files.put('/root/precious', b'keep me')
    instance.snapshots.create('good', wait=True)
    instance.execute(['rm', '/root/precious'])
    instance.config['user.phase'] = 'broken'
    instance.save(wait=True)
    with pytest.raises(pylxd.exceptions.NotFound):
        instance.files.get('/root/precious')

    instance.snapshots.get('good').restore(wait=True)   # running: stopped, restored, started
    instance.sync()
    assert instance.status == 'Running'
    assert instance.files.get('/root/precious') == b'keep me'
    assert instance.config['user.phase'] == 'before'
    assert instance.execute(['cat', '/root/precious']).stdout == 'keep me'


def test_restore_stopped_instance(client, instance):
    instance.files.put('/root/f', b'one')
    instance.snapshots.create('one', wait=True)
    instance.files.put('/root/f', b'two')
    instance.snapshots.get('one').restore(wait=True)
    instance.sync()
    assert instance.status == 'Stopped'
    assert instance.files.get('/root/f') == b'one'


def test_rename_update_delete(backend, client, instance):
    instance.snapshots.create('old', wait=True)
    snap = instance.snapshots.get('old')
    snap.rename('new', wait=True)
    assert [s.name for s in instance.snapshots.all()] == ['new']
    assert _snapshot_dir(backend, instance.name, 'old') is None
    assert _snapshot_dir(backend, instance.name, 'new')

    api = _api(client, instance.name).new
    api.patch(json={'description': 'kept'})
    assert api.get().json()['metadata']['description'] == 'kept'
    etag = api.get().headers['ETag']
    resp = api.session.put(api._api_endpoint, json={'expires_at': None, 'description': 'x'},
                           headers={'If-Match': '"stale"'})
    assert resp.status_code == 412
    api.put(json={'description': 'put'}, headers={'If-Match': etag})
    assert api.get().json()['metadata']['description'] == 'put'

    instance.snapshots.get('new').delete(wait=True)
    assert instance.snapshots.all() == []
    assert _snapshot_dir(backend, instance.name, 'new') is None


def test_bad_requests_leave_nothing(backend, client, instance):
    api = _api(client, instance.name)
    resp = api.session.post(api._api_endpoint, json={'name': 's', 'stateful': True})
    assert resp.status_code == 400 and 'CRIU' in resp.json()['error']
    resp = api.session.post(api._api_endpoint, json={'name': 'a/b'})
    assert resp.status_code == 400
    resp = api.session.post(api._api_endpoint, json={'name': 's', 'expires_at': 'tomorrow'})
    assert resp.status_code == 400 and 'expires_at' in resp.json()['error']
    assert instance.snapshots.all() == []
    assert _snapshot_dir(backend, instance.name, 's') is None
    instance.snapshots.create('dup', wait=True)
    resp = api.session.post(api._api_endpoint, json={'name': 'dup'})
    assert resp.status_code == 409
    assert api.session.get(api._api_endpoint + '/nope').status_code == 404
    missing = _api(client, 'no-such-instance')
    assert missing.session.get(missing._api_endpoint).status_code == 404


def test_automatic_names(client, instance):
    api = _api(client, instance.name)
    for _ in range(2):
        op = api.post(json={}).json()['operation']
        client.operations.wait_for_operation(op)
    assert [s.name for s in instance.snapshots.all()] == ['snap0', 'snap1']


def test_expired_snapshots_are_pruned(backend, client, instance):
    soon = (datetime.datetime.now(datetime.timezone.utc) +
            datetime.timedelta(seconds=2)).isoformat()
    api = _api(client, instance.name)
    client.operations.wait_for_operation(
        api.post(json={'name': 'short', 'expires_at': soon}).json()['operation'])
    client.operations.wait_for_operation(api.post(json={'name': 'kept'}).json()['operation'])
    assert api.short.get().json()['metadata']['expires_at'] != '0001-01-01T00:00:00Z'
    # an expiry set later (PATCH) is honoured too
    api.kept.patch(json={'expires_at': soon})
    assert wait_until(lambda: instance.snapshots.all() == [], timeout=30)
    assert _snapshot_dir(backend, instance.name, 'short') is None
    assert _snapshot_dir(backend, instance.name, 'kept') is None


def test_deleting_the_instance_deletes_its_snapshots(backend, client):
    inst = create_busybox(client, backend)
    name = inst.name
    inst.snapshots.create('s', wait=True)
    assert _snapshot_dir(backend, name, 's')
    inst.delete(wait=True)
    assert _snapshot_dir(backend, name, 's') is None
    again = create_busybox(client, backend, name=name)
    try:
        assert again.snapshots.all() == []
    finally:
        cleanup(again)


def test_stock_lxc_client(backend, client, instance):
    instance.start(wait=True)
    instance.files.put('/root/lxc', b'orig')
    out = _lxc(backend, 'snapshot', instance.name, 'viacli')
    assert out.returncode == 0, out.stderr
    out = _lxc(backend, 'query', '/1.0/instances/%s/snapshots?recursion=1' % instance.name)
    assert out.returncode == 0, out.stderr
    assert '"name": "viacli"' in out.stdout
    instance.files.put('/root/lxc', b'changed')
    out = _lxc(backend, 'restore', instance.name, 'viacli')
    assert out.returncode == 0, out.stderr
    assert instance.files.get('/root/lxc') == b'orig'
    out = _lxc(backend, 'delete', instance.name + '/viacli')
    assert out.returncode == 0, out.stderr
    assert instance.snapshots.all() == []
