"""Device role tags on NICs and volumes through Nova's API (boot: 2.42+, attach: 2.49+).

The tag reaches instance.device_metadata, the config drive's meta_data.json inside the
container and the metadata service's view of the instance; an untagged NIC or volume is not
listed, a detached one disappears. Ports are bound as `tap` (no Open vSwitch here, see
test_servers.py) and are this test's own, so their host interface names collide with no other
test process. Volumes are loop devices through os-brick's local connector (loop_volumes).
"""
import json
import time

from nova.api.metadata import base as instance_metadata
from nova import context as nova_context
from nova import objects
from nova.volume import cinder

from nova_lxd.virt import conf
from tests.functional.nova import base
from tests.functional.nova import loop_volumes
from tests.functional.nova import moves_base


class _DeviceTaggingTest(moves_base.MovesTestBase):
    __test__ = False
    host_count = 1

    def _device_metadata(self, server):
        instance = objects.Instance.get_by_uuid(nova_context.get_admin_context(), server['id'],
                                                expected_attrs=['device_metadata'])
        devices = instance.device_metadata.devices if instance.device_metadata else []
        return {d.mac: d.tags for d in devices
                if isinstance(d, objects.NetworkInterfaceMetadata)}

    def _disk_metadata(self, server):
        instance = objects.Instance.get_by_uuid(nova_context.get_admin_context(), server['id'],
                                                expected_attrs=['device_metadata'])
        devices = instance.device_metadata.devices if instance.device_metadata else []
        return {d.serial: (d.path, d.tags) for d in devices
                if isinstance(d, objects.DiskMetadata)}

    def _served(self, server):
        served = instance_metadata.get_metadata_by_instance_id(server['id'], None).lookup(
            '/openstack/latest/meta_data.json')
        return json.loads(served).get('devices', [])

    def _served_devices(self, server):
        """The NICs of the `devices` list the metadata service serves to the instance."""
        return {d['mac']: d['tags'] for d in self._served(server) if d['type'] == 'nic'}

    def _served_disks(self, server):
        return {d['serial']: (d['path'], d['tags']) for d in self._served(server)
                if d['type'] == 'disk'}

    def _swap_as_cinder(self, server, old, new):
        """Swap old for new as Cinder does when it migrates a volume.

        Nova's API accepts no other caller: the old volume is `migrating`, and the request has
        the rights of the service role (given to admins here, as an operator may).
        """
        get = cinder.API.get   # the Cinder fixture's, a bound method

        def migrating_get(context, volume_id, microversion=None):
            volume = get(context, volume_id, microversion=microversion)
            return dict(volume, migration_status='migrating') if volume_id == old else volume
        self.stub_out('nova.volume.cinder.API.get', staticmethod(migrating_get))
        self.policy.set_rules({'os_compute_api:os-volumes-attachments:swap': 'rule:admin_api'},
                              overwrite=False)
        self.admin_api.put_server_volume(server['id'], old, new)
        self.notifier.wait_for_versioned_notifications('instance.volume_swap.end')

    @staticmethod
    def _wait_until(condition, timeout=30):
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.1)

    def test_tagged_nics_in_config_drive_and_metadata(self):
        tagged, untagged, attached = self._tap_port(1), self._tap_port(2), self._tap_port(3)
        body = self._build_server(name='tagged', image_uuid=self.image['id'], flavor_id='1',
                                  networks=[{'port': tagged['id'], 'tag': 'frontend'},
                                            {'port': untagged['id']}], host='host1')
        body['config_drive'] = True
        self.admin_api.microversion = '2.74'
        server = self._wait_for_state_change(self.admin_api.post_server({'server': body}),
                                             'ACTIVE')
        container = self._container('host1', server)

        tags = self._device_metadata(server)
        self.assertEqual({tagged['mac_address']: ['frontend']}, tags)
        drive = json.loads(self._run(container, 'cat', '%s/openstack/latest/meta_data.json'
                                     % conf.CONF.lxd.config_drive_path))
        nics = [d for d in drive['devices'] if d['type'] == 'nic']
        self.assertEqual([{'type': 'nic', 'bus': 'none', 'address': 'none',
                           'mac': tagged['mac_address'], 'tags': ['frontend'],
                           'vf_trusted': False}], nics)
        # the guest finds the tagged NIC by its MAC
        self.assertIn(tagged['mac_address'], [
            self._run(container, 'cat', '/sys/class/net/%s/address' % nic)
            for nic in ('eth0', 'eth1')])

        self.admin_api.attach_interface(server['id'], {'interfaceAttachment': {
            'port_id': attached['id'], 'tag': 'backend'}})
        self.notifier.wait_for_versioned_notifications('instance.interface_attach.end')
        tags = self._device_metadata(server)
        expected = {tagged['mac_address']: ['frontend'], attached['mac_address']: ['backend']}
        self.assertEqual(expected, tags)
        self.assertEqual(expected, self._served_devices(server))

        self.admin_api.detach_interface(server['id'], attached['id'])
        self.notifier.wait_for_versioned_notifications('instance.interface_detach.end')
        tags = self._device_metadata(server)
        self.assertEqual({tagged['mac_address']: ['frontend']}, tags)
        self.assertEqual({tagged['mac_address']: ['frontend']}, self._served_devices(server))
        self._delete_server(server)

    def test_tags_are_reported_as_a_host_capability(self):
        traits = self._get_provider_traits(self._get_provider_uuid_by_host('host1'))
        self.assertIn('COMPUTE_DEVICE_TAGGING', traits)
        self.assertIn('COMPUTE_NET_ATTACH_INTERFACE_WITH_TAG', traits)
        self.assertIn('COMPUTE_VOLUME_ATTACH_WITH_TAG', traits)

    def test_tagged_volumes_in_config_drive_and_metadata(self):
        volumes = loop_volumes.LoopVolumes(self)
        tagged = volumes.create(b'tagged-at-boot')
        untagged = volumes.create()
        attached = volumes.create(b'tagged-on-attach')
        body = self._build_server(name='tagged-volumes', image_uuid=self.image['id'],
                                  flavor_id='1', networks='none', host='host1')
        body['config_drive'] = True
        body['block_device_mapping_v2'] = [
            {'boot_index': 0, 'uuid': self.image['id'], 'source_type': 'image',
             'destination_type': 'local'},
            {'boot_index': -1, 'uuid': tagged, 'source_type': 'volume',
             'destination_type': 'volume', 'device_name': '/dev/vdb', 'tag': 'database'},
            {'boot_index': -1, 'uuid': untagged, 'source_type': 'volume',
             'destination_type': 'volume', 'device_name': '/dev/vdc'}]
        self.admin_api.microversion = '2.74'
        server = self._wait_for_state_change(self.admin_api.post_server({'server': body}),
                                             'ACTIVE')
        container = self._container('host1', server)

        expected = {tagged: ('/dev/vdb', ['database'])}
        self.assertEqual(expected, self._disk_metadata(server))
        drive = json.loads(self._run(container, 'cat', '%s/openstack/latest/meta_data.json'
                                     % conf.CONF.lxd.config_drive_path))
        self.assertEqual([{'type': 'disk', 'bus': 'none', 'address': 'none',
                           'serial': tagged, 'path': '/dev/vdb', 'tags': ['database']}],
                         [d for d in drive['devices'] if d['type'] == 'disk'])
        # the guest finds the tagged volume at the path the metadata names
        self.assertEqual('tagged-at-boot', self._run(container, 'head', '-c', '14', '/dev/vdb'))

        self.admin_api.post_server_volume(server['id'], {'volumeAttachment': {
            'volumeId': attached, 'tag': 'logs'}})
        self._wait_for_volume_attach(server['id'], attached)
        self.notifier.wait_for_versioned_notifications('instance.volume_attach.end')
        path = self.admin_api.get_server_volume(server['id'], attached)['device']
        expected[attached] = (path, ['logs'])
        self.assertEqual(expected, self._disk_metadata(server))
        self.assertEqual(expected, self._served_disks(server))
        self.assertEqual('tagged-on-attach', self._run(container, 'head', '-c', '16', path))

        self.admin_api.delete_server_volume(server['id'], attached)
        self._wait_for_volume_detach(server['id'], attached)
        self.notifier.wait_for_versioned_notifications('instance.volume_detach.end')
        del expected[attached]
        self.assertEqual(expected, self._disk_metadata(server))
        self.assertEqual(expected, self._served_disks(server))
        self.assertEqual(volumes.views[attached], volumes.disconnected)
        self._delete_server(server)

    def test_swapped_tagged_volume_is_named_in_metadata(self):
        """After a swap the metadata names the volume the BDM now names.

        Here that is the new one: the Cinder fixture completes a migration under the new id.
        Nova records it only after the driver returns; before the fix the old id stayed in the
        metadata until the next attach or detach.
        """
        volumes = loop_volumes.LoopVolumes(self)
        old, new = volumes.create(b'swapped-data'), volumes.create()
        body = self._build_server(name='swapped-volume', image_uuid=self.image['id'],
                                  flavor_id='1', networks='none', host='host1')
        body['block_device_mapping_v2'] = [
            {'boot_index': 0, 'uuid': self.image['id'], 'source_type': 'image',
             'destination_type': 'local'},
            {'boot_index': -1, 'uuid': old, 'source_type': 'volume',
             'destination_type': 'volume', 'device_name': '/dev/vdb', 'tag': 'database'}]
        self.admin_api.microversion = '2.74'
        server = self._wait_for_state_change(self.admin_api.post_server({'server': body}),
                                             'ACTIVE')
        self.assertEqual({old: ('/dev/vdb', ['database'])}, self._disk_metadata(server))

        self._swap_as_cinder(server, old, new)
        bdm = objects.BlockDeviceMapping.get_by_volume_and_instance(
            nova_context.get_admin_context(), new, server['id'])
        self.assertEqual('/dev/vdb', bdm.device_name)
        expected = {new: ('/dev/vdb', ['database'])}
        self._wait_until(lambda: self._disk_metadata(server) == expected)
        self.assertEqual(expected, self._disk_metadata(server))
        self.assertEqual(expected, self._served_disks(server))
        # and it is the volume the guest has there, with the old one's data copied
        container = self._container('host1', server)
        self.assertEqual('swapped-data', self._run(container, 'head', '-c', '12', '/dev/vdb'))
        self.assertEqual(volumes.views[old], volumes.disconnected)
        self._delete_server(server)


base.for_each_backend(globals(), _DeviceTaggingTest, 'TestDeviceTagging')
