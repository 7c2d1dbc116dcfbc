"""Shelve (snapshot to Glance, the host freed) and unshelve on the other host, with the data."""
from tests.functional.nova import base
from tests.functional.nova import moves_base


class _ShelveTest(moves_base.MovesTestBase):
    __test__ = False

    def test_shelve_offload_unshelve_elsewhere(self):
        self.flags(shelved_offload_time=0)
        server = self._boot('host1')
        self._write_marker(self._container('host1', server), 'shelved-data')
        server = self._shelve_server(server)
        # the host is freed: no container, no scratch image; the snapshot is in Glance
        self.assertEqual([], self._nova_containers('host1'))
        self.assertEqual([], self._scratch_images('host1'))
        self.computes['host1'].stop()       # unshelve must land on the other host
        self.api.put_service_force_down(
            self.api.get_services(host='host1', binary='nova-compute')[0]['id'], True)
        server = self._unshelve_server(server)
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        container = self._container('host2', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('shelved-data', self._marker(container))
        self._delete_server(server)


base.for_each_backend(globals(), _ShelveTest, 'TestShelve')
