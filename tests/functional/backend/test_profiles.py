"""Profiles through pylxd: CRUD, rename, used_by, ETag, the default profile, refusals."""
import json

import pylxd
import pytest

from tests.functional.backend.busybox_rootfs import cleanup, create_busybox, unique


def _url(client, name=''):
    return client.api._api_endpoint + '/profiles' + ('/' + name if name else '')


def test_default_profile_has_a_root_disk_on_the_default_pool(client):
    default = client.profiles.get('default')
    root = default.devices['root']
    assert root['type'] == 'disk' and root['path'] == '/'
    pools = client.api.session.get(client.api._api_endpoint + '/storage-pools').json()
    if pools.get('type') == 'sync':
        assert '/1.0/storage-pools/%s' % root['pool'] in pools['metadata']


def test_crud_rename_and_used_by(client, backend):
    name = unique('prof')
    profile = client.profiles.create(name, config={'user.purpose': 'test'},
                                     devices={'tmp': {'type': 'disk', 'source': '/var/tmp',
                                                      'path': '/mnt/tmp'}})
    assert client.profiles.exists(name)
    assert client.profiles.get(name).config == {'user.purpose': 'test'}
    assert '/1.0/profiles/%s' % name in client.api.profiles.get().json()['metadata']
    profile.description = 'described'
    profile.save()
    assert client.profiles.get(name).description == 'described'
    inst = create_busybox(client, backend, profiles=['default', name])
    try:
        assert client.profiles.get(name).used_by == ['/1.0/instances/%s' % inst.name]
        assert inst.expanded_devices['tmp']['path'] == '/mnt/tmp'
        with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
            client.profiles.get(name).delete()
        assert 'in use' in str(err.value)
        new = unique('renamed')
        profile.rename(new)
        assert not client.profiles.exists(name)
        assert client.instances.get(inst.name).profiles == ['default', new]
        name = new
    finally:
        cleanup(inst)
    client.profiles.get(name).delete()
    assert not client.profiles.exists(name)


def test_patch_and_etag(client):
    name = unique('prof')
    client.profiles.create(name, config={'limits.memory': '1GiB'})
    try:
        resp = client.api.session.get(_url(client, name))
        etag = resp.headers['ETag']
        stale = client.api.session.patch(_url(client, name), headers={'If-Match': '"nope"'},
                                         data=json.dumps({'config': {'user.x': '1'}}))
        assert stale.status_code == 412
        ok = client.api.session.patch(_url(client, name), headers={'If-Match': etag},
                                      data=json.dumps({'config': {'user.x': '1'}}))
        assert ok.status_code == 200
        assert client.profiles.get(name).config == {'limits.memory': '1GiB', 'user.x': '1'}
        again = client.api.session.put(_url(client, name), headers={'If-Match': etag},
                                       data=json.dumps({'config': {}}))
        assert again.status_code == 412       # the PATCH changed the ETag
    finally:
        client.profiles.get(name).delete()


@pytest.mark.parametrize('body, word', [
    ({'config': {'limits.nonsense': '1'}}, 'limits.nonsense'),
    ({'config': {'limits.memory': 'much'}}, 'limits.memory'),
    ({'devices': {'x': {'type': 'disk'}}}, 'path'),
    ({'devices': {'x': {'type': 'teleporter'}}}, 'teleporter'),
])
def test_bad_profiles_refused(client, body, word):
    name = unique('bad')
    resp = client.api.session.post(_url(client), data=json.dumps(dict(body, name=name)))
    assert resp.status_code == 400 and word in resp.json()['error']
    assert not client.profiles.exists(name)


def test_duplicate_and_default_protection(client):
    resp = client.api.session.post(_url(client), data=json.dumps({'name': 'default'}))
    assert resp.status_code == 409
    assert client.api.session.delete(_url(client, 'default')).status_code == 400
    resp = client.api.session.post(_url(client, 'default'), data=json.dumps({'name': 'other'}))
    assert resp.status_code == 400
    assert client.api.session.get(_url(client, 'missing')).status_code == 404


def test_profile_change_that_breaks_an_instance_is_refused(client, backend):
    name = unique('prof')
    client.profiles.create(name, config={'limits.cpu': '1'})
    inst = create_busybox(client, backend, profiles=['default', name])
    try:
        resp = client.api.session.put(_url(client, name), data=json.dumps(
            {'config': {'limits.cpu': '99'}}))
        assert resp.status_code == 400 and 'limits.cpu' in resp.json()['error']
        assert client.profiles.get(name).config == {'limits.cpu': '1'}
    finally:
        cleanup(inst)
        client.profiles.get(name).delete()


def test_instance_without_root_disk_refused(client):
    resp = client.api.session.post(client.api._api_endpoint + '/instances', data=json.dumps(
        {'name': unique(), 'source': {'type': 'none'}, 'profiles': []}))
    assert resp.status_code == 400 and 'root disk' in resp.json()['error']
    resp = client.api.session.post(client.api._api_endpoint + '/instances', data=json.dumps(
        {'name': unique(), 'source': {'type': 'none'}, 'profiles': ['nope']}))
    assert resp.status_code == 400 and 'nope' in resp.json()['error']
