"""Interfaces attached to and detached from a running server through Nova's API.

The NIC appears inside the running container (same init process: no restart) with the port's
MAC address, and disappears on detach, its host end removed. Ports are bound as `tap` (see
test_servers.py: no Open vSwitch on this machine, Linux bridge bindings refused by Nova 34).
"""
import copy

from tests.functional.nova import base
from tests.functional.nova import moves_base


class _InterfacesTest(moves_base.MovesTestBase):
    __test__ = False
    host_count = 1

    def _tap(self, port):
        ports = self.neutron._ports
        ports.setdefault(port['id'], copy.deepcopy(port))['binding:vif_type'] = 'tap'
        return ports[port['id']]

    def _links(self, container):
        return set(self._run(container, 'ls', '/sys/class/net').split())

    def test_attach_detach_interface_running(self):
        port1, port2 = self._tap(self.neutron.port_1), self._tap(self.neutron.port_2)
        server = self._create_server(name='nics', image_uuid=self.image['id'], flavor_id='1',
                                     networks=[{'port': port1['id']}], host='host1')
        container = self._container('host1', server)
        pid = container.state().pid
        self.assertEqual({'lo', 'eth0'}, self._links(container))

        self.api.attach_interface(server['id'],
                                  {'interfaceAttachment': {'port_id': port2['id']}})
        self.notifier.wait_for_versioned_notifications('instance.interface_attach.end')
        container = self._container('host1', server)
        self.assertEqual({'lo', 'eth0', 'eth1'}, self._links(container))
        self.assertEqual(port2['mac_address'],
                         self._run(container, 'cat', '/sys/class/net/eth1/address'))
        self.assertEqual(pid, container.state().pid)

        self.api.detach_interface(server['id'], port2['id'])
        self.notifier.wait_for_versioned_notifications('instance.interface_detach.end')
        container = self._container('host1', server)
        self.assertEqual({'lo', 'eth0'}, self._links(container))
        self.assertEqual(pid, container.state().pid)
        self.assertFalse([n for n in base.host_links()
                          if n.startswith(('tap88dae9fa', 'tin88dae9fa'))])
        self._delete_server(server)
        self.assertFalse([n for n in base.host_links()
                          if n.startswith(('tapce531f90', 'tince531f90'))])


base.for_each_backend(globals(), _InterfacesTest, 'TestInterfaces')
