"""Volumes given at boot (block_device_info), the driver called as the compute manager calls it.

Nova's own block device mappings (saved in its database, turned into the driver's format by
nova.virt.driver.get_block_device_info) carry os-brick local connections to loop devices: spawn
connects them and the container starts with them; destroy disconnects them; a failed spawn
leaves nothing; a start after a host reboot connects them again, at their new host devices;
a root volume is refused. os-brick's local connector has nothing to undo on
disconnect, so its disconnect_volume is wrapped (still run) to see that the driver calls it.
The same through Nova's API (one compute host): a server created with a data volume, and a
boot from volume that ends in ERROR with the reason.
"""
import os
import subprocess
import uuid

import fixtures
from os_brick.initiator.connectors import local as brick_local
from oslo_serialization import jsonutils

from nova import exception
from nova import objects
from nova.virt import driver as virt_driver

from tests.functional.nova import base
from tests.functional.nova import loop_volumes
from tests.functional.nova import moves_base
from tests.functional.nova import test_volumes

MARKER_B = b'boot-volume-b'
MARKER_C = b'boot-volume-c'


def _record_disconnects(test):
    """The device paths os-brick's local connector is asked to disconnect (it still runs).

    That connector does nothing on disconnect, so only this shows the driver called it.
    """
    disconnected = []
    real = brick_local.LocalConnector.disconnect_volume

    def recording_disconnect(connector, props, device_info, *args, **kwargs):
        disconnected.append(props['device_path'])
        return real(connector, props, device_info, *args, **kwargs)
    test.useFixture(fixtures.MonkeyPatch(
        'os_brick.initiator.connectors.local.LocalConnector.disconnect_volume',
        recording_disconnect))
    return disconnected


