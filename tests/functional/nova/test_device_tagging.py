"""Device role tags on NICs through Nova's API (boot: microversion 2.42+, attach: 2.49+).

The tag reaches instance.device_metadata, the config drive's meta_data.json inside the
container and the metadata service's view of the instance; an untagged NIC is not listed, a
detached one disappears. Ports are bound as `tap` (no Open vSwitch here, see test_servers.py)
and are this test's own, so their host interface names collide with no other test process.
"""
import copy
import json
import random
import uuid

from nova.api.metadata import base as instance_metadata
from nova import context as nova_context
from nova import objects

from nova_lxd.virt import conf
from tests.functional.nova import base
from tests.functional.nova import moves_base


class _DeviceTaggingTest(moves_base.MovesTestBase):
    __test__ = False
    host_count = 1

    def _port(self, index):
        port = copy.deepcopy(self.neutron.port_1)
        port.update(id=str(uuid.uuid4()), mac_address='fa:16:3e:%02x:%02x:%02x' % (
            random.randint(0, 255), random.randint(0, 255), random.randint(0, 255)))
        port['fixed_ips'] = [dict(port['fixed_ips'][0], ip_address='192.168.1.%d' % (60 + index))]
        port['binding:vif_type'] = 'tap'
        self.neutron._ports[port['id']] = port
        return port

    def _device_metadata(self, server):
        instance = objects.Instance.get_by_uuid(nova_context.get_admin_context(), server['id'],
                                                expected_attrs=['device_metadata'])
        devices = instance.device_metadata.devices if instance.device_metadata else []
        return {d.mac: d.tags for d in devices}

    def _served_devices(self, server):
        """The `devices` list the metadata service serves to the instance."""
        served = instance_metadata.get_metadata_by_instance_id(server['id'], None).lookup(
            '/openstack/latest/meta_data.json')
        return {d['mac']: d['tags'] for d in json.loads(served).get('devices', [])}

    def test_tagged_nics_in_config_drive_and_metadata(self):
        tagged, untagged, attached = self._port(1), self._port(2), self._port(3)
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
        self.assertNotIn('COMPUTE_VOLUME_ATTACH_WITH_TAG', traits)


base.for_each_backend(globals(), _DeviceTaggingTest, 'TestDeviceTagging')
