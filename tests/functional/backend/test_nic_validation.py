"""A nic naming a network or host bridge that does not exist is refused with a 400.

At create, update and profile change (as LXD does), not only when the instance starts; nothing
is made.
"""
import os
import random

import pytest

from tests.functional.backend.busybox_rootfs import cleanup, unique

BAD = [({'type': 'nic', 'network': 'nosuchnet'}, "network 'nosuchnet' does not exist"),
       ({'type': 'nic', 'nictype': 'bridged', 'parent': 'nosuchbr0'},
        "parent 'nosuchbr0' does not exist"),
       ({'type': 'nic', 'nictype': 'bridged', 'parent': 'lo'}, "parent 'lo' is not a bridge"),
       ({'type': 'nic', 'nictype': 'macvlan', 'parent': 'nosuchif0'},
        "parent 'nosuchif0' does not exist")]


@pytest.fixture(scope='module')
def network(backend):
    client = backend.client()
    name = 'nlxtval%04x' % random.getrandbits(16)
    client.networks.create(name)
    yield name
    client.networks.get(name).delete()


def _error(resp, text):
    assert resp.status_code == 400, resp.text
    assert text in resp.json()['error'], resp.text


@pytest.mark.parametrize('device,message', BAD)
def test_create_is_refused_and_leaves_nothing(backend, client, device, message):
    name = unique('badnic')
    _error(client.api.session.post(client.api.instances._api_endpoint, json={
        'name': name, 'source': {'type': 'none'}, 'devices': {'eth0': device}}), message)
    assert not client.instances.exists(name)
    assert not os.path.exists(os.path.join(backend.data_dir, 'containers', name))
    assert not any(os.path.exists(os.path.join(pool, 'containers', name)) for pool in
                   [os.path.join(backend.data_dir, 'storage-pools', p)
                    for p in os.listdir(os.path.join(backend.data_dir, 'storage-pools'))])


def test_update_and_profile_change_are_refused(client, network):
    name = unique('badnic')
    good = {'type': 'nic', 'network': network}
    instance = client.instances.create({'name': name, 'source': {'type': 'none'},
                                        'devices': {'eth0': good}}, wait=True)
    profile = unique('badnicp')
    try:
        endpoint = client.api.instances[name]._api_endpoint
        for device, message in BAD:
            _error(client.api.session.patch(endpoint, json={'devices': {'eth1': device}}),
                   message)
            _error(client.api.session.post(client.api.profiles._api_endpoint, json={
                'name': profile, 'devices': {'eth0': device}}), message)
        assert client.instances.get(name).devices == {'eth0': good}
        assert not client.profiles.exists(profile)
        client.profiles.create(profile, devices={'eth0': good})
        client.instances.get(name)
        resp = client.api.session.patch(endpoint, json={'profiles': ['default', profile]})
        assert resp.status_code == 200, resp.text
        for device, message in BAD:
            _error(client.api.session.patch(client.api.profiles[profile]._api_endpoint,
                                            json={'devices': {'eth0': device}}), message)
        assert client.profiles.get(profile).devices == {'eth0': good}
    finally:
        cleanup(instance)
        if client.profiles.exists(profile):
            client.profiles.get(profile).delete()
