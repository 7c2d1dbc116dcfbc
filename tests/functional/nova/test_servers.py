"""Nova's in-process harness (API, conductor, scheduler, compute, placement) with LXDDriver.

Servers boot from real image bytes in Nova's Glance fixture onto a real backend; what the API
reports is checked against the container itself, and nothing may be left on the host.

The lifecycle tests bind the Neutron fixture's port as `tap` (Nova 34 rejects Linux bridge
bindings); the OVS tests bind ports as `ovs`, plain and hybrid, on a private Open vSwitch.
"""
import copy
import io
import os
import socket
import time
import uuid

import fixtures
import pytest
import os_vif
from vif_plug_ovs import privsep as vif_plug_privsep

from nova.tests.functional import integrated_helpers

from tests.functional.nova import backends
from tests.functional.nova import base
from tests.functional.nova import busybox_image
from tests.functional.nova import instances_path
from tests.functional.nova.conftest import API_PASTE
from tests.functional.nova import ovs


class _LXDServers(integrated_helpers.ProviderUsageBaseTestCase):
    __test__ = False
    backend_name = None
    compute_driver = 'lxd.LXDDriver'

    def setUp(self):
        self.flags(api_paste_config=API_PASTE, group='wsgi')
        super().setUp()
        self.daemon = backends.get(self.backend_name)
        self.flags(endpoint=self.daemon.socket, group='lxd')
        self.flags(vif_plugging_timeout=0)
        instances_path.use_private(self)
        self.client = self.daemon.client()
        self.addCleanup(self._remove_leftovers)
        self.addCleanup(self._assert_nothing_left)
        self.image = self.glance.create(None, {
            'name': 'busybox', 'container_format': 'bare', 'disk_format': 'raw',
            'properties': {'lxd_image_format': 'unified'}},
            data=io.BytesIO(base.busybox_bytes()))
        self.port = self._new_port(**{'binding:vif_type': 'tap'})
        self.compute = self._start_compute('host1')

    def _new_port(self, **fields):
        """A copy of the fixture's port_1 with its own id and MAC.

        Test processes running side by side share the host's interface names (tap<port id>).
        """
        port = copy.deepcopy(self.neutron.port_1)
        port.update(fields, id=str(uuid.uuid4()),
                    mac_address='fa:16:3e:%02x:%02x:%02x' % tuple(os.urandom(3)))
        self.neutron._ports[port['id']] = port
        return port

    def _assert_nothing_left(self):
        containers = [i.name for i in self.client.instances.all()
                      if 'user.nova.uuid' in i.config]
        self.assertEqual([], containers)
        ports = ('tap' + self.port['id'][:11], 'tin' + self.port['id'][:11])
        self.assertFalse([n for n in base.host_links() if n.startswith(ports)])

    def _remove_leftovers(self):
        """After a failure: what the assertion above found must not outlive the test."""
        import subprocess
        for inst in self.client.instances.all():
            if 'user.nova.uuid' in inst.config:
                if inst.status != 'Stopped':
                    inst.stop(force=True, wait=True)
                inst.delete(wait=True)
        for name in base.host_links():
            if name.startswith(('tap' + self.port['id'][:11], 'tin' + self.port['id'][:11])):
                subprocess.run(['ip', 'link', 'del', name], capture_output=True)

    def _settle(self, server, status):
        """Wait (patiently: the host is shared and busy) until the API reports status."""
        return self._wait_for_server_parameter(
            server, {'status': status, 'OS-EXT-STS:task_state': None}, max_retries=240)

    def _action(self, server, action, status):
        self.api.post_server_action(server['id'], action)
        return self._settle(server, status)

    def _boot(self, networks=None, name='c1'):
        body = self._build_server(name=name, image_uuid=self.image['id'], flavor_id='1',
                                  networks=networks or [{'port': self.port['id']}])
        return self._settle(self.api.post_server({'server': body}), 'ACTIVE')

    def _container(self, server):
        return self.client.instances.get(server['OS-EXT-SRV-ATTR:instance_name'])

    def _run(self, container, *command):
        """command's stdout in the container (stripped); a non-zero exit fails the test.

        Through exec's recorded output (record-output), not pylxd's execute(): its ws4py
        websockets can close before the last frame is read, and against LXD 5.0.2 a `hostname`
        came back empty with exit 0 (CI).
        """
        api = container.client.api.instances[container.name]
        response = api.exec.post(json={'command': list(command), 'record-output': True,
                                       'wait-for-websocket': False, 'interactive': False})
        operation = response.json()['operation'].rsplit('/', 1)[-1]
        metadata = container.client.api.operations[operation].wait.get().json()['metadata']
        output = {fd: api.logs[path.rsplit('/', 1)[-1]].get(is_api=False).text
                  for fd, path in metadata['metadata']['output'].items()}
        self.assertEqual(0, metadata['metadata']['return'], output.get('2'))
        return output['1'].strip()

    def test_server_lifecycle(self):
        server = self._boot()
        container = self._container(server)
        self.assertEqual('Running', container.status)
        flavor = self.api.get_flavor('1')
        # the flavor's limits, seen from inside
        self.assertEqual(str(flavor['vcpus']), self._run(container, 'nproc'))
        limit = self._run(container, 'sh', '-c',
                          'mkdir -p /tmp/cg && mount -t cgroup -o memory memory /tmp/cg && '
                          'cat /tmp/cg/memory.limit_in_bytes; umount /tmp/cg')
        self.assertEqual(flavor['ram'] * 1024 * 1024, int(limit))
        # the NIC carries the port's MAC
        self.assertEqual(self.port['mac_address'],
                         self._run(container, 'cat', '/sys/class/net/eth0/address'))
        self.assertIn(busybox_image.BOOT_LINE,
                      self.api.post_server_action(server['id'],
                                                  {'os-getConsoleOutput': {}})['output'])

        server = self._action(server, {'os-stop': None}, 'SHUTOFF')
        self.assertEqual('Stopped', self._container(server).status)
        server = self._action(server, {'os-start': None}, 'ACTIVE')
        self.assertEqual('Running', self._container(server).status)

        for hard in (False, True):
            pid = self._container(server).state().pid
            server = self._action(server, {'reboot': {'type': 'HARD' if hard else 'SOFT'}},
                                  'ACTIVE')
            self.assertEqual('Running', self._container(server).status)
            self.assertNotEqual(pid, self._container(server).state().pid)

        server = self._action(server, {'pause': None}, 'PAUSED')
        self.assertEqual('Frozen', self._container(server).status)
        server = self._action(server, {'unpause': None}, 'ACTIVE')
        self.assertEqual('Running', self._container(server).status)

        server = self._action(server, {'suspend': None}, 'SUSPENDED')
        self.assertEqual('Frozen', self._container(server).status)
        server = self._action(server, {'resume': None}, 'ACTIVE')
        self.assertEqual('Running', self._container(server).status)

        instance_dir = os.path.join(self.flags_instances_path(), server['id'])
        self._delete_server(server)
        self.assertFalse(os.path.exists(instance_dir))

    def flags_instances_path(self):
        from nova_lxd.virt import conf
        return conf.CONF.instances_path

    def _serial_port(self, server):
        """(host, port) Nova hands its serial proxy for the server's console."""
        self.api.microversion = '2.31'
        try:
            url = self.api.api_post('/servers/%s/remote-consoles' % server['id'], {
                'remote_console': {'protocol': 'serial', 'type': 'serial'}}
            ).body['remote_console']['url']
            token = url.split('token=', 1)[1].split('&')[0]
            console = self.admin_api.api_get('/os-console-auth-tokens/%s' % token).body['console']
        finally:
            self.api.microversion = None
        self.assertEqual(server['id'], console['instance_uuid'])
        return console['host'], int(console['port'])

    @staticmethod
    def _read_until(sock, wanted, poke=None, timeout=30):
        """What the socket gave until `wanted` came (poke() again each second till then)."""
        seen, deadline = b'', time.monotonic() + timeout
        sock.settimeout(1)
        while wanted not in seen and time.monotonic() < deadline:
            if poke is not None:
                poke()
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            if not data:
                break
            seen += data
        return seen

    def test_serial_console(self):
        self.flags(enabled=True, proxyclient_address='127.0.0.1', port_range='20300:20400',
                   group='serial_console')
        server = self._boot()
        container = self._container(server)
        host, port = self._serial_port(server)
        self.assertEqual(('127.0.0.1', port), self._serial_port(server))   # one per instance
        with socket.create_connection((host, port), timeout=10) as sock:
            # the container's console output reaches the TCP client
            seen = self._read_until(sock, b'SERIAL-OUT', poke=lambda: self._run(
                container, 'sh', '-c', 'echo SERIAL-OUT > /dev/console'))
            self.assertIn(b'SERIAL-OUT', seen)
            # and what the client types reaches a reader of the console inside
            container.client.api.instances[container.name].exec.post(json={
                'command': ['sh', '-c', 'read line < /dev/console; '
                            'echo "got:$line" > /dev/console'],
                'record-output': True, 'wait-for-websocket': False, 'interactive': False})
            seen = self._read_until(sock, b'got:typed-in', poke=lambda: sock.sendall(
                b'typed-in\r'))
            self.assertIn(b'got:typed-in', seen)
        self._delete_server(server)
        # the port is closed with the instance
        self.assertRaises(OSError, socket.create_connection, (host, port), 2)

    def test_config_drive(self):
        self.flags(force_config_drive=True)
        server = self._boot()
        container = self._container(server)
        meta = self._run(container, 'cat', '/config-drive/openstack/latest/meta_data.json')
        self.assertIn(server['id'], meta)
        # owned by the container's root although the container is unprivileged
        self.assertEqual('0 0', self._run(container, 'stat', '-c', '%u %g',
                                          '/config-drive/openstack/latest/meta_data.json'))
        self.assertNotEqual('0', self._run(container, 'sh', '-c',
                                           'touch /config-drive/x 2>/dev/null; echo $?'))
        self._delete_server(server)


