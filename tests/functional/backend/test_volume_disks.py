"""Disk devices on custom storage volumes (pool + source), on real containers.

Mounted at start and by hot-plug, owned for the container's id map (shifted as LXD does), listed
in the volume's used_by (through profiles too), protected from deletion while in use, kept when
the instance goes; copies share the volume, snapshots leave it out. A device naming a volume or
pool that does not exist is refused with a 400 before anything is made.
"""
import json
import os
import uuid

import pytest

from tests.functional.backend.busybox_rootfs import (attach, cleanup, create_busybox, host_root,
                                                     unique)


def _volume(client, **config):
    name = 'vol-%s' % uuid.uuid4().hex[:8]
    pool = client.storage_pools.get('default')
    pool.volumes.create({'name': name, 'type': 'custom', 'config': config})
    return name


def _volume_endpoint(client, name):
    return client.api.storage_pools['default'].volumes.custom[name]._api_endpoint


def _get_volume(client, name):
    resp = client.api.session.get(_volume_endpoint(client, name))
    assert resp.status_code == 200, resp.text
    return resp.json()['metadata']


def _delete_volume(client, name):
    return client.api.session.delete(_volume_endpoint(client, name))


def _volume_path(backend, name):
    return os.path.join(backend.data_dir, 'storage-pools', 'default', 'custom', name)


def _disk(volume, path='/mnt/data', **extra):
    return dict({'type': 'disk', 'pool': 'default', 'source': volume, 'path': path}, **extra)


def _mounted(backend, name, path):
    return (' %s ' % path) in attach(backend, name, 'cat', '/proc/mounts')


def _outcome(client, resp):
    """The finished operation of an async response."""
    assert resp.status_code == 202, resp.text
    op_id = resp.json()['operation'].split('/')[-1]
    return client.api.operations[op_id].wait.get(params={'timeout': 60}).json()['metadata']


def _patch_devices(client, instance, devices):
    return client.api.session.patch(client.api.instances[instance.name]._api_endpoint,
                                    json={'devices': devices})


@pytest.fixture
def volume(backend, client):
    name = _volume(client)
    yield name
    _delete_volume(client, name)
    assert not os.path.exists(_volume_path(backend, name))


def test_volume_at_start_owned_for_the_idmap_and_kept_after_delete(backend, client, volume):
    instance = create_busybox(client, backend, devices={'data': _disk(volume)})
    try:
        assert _get_volume(client, volume)['used_by'] == ['/1.0/instances/%s' % instance.name]
        instance.start(wait=True)
        assert _mounted(backend, instance.name, '/mnt/data')
        attach(backend, instance.name, 'sh', '-c', 'echo hello > /mnt/data/f && chmod 640 '
               '/mnt/data/f')
        # the container's root owns the volume and what it wrote, seen from the host
        path = _volume_path(backend, volume)
        uid, gid = host_root()
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (uid, gid)
        assert (os.stat(path + '/f').st_uid, os.stat(path + '/f').st_gid) == (uid, gid)
        assert attach(backend, instance.name, 'stat', '-c', '%u:%g', '/mnt/data/f').strip() \
            == '0:0'
        recorded = json.loads(_get_volume(client, volume)['config']['volatile.idmap.last'])
        assert {(e['Nsid'], e['Hostid']) for e in recorded} == {(0, uid), (0, gid)}
        # in use: refused with a 400 naming the user; nothing removed
        resp = _delete_volume(client, volume)
        assert resp.status_code == 400
        assert '/1.0/instances/%s' % instance.name in resp.json()['error']
        assert os.path.exists(path + '/f')
        instance.stop(force=True, wait=True)
        instance.delete(wait=True)
        # the volume outlives the instance, its data and its idmap record with it
        view = _get_volume(client, volume)
        assert view['used_by'] == [] and 'volatile.idmap.last' in view['config']
        # an edit (lxc storage volume edit sends volatile keys back) keeps the daemon's record
        resp = client.api.session.put(_volume_endpoint(client, volume), json={
            'config': {'volatile.idmap.last': '[]'}, 'description': 'edited'})
        assert resp.status_code == 200, resp.text
        assert _get_volume(client, volume)['config'] == view['config']
        with open(path + '/f') as f:
            assert f.read() == 'hello\n'
    finally:
        cleanup(instance)


def test_hotplug_and_unplug_on_a_running_instance(backend, client, volume):
    instance = create_busybox(client, backend)
    try:
        instance.start(wait=True)
        resp = _patch_devices(client, instance, {'data': _disk(volume, readonly='true')})
        assert resp.status_code == 200, resp.text
        assert _mounted(backend, instance.name, '/mnt/data')
        assert _get_volume(client, volume)['used_by'] == ['/1.0/instances/%s' % instance.name]
        # read-only inside
        out = attach(backend, instance.name, 'sh', '-c', 'touch /mnt/data/x 2>&1; echo $?')
        assert out.strip().splitlines()[-1] != '0'
        # a changed device is re-plugged: writable now, owned by the container's root
        resp = _patch_devices(client, instance, {'data': _disk(volume)})
        assert resp.status_code == 200, resp.text
        attach(backend, instance.name, 'touch', '/mnt/data/x')
        assert os.stat(_volume_path(backend, volume) + '/x').st_uid == host_root()[0]
        body = client.api.instances[instance.name].get().json()['metadata']
        del body['devices']['data']
        resp = client.api.session.put(client.api.instances[instance.name]._api_endpoint,
                                      json=body)
        assert _outcome(client, resp)['status'] == 'Success'
        assert not _mounted(backend, instance.name, '/mnt/data')
        assert _get_volume(client, volume)['used_by'] == []
    finally:
        cleanup(instance)