class _VolumesAtBootTest(test_volumes._VolumesTest):
    __test__ = False

    def setUp(self):
        super().setUp()
        self.disconnected = _record_disconnects(self)
        self.image_id = self._image(base.busybox_bytes())

    def _bdm(self, inst, dev, device_name, boot_index=None):
        bdm = objects.BlockDeviceMapping(
            self.ctxt, instance_uuid=inst.uuid, source_type='volume',
            destination_type='volume', volume_id=str(uuid.uuid4()), device_name=device_name,
            boot_index=boot_index, connection_info=jsonutils.dumps(self._info(dev)),
            delete_on_termination=False, volume_size=1)
        bdm.create()
        return bdm

    def _block_device_info(self, inst, bdms):
        return virt_driver.get_block_device_info(
            inst, objects.BlockDeviceMappingList(objects=bdms))

    def _new_instance(self):
        inst = self._instance(self.image_id)
        inst.root_device_name = '/dev/vda'
        inst.save()
        return inst

    def _boot(self, inst, block_device_info, network_info=None):
        meta = objects.ImageMeta.from_dict(self.glance.show(self.ctxt, self.image_id))
        self.driver.spawn(self.ctxt, inst, meta, [], None, {}, network_info=network_info,
                          block_device_info=block_device_info)

    def _loop_of(self, path):
        """The loop devices backed by path (the test's own, detached only by its cleanup)."""
        out = subprocess.run(['losetup', '-j', path], check=True, capture_output=True,
                             text=True).stdout
        return [line.split(':')[0] for line in out.splitlines()]

    def _volume_devices(self, name):
        return {k: v for k, v in self.client.instances.get(name).devices.items()
                if v.get('type') == 'unix-block'}

    def test_volumes_given_at_boot_are_there_when_it_starts_and_go_with_destroy(self):
        inst = self._new_instance()
        path_b, dev_b = self._loop('volb', 16, MARKER_B)
        path_c, dev_c = self._loop('volc', 16, MARKER_C)
        bdm_b = self._bdm(inst, dev_b, '/dev/vdb')
        bdm_c = self._bdm(inst, dev_c, '/dev/vdc')
        self._boot(inst, self._block_device_info(inst, [bdm_b, bdm_c]))

        self.assertEqual('Running', self.client.instances.get(inst.name).status)
        self.assertEqual({('/dev/vdb', dev_b), ('/dev/vdc', dev_c)},
                         {(d['path'], d['source'])
                          for d in self._volume_devices(inst.name).values()})
        self.assertEqual(MARKER_B.decode(),
                         self._exec(inst, 'head', '-c', str(len(MARKER_B)), '/dev/vdb'))
        self.assertEqual(MARKER_C.decode(),
                         self._exec(inst, 'head', '-c', str(len(MARKER_C)), '/dev/vdc'))
        # the host device is recorded in Nova's mapping, as libvirt records it
        saved = objects.BlockDeviceMapping.get_by_volume_and_instance(
            self.ctxt, bdm_b.volume_id, inst.uuid)
        self.assertEqual(dev_b, jsonutils.loads(saved.connection_info)['data']['device_path'])

        # a boot-time volume is a device like an attached one: detach_volume finds it
        self.driver.detach_volume(self.ctxt, self._info(dev_c), inst, '/dev/vdc')
        self.assertEqual(['/dev/vdb'], [d['path']
                                        for d in self._volume_devices(inst.name).values()])
        result = self.client.instances.get(inst.name).execute(['test', '-e', '/dev/vdc'])
        self.assertNotEqual(0, result.exit_code)
        self.assertEqual([dev_c], self.disconnected)

        # Nova deletes the server with the mappings it still has
        self.driver.destroy(self.ctxt, inst, [],
                            block_device_info=self._block_device_info(inst, [bdm_b]))
        self.assertFalse(self.client.instances.exists(inst.name))
        self.assertEqual([dev_c, dev_b], self.disconnected)
        # the loop devices are still the test's own, untouched
        self.assertEqual([dev_b], self._loop_of(path_b))
        self.assertEqual([dev_c], self._loop_of(path_c))

    def test_host_boot_and_power_on_reconnect_a_renumbered_volume(self):
        inst = self._new_instance()
        path, old_dev = self._loop('volb', 16, MARKER_B)
        bdm = self._bdm(inst, old_dev, '/dev/vdb')
        self._boot(inst, self._block_device_info(inst, [bdm]))
        self.driver.power_off(inst)
        # as after a host reboot: the volume comes back at another host device
        new_dev = subprocess.run(['losetup', '--find', '--show', path], check=True,
                                 capture_output=True, text=True).stdout.strip()
        self.addCleanup(subprocess.run, ['losetup', '-d', new_dev], capture_output=True)
        subprocess.run(['losetup', '-d', old_dev], check=True)
        self.assertNotEqual(old_dev, new_dev)
        bdm.connection_info = jsonutils.dumps(self._info(new_dev))
        bdm.save()
        bdi = self._block_device_info(inst, [bdm])

        self.driver.resume_state_on_host_boot(self.ctxt, inst, [], None, block_device_info=bdi)
        self.assertEqual([('/dev/vdb', new_dev)],
                         [(d['path'], d['source'])
                          for d in self._volume_devices(inst.name).values()])
        self.assertEqual(MARKER_B.decode(),
                         self._exec(inst, 'head', '-c', str(len(MARKER_B)), '/dev/vdb'))
        # a plain power cycle: the same device, once
        self.driver.power_off(inst)
        self.driver.power_on(self.ctxt, inst, [], block_device_info=bdi)
        self.assertEqual(1, len(self._volume_devices(inst.name)))
        self.assertEqual(MARKER_B.decode(),
                         self._exec(inst, 'head', '-c', str(len(MARKER_B)), '/dev/vdb'))
        self.driver.destroy(self.ctxt, inst, [], block_device_info=bdi)
        self.assertEqual([new_dev], self.disconnected)

    def test_failed_start_after_volumes_were_connected_leaves_nothing(self):
        inst = self._new_instance()
        _path, dev = self._loop('volb', 16, MARKER_B)
        bdi = self._block_device_info(inst, [self._bdm(inst, dev, '/dev/vdb')])
        nw = self._network_info()
        # the nic's host-side name is taken, so the backend cannot start the container
        subprocess.run(['ip', 'link', 'add', nw[0]['devname'], 'type', 'veth', 'peer', 'name',
                        nw[0]['devname'] + 'p'], check=True)
        self.addCleanup(subprocess.run, ['ip', 'link', 'del', nw[0]['devname']],
                        capture_output=True)
        self.assertRaises(Exception, self._boot, inst, bdi, nw)  # noqa: H202
        self.assertFalse(self.client.instances.exists(inst.name))
        self.assertEqual([dev], self.disconnected)

    def test_a_volume_that_cannot_be_connected_undoes_the_others(self):
        inst = self._new_instance()
        _path, dev = self._loop('volb', 16, MARKER_B)
        broken = self._bdm(inst, dev, '/dev/vdc')
        broken.connection_info = jsonutils.dumps({'driver_volume_type': 'local', 'data': {}})
        broken.save()
        bdi = self._block_device_info(inst, [self._bdm(inst, dev, '/dev/vdb'), broken])
        # os-brick's local connector refuses a connection without a device path
        self.assertRaises(ValueError, self._boot, inst, bdi)
        self.assertFalse(self.client.instances.exists(inst.name))
        self.assertEqual([dev], self.disconnected)

    def test_root_volume_is_refused_before_anything_is_made(self):
        inst = self._new_instance()
        _path, dev = self._loop('root', 16)
        connected = []
        self.useFixture(fixtures.MonkeyPatch(
            'os_brick.initiator.connectors.local.LocalConnector.connect_volume',
            lambda connector, props: connected.append(props)))
        bdi = self._block_device_info(inst, [self._bdm(inst, dev, '/dev/vda', boot_index=0)])
        error = self.assertRaises(exception.InvalidBDM, self._boot, inst, bdi)
        # an InvalidInput too: Nova aborts the build instead of rescheduling it
        self.assertIsInstance(error, exception.InvalidInput)
        self.assertIn('containers boot from images, not root volumes', str(error))
        self.assertIn('/dev/vda', str(error))
        self.assertFalse(self.client.instances.exists(inst.name))
        self.assertEqual([], connected)


