"""Rescue and unrescue through Nova's API, checked in the containers themselves (both backends).

Rescue boots `<instance name>-rescue` from the rescue image with the instance's root filesystem
at [lxd] rescue_path (/mnt/rescue); the instance's own container is stopped and left as it was.
Unrescue deletes the rescue container and starts the instance again with its data (and the
repairs made from the rescue container). The rescue container has the instance's nics (same
MACs: they move to it and back) and its console is the one Nova shows while rescued.
Deleting a rescued server removes both containers; a rescue that fails removes what it
created and the instance can be brought back with a hard reboot.
"""
import hashlib
import io
import os
import tarfile
import types
import uuid
import warnings

import pytest

from nova import context as nova_context
from nova import objects

from nova_lxd.virt import rescue
from tests.functional.nova import backends
from tests.functional.nova import base
from tests.functional.nova import moves_base

with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    import crypt

RESCUE_PATH = '/mnt/rescue'


def _repacked(unified, add=None, drop=()):
    """A copy of a unified image tarball with files added to / dropped from its rootfs."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(unified)) as src, \
            tarfile.open(fileobj=out, mode='w:gz') as dst:
        for member in src:
            if member.name.lstrip('./') in drop:
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for path, text in (add or {}).items():
            data = text.encode()
            info = tarfile.TarInfo('rootfs/' + path)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _lasting(config):
    """An instance's config without the backend's volatile bookkeeping (power state, ids)."""
    return {k: v for k, v in config.items() if not k.startswith('volatile.')}


class _RescueTest(moves_base.MovesTestBase):
    __test__ = False
    host_count = 1

    def _upload(self, name, data):
        return self.glance.create(None, {
            'name': name, 'container_format': 'bare', 'disk_format': 'raw',
            'properties': {'lxd_image_format': 'unified'}}, data=io.BytesIO(data))

    def _rescue_container(self, server):
        return self.clients['host1'].instances.get(
            server['OS-EXT-SRV-ATTR:instance_name'] + '-rescue')

    def _all_containers(self):
        return sorted(i.name for i in self.clients['host1'].instances.all())

    def test_rescue_from_another_image_then_unrescue(self):
        rescue_image = self._upload('rescue-tools', _repacked(
            base.busybox_bytes(), add={'etc/rescue-image': 'rescue-tools'}))
        server = self._boot('host1')
        name = server['OS-EXT-SRV-ATTR:instance_name']
        original = self._container('host1', server)
        self._write_marker(original, 'before-rescue')
        config, devices = _lasting(original.config), original.devices

        self.api.post_server_action(server['id'], {'rescue': {
            'adminPass': 'rescue-pw', 'rescue_image_ref': rescue_image['id']}})
        server = self._wait_for_state_change(server, 'RESCUE')
        self.assertEqual(1, server['OS-EXT-STS:power_state'])   # RUNNING: the rescue container
        self.assertEqual([name, name + '-rescue'], self._all_containers())
        original = self._container('host1', server)
        self.assertEqual('Stopped', original.status)
        self.assertEqual((config, devices), (_lasting(original.config), original.devices))
        rescue = self._rescue_container(server)
        self.assertEqual('Running', rescue.status)
        # booted from the rescue image, the instance's root filesystem beside it
        self.assertEqual('rescue-tools', self._run(rescue, 'cat', '/etc/rescue-image'))
        self.assertEqual('before-rescue', self._run(rescue, 'cat', RESCUE_PATH + '/root/marker'))
        self.assertNotEqual(0, rescue.execute(
            ['test', '-e', RESCUE_PATH + '/etc/rescue-image']).exit_code)
        # same id map: the instance's files are root's inside the rescue container
        self.assertEqual('0:0', self._run(rescue, 'stat', '-c', '%u:%g',
                                          RESCUE_PATH + '/root/marker'))
        # the rescue password is root's
        shadow_hash = self._run(rescue, 'grep', '^root:', '/etc/shadow').split(':')[1]
        self.assertEqual(shadow_hash, crypt.crypt('rescue-pw', shadow_hash))
        # Nova sees one instance on the host, not two
        self.assertEqual([name], self.computes['host1'].driver.list_instances())
        # repair the instance from the rescue container
        self._run(rescue, 'sh', '-c', 'echo repaired > %s/root/repair' % RESCUE_PATH)

        self.api.post_server_action(server['id'], {'unrescue': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(1, server['OS-EXT-STS:power_state'])
        self.assertEqual([name], self._all_containers())
        original = self._container('host1', server)
        self.assertEqual('Running', original.status)
        self.assertEqual((config, devices), (_lasting(original.config), original.devices))
        self.assertEqual('before-rescue', self._marker(original))
        self.assertEqual('repaired', self._run(original, 'cat', '/root/repair'))
        self.assertNotEqual(0, original.execute(['test', '-e', '/etc/rescue-image']).exit_code)
        self._delete_server(server)
        self.assertEqual([], self._all_containers())

    def test_rescue_container_has_the_instances_nics_and_console(self):
        port = self._tap_port(1)
        server = self._create_server(name='rescue-net', image_uuid=self.image['id'],
                                     flavor_id='1', networks=[{'port': port['id']}],
                                     host='host1')
        original = self._container('host1', server)
        config, devices = _lasting(original.config), original.devices
        nics = {k: v for k, v in devices.items() if v['type'] == 'nic'}
        self.assertEqual([port['mac_address']], [nic['hwaddr'] for nic in nics.values()])
        self._run(original, 'sh', '-c', 'echo instance-console-line > /dev/console')

        self.api.post_server_action(server['id'], {'rescue': None})
        server = self._wait_for_state_change(server, 'RESCUE')
        rescue = self._rescue_container(server)
        self.assertEqual(nics, {k: v for k, v in rescue.devices.items() if v['type'] == 'nic'})
        self.assertEqual(port['mac_address'],
                         self._run(rescue, 'cat', '/sys/class/net/eth0/address'))
        # the nics moved: the instance's container keeps everything else as it was
        original = self._container('host1', server)
        self.assertEqual('Stopped', original.status)
        self.assertEqual(config, _lasting(original.config))
        self.assertEqual({k: v for k, v in devices.items() if k not in nics}, original.devices)
        # the console Nova shows is the rescue container's
        self._run(rescue, 'sh', '-c', 'echo rescue-console-line > /dev/console')
        console = self.api.post_server_action(server['id'],
                                              {'os-getConsoleOutput': {}})['output']
        self.assertIn('rescue-console-line', console)
        self.assertNotIn('instance-console-line', console)

        self.api.post_server_action(server['id'], {'unrescue': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        original = self._container('host1', server)
        self.assertEqual('Running', original.status)
        self.assertEqual((config, devices), (_lasting(original.config), original.devices))
        self.assertEqual(port['mac_address'],
                         self._run(original, 'cat', '/sys/class/net/eth0/address'))
        console = self.api.post_server_action(server['id'],
                                              {'os-getConsoleOutput': {}})['output']
        self.assertNotIn('rescue-console-line', console)
        self._delete_server(server)
        self.assertEqual([], self._all_containers())
        self.assertNotIn(nics['eth0']['parent'], base.host_links())

    def test_delete_rescued_server_removes_both_containers(self):
        server = self._boot('host1')
        self._write_marker(self._container('host1', server), 'own-image')
        # no rescue image named: the instance's own image
        self.api.post_server_action(server['id'], {'rescue': None})
        server = self._wait_for_state_change(server, 'RESCUE')
        rescue = self._rescue_container(server)
        self.assertEqual('Running', rescue.status)
        self.assertEqual('own-image', self._run(rescue, 'cat', RESCUE_PATH + '/root/marker'))
        self._delete_server(server)
        self.assertEqual([], self._all_containers())

    def test_rescue_of_an_isolated_instance_keeps_file_owners(self):
        flavor = self._flavor('isolated')
        self.admin_api.post_extra_spec(flavor, {'extra_specs': {'lxd:isolated': 'true'}})
        server = self._boot('host1', flavor_id=flavor)
        original = self._container('host1', server)
        self._write_marker(original, 'isolated')
        self._run(original, 'chown', '1000:1000', '/root/marker')
        base_id = original.config['volatile.idmap.base']
        self.assertNotEqual('0', base_id)    # a map of its own
        self.api.post_server_action(server['id'], {'rescue': None})
        server = self._wait_for_state_change(server, 'RESCUE')
        rescue = self._rescue_container(server)
        self.assertEqual(base_id, rescue.config['volatile.idmap.base'])
        self.assertEqual('1000:1000', self._run(rescue, 'stat', '-c', '%u:%g',
                                                RESCUE_PATH + '/root/marker'))
        self.assertEqual('isolated', self._run(rescue, 'cat', RESCUE_PATH + '/root/marker'))
        self.api.post_server_action(server['id'], {'unrescue': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        original = self._container('host1', server)
        self.assertEqual(base_id, original.config['volatile.idmap.base'])
        self.assertEqual('1000:1000', self._run(original, 'stat', '-c', '%u:%g', '/root/marker'))
        self._delete_server(server)

    def test_host_boot_resumes_the_rescue_container_not_the_instance(self):
        server = self._boot('host1')
        self.api.post_server_action(server['id'], {'rescue': None})
        server = self._wait_for_state_change(server, 'RESCUE')
        self._rescue_container(server).stop(force=True, wait=True)   # the host went down
        ctxt = nova_context.get_admin_context()
        instance = objects.Instance.get_by_uuid(ctxt, server['id'])
        self.computes['host1'].driver.resume_state_on_host_boot(ctxt, instance, [], None)
        self.assertEqual('Running', self._rescue_container(server).status)
        self.assertEqual('Stopped', self._container('host1', server).status)
        self.api.post_server_action(server['id'], {'unrescue': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('Running', self._container('host1', server).status)
        self._delete_server(server)

    def test_failed_rescue_removes_the_rescue_container(self):
        # an image without an init cannot start: the rescue container fails at start
        broken = self._upload('no-init', _repacked(base.busybox_bytes(),
                                                   drop=('rootfs/sbin/init',)))
        server = self._boot('host1')
        name = server['OS-EXT-SRV-ATTR:instance_name']
        original = self._container('host1', server)
        self._write_marker(original, 'survives')
        config, devices = _lasting(original.config), original.devices
        self.api.post_server_action(server['id'], {'rescue': {
            'rescue_image_ref': broken['id']}})
        server = self._wait_for_state_change(server, 'ERROR')
        self.assertEqual([name], self._all_containers())
        original = self._container('host1', server)
        self.assertEqual('Stopped', original.status)
        self.assertEqual((config, devices), (_lasting(original.config), original.devices))
        # a hard reboot brings the instance back with its data
        self.api.post_server_action(server['id'], {'reboot': {'type': 'HARD'}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('survives', self._marker(self._container('host1', server)))
        self._delete_server(server)
        self.assertEqual([], self._all_containers())


base.for_each_backend(globals(), _RescueTest, 'TestRescue')


@pytest.mark.parametrize('backend_name', backends.selected())
def test_rootfs_is_found_in_a_btrfs_pool_on_the_backends_loop_file(backend_name):
    """Where rescue finds an instance's root filesystem in a loop-file btrfs pool."""
    client = backends.get(backend_name).client()
    pool_name = 'rescue%s' % uuid.uuid4().hex[:8]
    pool = client.storage_pools.create({'name': pool_name, 'driver': 'btrfs',
                                        'config': {'size': '1GiB'}})
    data = base.busybox_bytes()
    fingerprint = hashlib.sha256(data).hexdigest()
    ours = not client.images.exists(fingerprint)   # the driver's cache may hold it already
    container = None
    try:
        if ours:
            client.images.create(data, wait=True)
        container = client.instances.create({
            'name': 'rescue-path-' + pool_name,
            'source': {'type': 'image', 'fingerprint': fingerprint},
            'devices': {'root': {'type': 'disk', 'path': '/', 'pool': pool_name}}}, wait=True)
        path = rescue.rootfs_path(client.storage_pools.get(pool_name),
                                  types.SimpleNamespace(name=container.name, uuid='-'))
        assert os.path.lexists(os.path.join(path, 'sbin', 'init')), path
    finally:
        if container is not None:
            container.delete(wait=True)
        if ours and client.images.exists(fingerprint):
            client.images.get(fingerprint).delete(wait=True)
        pool.delete()