def test_missing_volume_or_pool_is_refused_before_anything_is_made(backend, client, volume):
    name = unique('novol')
    for device, named in ((_disk('nosuch'), 'nosuch'),
                          (dict(_disk(volume), pool='nopool'), 'nopool'),
                          (_disk('a/b'), 'a/b')):
        resp = client.api.session.post(client.api.instances._api_endpoint, json={
            'name': name, 'source': {'type': 'none'}, 'devices': {'data': device}})
        assert resp.status_code == 400 and named in resp.json()['error'], resp.text
        assert not client.instances.exists(name)
        assert not any(os.path.exists(os.path.join(backend.data_dir, sub, name))
                       for sub in ('containers', 'logs'))
    instance = create_busybox(client, backend)
    try:
        resp = _patch_devices(client, instance, {'data': _disk('nosuch')})
        assert resp.status_code == 400 and 'nosuch' in resp.json()['error']
        assert 'data' not in client.instances.get(instance.name).devices
        profile = unique('novolp')
        resp = client.api.session.post(client.api.profiles._api_endpoint, json={
            'name': profile, 'devices': {'data': _disk('nosuch')}})
        assert resp.status_code == 400 and 'nosuch' in resp.json()['error']
        assert not client.profiles.exists(profile)
    finally:
        cleanup(instance)


def test_volume_through_a_profile_copy_and_snapshot(backend, client, volume):
    profile = unique('volp')
    client.profiles.create(profile, devices={'data': _disk(volume)})
    instance = create_busybox(client, backend, profiles=['default', profile])
    copy = None
    try:
        users = _get_volume(client, volume)['used_by']
        assert sorted(users) == sorted(['/1.0/instances/%s' % instance.name,
                                        '/1.0/profiles/%s' % profile])
        instance.start(wait=True)
        attach(backend, instance.name, 'sh', '-c', 'echo before > /mnt/data/f')
        instance.snapshots.create('s0', wait=True)
        attach(backend, instance.name, 'sh', '-c', 'echo after > /mnt/data/f')
        instance.stop(force=True, wait=True)
        # the volume is not part of the snapshot: a restore leaves its content alone
        instance.restore_snapshot('s0', wait=True)
        with open(_volume_path(backend, volume) + '/f') as f:
            assert f.read() == 'after\n'
        # a copy refers to the same volume (as in LXD), it does not copy it
        copy = client.instances.create({'name': unique('volc'), 'source': {
            'type': 'copy', 'source': instance.name}}, wait=True)
        assert copy.expanded_devices['data'] == _disk(volume)
        assert '/1.0/instances/%s' % copy.name in _get_volume(client, volume)['used_by']
        copy.start(wait=True)
        assert attach(backend, copy.name, 'cat', '/mnt/data/f') == 'after\n'
        resp = client.api.session.delete(client.api.profiles[profile]._api_endpoint)
        assert resp.status_code == 400
    finally:
        for inst in (copy, instance):
            if inst is not None:
                cleanup(inst)
        client.profiles.get(profile).delete()


def test_isolated_instance_shifts_the_volume_only_when_no_other_runs(backend, client, volume):
    shared = create_busybox(client, backend, devices={'data': _disk(volume)})
    isolated = create_busybox(client, backend, config={'security.idmap.isolated': 'true'},
                              devices={'data': _disk(volume)})
    path = _volume_path(backend, volume)
    privileged = None
    try:
        shared.start(wait=True)
        attach(backend, shared.name, 'touch', '/mnt/data/f')
        resp = client.api.session.put(client.api.instances[isolated.name]._api_endpoint +
                                      '/state', json={'action': 'start'})
        op = _outcome(client, resp)
        assert op['status'] == 'Failure' and shared.name in op['err'], op
        assert os.stat(path + '/f').st_uid == host_root()[0]
        assert client.instances.get(isolated.name).status == 'Stopped'
        shared.stop(force=True, wait=True)
        isolated.start(wait=True)
        base = int(client.instances.get(isolated.name).config['volatile.idmap.base'])
        assert base != host_root()[0]
        assert os.stat(path + '/f').st_uid == base and os.stat(path).st_uid == base
        assert attach(backend, isolated.name, 'stat', '-c', '%u', '/mnt/data/f').strip() == '0'
        isolated.stop(force=True, wait=True)
        # a privileged instance gets the files in host ids, as it sees them
        privileged = create_busybox(client, backend, config={'security.privileged': 'true'},
                                    devices={'data': _disk(volume)})
        privileged.start(wait=True)
        assert os.stat(path + '/f').st_uid == 0 and os.stat(path).st_uid == 0
        assert _get_volume(client, volume)['config']['volatile.idmap.last'] == '[]'
    finally:
        for inst in (privileged, isolated, shared):
            if inst is not None:
                cleanup(inst)


def test_unknown_volume_config_key_is_refused(client, volume):
    resp = client.api.session.put(_volume_endpoint(client, volume), json={'config': {'bogus': '1'}})
    assert resp.status_code == 400 and 'bogus' in resp.json()['error']
    assert _get_volume(client, volume)['config'] == {}