# Only the helpers of the bases are wanted here, not their tests.
for _name in dir(test_volumes._VolumesTest):
    if _name.startswith('test_') and _name not in vars(_VolumesAtBootTest):
        setattr(_VolumesAtBootTest, _name, None)

base.for_each_backend(globals(), _VolumesAtBootTest, 'TestVolumesAtBoot')


class _VolumesAtBootThroughNovaTest(moves_base.MovesTestBase):
    """A server created through Nova's API with a data volume, on one compute host.

    Nova's compute manager attaches it in Cinder (the fixture's connection: os-brick's local
    connector to a loop device) and hands it to spawn in block_device_info.
    """
    __test__ = False
    host_count = 1

    def setUp(self):
        super().setUp()
        volumes = loop_volumes.LoopVolumes(self)
        self.volume_id = volumes.create(MARKER_B)
        self.dev = volumes.views[self.volume_id][0]
        self.path = os.path.join(volumes.tmp, self.volume_id)
        self.disconnected = volumes.disconnected

    def test_server_created_with_a_volume_reads_it_and_delete_disconnects_it(self):
        body = self._build_server(name='with-volume', image_uuid=self.image['id'],
                                  flavor_id='1', networks='none', host='host1')
        body['block_device_mapping_v2'] = [
            {'boot_index': 0, 'uuid': self.image['id'], 'source_type': 'image',
             'destination_type': 'local'},
            {'boot_index': -1, 'uuid': self.volume_id, 'source_type': 'volume',
             'destination_type': 'volume', 'device_name': '/dev/vdb'}]
        self.admin_api.microversion = '2.74'
        server = self._wait_for_state_change(
            self.admin_api.post_server({'server': body}), 'ACTIVE')
        attachments = self.api.get_server_volumes(server['id'])
        self.assertEqual([(self.volume_id, '/dev/vdb')],
                         [(a['volumeId'], a['device']) for a in attachments])
        container = self._container('host1', server)
        self.assertEqual(MARKER_B.decode(), self._run(container, 'head', '-c',
                                                      str(len(MARKER_B)), '/dev/vdb'))
        self._delete_server(server)
        self.assertEqual([self.dev], self.disconnected)
        self.assertEqual([], self._nova_containers('host1'))
        self.assertIn(self.dev, subprocess.run(['losetup', '-j', self.path], check=True,
                                               capture_output=True, text=True).stdout)

    def test_boot_from_volume_ends_in_error_with_the_reason_and_nothing_made(self):
        body = self._build_server(name='from-volume', image_uuid=self.image['id'],
                                  flavor_id='1', networks='none', host='host1')
        body.pop('imageRef')
        body['block_device_mapping_v2'] = [
            {'boot_index': 0, 'uuid': self.image['id'], 'source_type': 'image',
             'destination_type': 'volume', 'volume_size': 1}]
        self.admin_api.microversion = '2.74'
        server = self._wait_for_state_change(
            self.admin_api.post_server({'server': body}), 'ERROR')
        # aborted, not rescheduled: the reason reaches the user
        self.assertIn('containers boot from images, not root volumes',
                      server['fault']['message'])
        self.assertEqual([], self._nova_containers('host1'))
        self._delete_server(server)


base.for_each_backend(globals(), _VolumesAtBootThroughNovaTest, 'TestVolumesAtBootThroughNova')