base.for_each_backend(globals(), _LXDServers, 'TestLXDServers')


@pytest.mark.isolated
class _LXDServersOVS(_LXDServers):
    """Ports bound as `ovs` on a private Open vSwitch (userspace datapath): plain and hybrid.

    Isolated: os-vif keeps one ovsdb connection per process, so after other driver tests in the
    same worker its bridge commands go astray; alone, in a fresh process, they are reliable.
    """

    def setUp(self):
        self.ovs = ovs.shared()
        self.bridge = 'br-nlx%s' % uuid.uuid4().hex[:6]
        self.addCleanup(self.ovs.vsctl, '--if-exists', 'del-br', self.bridge)
        super().setUp()

    def _bind_ports(self):
        # os-vif's OVS plugin, configured for this switch, running its privileged parts in
        # process (the test runs as root; a deployment runs them in privsep-helper)
        self.useFixture(fixtures.MockPatchObject(vif_plug_privsep.vif_plug, 'client_mode',
                                                 False))
        os_vif.initialize(reset=True)
        self.flags(ovsdb_connection=self.ovs.connection, group='os_vif_ovs')
        os_vif.initialize(reset=True)
        details = {'datapath_type': 'netdev', 'bridge_name': self.bridge}
        self.plain = self._new_port(**{'binding:vif_type': 'ovs', 'binding:vif_details':
                                       dict(details, port_filter=True)})
        self.hybrid = self._new_port(**{'binding:vif_type': 'ovs', 'binding:vif_details': dict(
            details, port_filter=False, ovs_hybrid_plug=True)})

    def _host_leftovers(self):
        prefixes = tuple(p + self.neutron._ports[i]['id'][:11] for i in
                         (self.plain['id'], self.hybrid['id'])
                         for p in ('tap', 'tin', 'qbr', 'qvb', 'qvo'))
        return [n for n in base.host_links() if n.startswith(prefixes)]

    def test_ovs_plain_and_hybrid_ports(self):
        self._bind_ports()
        server = self._boot(networks=[{'port': self.plain['id']}, {'port': self.hybrid['id']}],
                            name='ovs')
        container = self._container(server)
        self.assertEqual(self.plain['mac_address'],
                         self._run(container, 'cat', '/sys/class/net/eth0/address'))
        self.assertEqual(self.hybrid['mac_address'],
                         self._run(container, 'cat', '/sys/class/net/eth1/address'))
        ports = self.ovs.ports(self.bridge)
        self.assertIn(('tap' + self.plain['id'])[:14], ports)         # the veth's host end
        self.assertIn(('qvo' + self.hybrid['id'])[:14], ports)        # hybrid: qbr -> qvb/qvo
        iface = self.ovs.vsctl('get', 'Interface', ('tap' + self.plain['id'])[:14],
                               'external_ids:iface-id').strip().strip('"')
        self.assertEqual(self.plain['id'], iface)
        self._delete_server(server)
        self.assertEqual([], self.ovs.ports(self.bridge))
        self.assertEqual([], self._host_leftovers())

    # the lifecycle and config-drive tests run in the tap-bound classes
    test_server_lifecycle = None
    test_config_drive = None
    test_serial_console = None


base.for_each_backend(globals(), _LXDServersOVS, 'TestLXDServersOVS')
