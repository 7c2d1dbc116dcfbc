"""Nova's in-process harness with several compute hosts, each on its own backend (issue 7).

Every host is a compute service whose driver reaches its own daemon through a unix socket
([lxd] endpoint, set just before the service starts: the driver connects in init_host); moves
between hosts go over HTTPS, each backend trusting one client certificate and each server
certificate pinned ([lxd] migration_endpoints / migration_server_certs / client_cert).
"""
import copy
import io
import random
import sys
import uuid
from unittest import mock

from oslo_utils.fixture import uuidsentinel as uuids
from pylxd import exceptions as lxd_exceptions

from nova.tests.functional import integrated_helpers

from tests.functional.nova import base
from tests.functional.nova import hosts
from tests.functional.nova import instances_path
from tests.functional.nova.conftest import API_PASTE
from nova_lxd.virt import image as lxd_image


class MovesTestBase(integrated_helpers.ProviderUsageBaseTestCase):
    __test__ = False
    backend_name = None
    compute_driver = 'lxd.LXDDriver'
    host_count = 2

    def setUp(self):
        self.flags(api_paste_config=API_PASTE, group='wsgi')
        super().setUp()
        self.flags(vif_plugging_timeout=0, allow_resize_to_same_host=True)
        instances_path.use_private(self)
        self._real_https()
        self.daemons, endpoints, certs = {}, {}, {}
        for index in range(self.host_count):
            name = 'host%d' % (index + 1)
            self.daemons[name] = hosts.daemon(self.backend_name, index)
            endpoints[name], certs[name] = hosts.https(self.backend_name, index)
        crt, key = hosts.client_cert()
        self.flags(client_cert=crt, client_key=key, migration_endpoints=endpoints,
                   migration_server_certs=certs, listen_events=False, group='lxd')
        self.clients = {name: d.client() for name, d in self.daemons.items()}
        self.addCleanup(self._remove_leftovers)
        self.addCleanup(self._assert_nothing_left)
        self._keep_uploaded_image_data()
        self.image = self.glance.create(None, {
            'name': 'busybox', 'container_format': 'bare', 'disk_format': 'raw',
            'properties': {'lxd_image_format': 'unified'}},
            data=io.BytesIO(base.busybox_bytes()))
        self.computes = {}
        for name, daemon in self.daemons.items():
            self.flags(endpoint=daemon.socket, group='lxd')
            self.computes[name] = self._start_host(name)

    def _real_https(self):
        """Undo wsgi-intercept's HTTPS connection class, which cannot reach a real server.

        The in-process services it serves use plain http; the driver talks real HTTPS to the
        backends.
        """
        from urllib3 import connection, connectionpool
        pool = connectionpool.HTTPSConnectionPool
        self.addCleanup(setattr, pool, 'ConnectionCls', pool.ConnectionCls)
        pool.ConnectionCls = connection.HTTPSConnection

    def _start_host(self, name):
        """One compute service; its node identity pinned, as nova's libvirt harness does.

        In one process CONF.host and the local node uuid are global, while each real compute
        host has its own: each driver object keeps the ones it started with.
        """
        node_uuid = str(getattr(uuids, 'node_%s' % name))
        with mock.patch('nova.virt.node.get_local_node_uuid', return_value=node_uuid):
            compute = self._start_compute(name)
        compute.driver.get_available_nodes = lambda refresh=False: [name]
        compute.driver.get_nodenames_by_uuid = lambda refresh=False: {node_uuid: name}
        return compute

    def _keep_uploaded_image_data(self):
        """Nova's Glance fixture drops the data of update(); keep it, as Glance would."""
        fixture = self.glance
        original = fixture.update

        def update(context, image_id, metadata, data=None, purge_props=False):
            result = original(context, image_id, metadata, purge_props=purge_props)
            if data is not None:
                fixture._imagedata[image_id] = data.read()
                fixture.images[image_id]['size'] = len(fixture._imagedata[image_id])
                fixture.images[image_id]['status'] = 'active'
            return result
        fixture.update = update   # the fixture lives for this test only

    # -- waits: moves stop, copy and start real containers; give them a minute, not 5 s --------

    def _wait_for_server_parameter(self, server, expected_params, max_retries=10, api=None,
                                   wait_for_fault_key=True):
        return super()._wait_for_server_parameter(server, expected_params,
                                                  max(max_retries, 120), api=api,
                                                  wait_for_fault_key=wait_for_fault_key)

    def _wait_for_migration_status(self, server, expected_statuses):
        for _attempt in range(11):
            try:
                return super()._wait_for_migration_status(server, expected_statuses)
            except self.failureException:
                last = sys.exc_info()[1]
        raise last

    # -- what each backend holds ----------------------------------------------------------------

    def _nova_containers(self, host):
        return sorted(i.name for i in self.clients[host].instances.all()
                      if 'user.nova.uuid' in i.config)

    def _scratch_images(self, host):
        """Images on a backend that are not the driver's Glance cache (snapshot leftovers)."""
        cached = set(i.fingerprint for i in lxd_image.cached_images(self.clients[host]).values())
        return [i.fingerprint for i in self.clients[host].images.all()
                if i.fingerprint not in cached]

    def _assert_nothing_left(self):
        for host in self.daemons:
            self.assertEqual([], self._nova_containers(host), host)
            self.assertEqual([], self._scratch_images(host), host)

    def _remove_leftovers(self):
        for client in self.clients.values():
            for inst in client.instances.all():
                if 'user.nova.uuid' in inst.config:
                    if inst.status != 'Stopped':
                        try:
                            inst.stop(force=True, wait=True)
                        except lxd_exceptions.LXDAPIException:
                            pass    # stopped meanwhile
                    inst.delete(wait=True)
            cached = set(i.fingerprint for i in lxd_image.cached_images(client).values())
            for image in client.images.all():
                if image.fingerprint not in cached:
                    image.delete(wait=True)

    # -- servers -------------------------------------------------------------------------------

    def _boot(self, host, image_id=None, flavor_id='1'):
        return self._create_server(name='c-%s' % host, image_uuid=image_id or self.image['id'],
                                   flavor_id=flavor_id, networks='none', host=host)

    def _tap_port(self, index):
        """A Neutron port of this test's own (random id and MAC), bound as `tap`.

        Its host interface name (from the id) collides with no other test process; index picks
        its fixed IP (192.168.1.60+index).
        """
        port = copy.deepcopy(self.neutron.port_1)
        port.update(id=str(uuid.uuid4()), mac_address='fa:16:3e:%02x:%02x:%02x' % tuple(
            random.randint(0, 255) for _byte in range(3)))
        port['fixed_ips'] = [dict(port['fixed_ips'][0], ip_address='192.168.1.%d' % (60 + index))]
        port['binding:vif_type'] = 'tap'
        self.neutron._ports[port['id']] = port
        return port

    def _container(self, host, server):
        return self.clients[host].instances.get(server['OS-EXT-SRV-ATTR:instance_name'])

    def _run(self, container, *command):
        result = container.execute(list(command))
        self.assertEqual(0, result.exit_code, result.stderr)
        return result.stdout.strip()

    def _write_marker(self, container, text='moved-data'):
        self._run(container, 'sh', '-c', 'echo %s > /root/marker' % text)

    def _marker(self, container):
        return self._run(container, 'cat', '/root/marker')

    def _flavor(self, name, vcpus=1, ram=256, disk=1):
        return self.api.post_flavor({'flavor': {
            'name': name, 'vcpus': vcpus, 'ram': ram, 'disk': disk}})['id']
