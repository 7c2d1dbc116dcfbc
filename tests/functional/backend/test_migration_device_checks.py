"""What a migration target checks of an arriving instance's devices, as LXD 5.0 does.

A custom volume is not moved with the instance: the device names a volume of the target's pool.
A target without that volume refuses the move with a 400 before it makes anything, and the
source keeps the instance; with the volume there, the moved instance mounts the target's volume.
A nic's bridge parent is not looked for on arrival (the Nova driver plugs the target's bridges
after the move), although a plain create refuses a missing one.
"""
import os
import subprocess
import uuid

import pytest

from tests.functional.backend.busybox_rootfs import attach, cleanup, create_busybox, unique
from tests.functional.backend.migration_hosts import Hosts


@pytest.fixture(scope='module')
def hosts():
    h = Hosts()
    yield h
    h.destroy()


def _create_volume(host, name):
    host.local.storage_pools.get('default').volumes.create({'name': name, 'type': 'custom',
                                                           'config': {}})


def _delete_volume(host, name):
    host.local.api.storage_pools['default'].volumes.custom[name].delete()


def _volume_dir(host, name):
    return os.path.join(host.daemon.data_dir, 'storage-pools', 'default', 'custom', name)


def test_move_needs_the_volume_on_the_target(hosts):
    volume = 'mv-%s' % uuid.uuid4().hex[:8]
    _create_volume(hosts.a, volume)
    device = {'type': 'disk', 'pool': 'default', 'source': volume, 'path': '/mnt/data'}
    inst = create_busybox(hosts.a.local, hosts.a.daemon, name=unique('mvvol'),
                          config={'boot.host_shutdown_timeout': '1'}, devices={'data': device})
    name = inst.name
    try:
        out = hosts.lxc('move', 'hosta:%s' % name, 'hostb:')
        assert out.returncode != 0
        assert "Storage volume '%s' not found" % volume in out.stderr, out.stderr
        assert not hosts.b.local.instances.exists(name)
        assert not os.path.exists(os.path.join(hosts.b.daemon.data_dir, 'storage-pools',
                                               'default', 'containers', name))
        assert hosts.a.local.instances.get(name).devices['data'] == device
        # with a volume of that name on the target, the move goes through and uses it
        _create_volume(hosts.b, volume)
        with open(os.path.join(_volume_dir(hosts.b, volume), 'f'), 'w') as f:
            f.write('on b\n')
        out = hosts.lxc('move', 'hosta:%s' % name, 'hostb:')
        assert out.returncode == 0, out.stderr
        moved = hosts.b.local.instances.get(name)
        assert moved.devices['data'] == device
        moved.start(wait=True)
        assert attach(hosts.b.daemon, name, 'cat', '/mnt/data/f') == 'on b\n'
        used_by = hosts.b.local.api.storage_pools['default'].volumes.custom[volume].get().json()
        assert used_by['metadata']['used_by'] == ['/1.0/instances/%s' % name]
        # the source's volume stayed where it was, no longer used
        source_view = hosts.a.local.api.storage_pools['default'].volumes.custom[volume].get()
        assert source_view.json()['metadata']['used_by'] == []
        cleanup(moved)
    finally:
        for host in (hosts.a, hosts.b):
            if host.local.instances.exists(name):
                cleanup(host.local.instances.get(name))
            if os.path.isdir(_volume_dir(host, volume)):
                _delete_volume(host, volume)
    assert not os.path.exists(_volume_dir(hosts.a, volume))
    assert not os.path.exists(_volume_dir(hosts.b, volume))


def test_a_nic_parent_is_not_required_on_arrival(hosts):
    bridge = 'nlxtmv%04x' % (uuid.uuid4().int & 0xffff)
    subprocess.run(['ip', 'link', 'add', bridge, 'type', 'bridge'], check=True)
    device = {'type': 'nic', 'nictype': 'bridged', 'parent': bridge, 'name': 'eth0'}
    name = unique('mvnic')
    try:
        create_busybox(hosts.a.local, hosts.a.daemon, name=name, devices={'eth0': device})
        subprocess.run(['ip', 'link', 'del', bridge], check=True)
        resp = hosts.b.local.api.session.post(hosts.b.local.api.instances._api_endpoint, json={
            'name': name + 'x', 'source': {'type': 'none'}, 'devices': {'eth0': device}})
        assert resp.status_code == 400 and bridge in resp.json()['error']
        out = hosts.lxc('move', 'hosta:%s' % name, 'hostb:')
        assert out.returncode == 0, out.stderr
        assert hosts.b.local.instances.get(name).devices['eth0'] == device
    finally:
        subprocess.run(['ip', 'link', 'del', bridge], capture_output=True)
        for host in (hosts.a, hosts.b):
            if host.local.instances.exists(name):
                cleanup(host.local.instances.get(name))
