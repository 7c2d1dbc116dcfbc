"""Evacuate among three compute hosts, each with its own backend.

Shared storage, stated honestly: a container's root filesystem lives in its host's backend
pool, which no other host can reach (driver.instance_on_disk is False). Evacuation therefore
rebuilds the instance from its image on the new host: data written inside it is not carried
over (use volumes for data that must survive a host loss). When the failed host comes back,
Nova removes the evacuated container there.
"""
from tests.functional.nova import base
from tests.functional.nova import moves_base


class _EvacuateTest(moves_base.MovesTestBase):
    __test__ = False
    host_count = 3

    def test_evacuate_then_source_returns(self):
        server = self._boot('host1')
        self._write_marker(self._container('host1', server), 'local-only')
        name = server['OS-EXT-SRV-ATTR:instance_name']
        self.computes['host1'].stop()
        service = self.api.get_services(host='host1', binary='nova-compute')[0]
        self.api.put_service_force_down(service['id'], True)
        # since microversion 2.95 an evacuated instance arrives stopped
        server = self._evacuate_server(server, expected_state='SHUTOFF')
        dest = server['OS-EXT-SRV-ATTR:host']
        self.assertIn(dest, ('host2', 'host3'))
        self.assertEqual('Stopped', self._container(dest, server).status)
        server = self._start_server(server)
        container = self._container(dest, server)
        self.assertEqual('Running', container.status)
        # rebuilt from the image: the data of the lost host did not come along
        self.assertNotEqual(0, container.execute(['cat', '/root/marker']).exit_code)
        # the stale copy stays on host1 until its compute service comes back
        self.assertEqual([name], self._nova_containers('host1'))
        self.flags(endpoint=self.daemons['host1'].socket, group='lxd')
        self._start_host('host1')
        self.api.put_service_force_down(service['id'], False)
        self.assertEqual([], self._nova_containers('host1'))
        other = 'host3' if dest == 'host2' else 'host2'
        self.assertEqual([], self._nova_containers(other))
        self._delete_server(server)


base.for_each_backend(globals(), _EvacuateTest, 'TestEvacuate')
