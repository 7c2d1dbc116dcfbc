"""Resize on one host (allow_resize_to_same_host) through Nova's API, checked on the container.

The root disk size is enforced only by sized pools (btrfs, zfs, lvm, ceph); the test backends
use a dir pool, so what is tested here for the disk is the refusal of a shrink below the data.
"""
from nova import context
from nova import exception
from nova import objects
from nova.tests.functional.api import client

from nova_lxd.virt import migration as lxd_migration
from tests.functional.nova import base
from tests.functional.nova import moves_base


def _memory_limit(test, container):
    return int(test._run(container, 'sh', '-c',
                         'mkdir -p /tmp/cg && mount -t cgroup -o memory memory /tmp/cg && '
                         'cat /tmp/cg/memory.limit_in_bytes; umount /tmp/cg'))


class _ResizeTest(moves_base.MovesTestBase):
    __test__ = False
    host_count = 1

    def setUp(self):
        super().setUp()
        self.small = self._flavor('small', vcpus=1, ram=128, disk=2)
        self.big = self._flavor('big', vcpus=2, ram=256, disk=2)

    def _resized(self, flavor_id):
        server = self._boot('host1', flavor_id=self.small)
        container = self._container('host1', server)
        self._write_marker(container, 'before-resize')
        self.assertEqual('1', self._run(container, 'nproc'))
        self._resize_server(server, flavor_id)
        server = self._wait_for_state_change(server, 'VERIFY_RESIZE')
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('2', self._run(container, 'nproc'))
        self.assertEqual(256 * 1024 ** 2, _memory_limit(self, container))
        self.assertEqual('before-resize', self._marker(container))
        # the revert copy waits, stopped, until confirm or revert
        name = server['OS-EXT-SRV-ATTR:instance_name']
        self.assertEqual([name, name + '-resize'], self._nova_containers('host1'))
        self.assertEqual('Stopped',
                         self.clients['host1'].instances.get(name + '-resize').status)
        return server

    def test_resize_up_confirm(self):
        server = self._resized(self.big)
        self._confirm_resize(server)
        container = self._container('host1', server)
        self.assertEqual('2', self._run(container, 'nproc'))
        self.assertEqual([server['OS-EXT-SRV-ATTR:instance_name']],
                         self._nova_containers('host1'))
        self._delete_server(server)

    def test_resize_up_revert(self):
        server = self._resized(self.big)
        self._run(self._container('host1', server), 'sh', '-c',
                  'echo after > /root/marker')
        self.api.post_server_action(server['id'], {'revertResize': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('1', self._run(container, 'nproc'))
        self.assertEqual(128 * 1024 ** 2, _memory_limit(self, container))
        # the original, untouched by what happened after the resize
        self.assertEqual('before-resize', self._marker(container))
        self.assertEqual([server['OS-EXT-SRV-ATTR:instance_name']],
                         self._nova_containers('host1'))
        self._delete_server(server)

    def test_resize_disk_below_used_refused(self):
        """Nova's API refuses any root shrink; the driver refuses one below the data too."""
        tiny_disk = self._flavor('tiny-disk', vcpus=2, ram=256, disk=1)
        server = self._boot('host1', flavor_id=self.small)
        container = self._container('host1', server)
        self._write_marker(container, 'kept')
        # 1.1 GiB of incompressible data: more than the 1 GB of the new flavor
        self._run(container, 'dd', 'if=/dev/urandom', 'of=/root/big', 'bs=1M', 'count=1100')
        # on disk, so the pool's accounting (btrfs commits it with the transaction) counts it
        self._run(container, 'sync')
        pid = container.state().pid
        exc = self.assertRaises(client.OpenStackApiException, self.api.post_server_action,
                                server['id'], {'resize': {'flavorRef': tiny_disk}})
        self.assertEqual(400, exc.response.status_code)
        # the driver's own guard, for callers that skip the API's check
        ctxt = context.get_admin_context()
        instance = objects.Instance.get_by_uuid(ctxt, server['id'], expected_attrs=['flavor'])
        new_flavor = objects.Flavor.get_by_flavor_id(ctxt, tiny_disk)
        err = self.assertRaises(exception.InstanceFaultRollback,
                                lxd_migration.check_root_fits, container, instance, new_flavor)
        self.assertIn('more than the 1 GB of flavor tiny-disk', str(err.inner_exception))
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual(pid, container.state().pid)
        self.assertEqual('kept', self._marker(container))
        self.assertEqual([server['OS-EXT-SRV-ATTR:instance_name']],
                         self._nova_containers('host1'))
        self._delete_server(server)


base.for_each_backend(globals(), _ResizeTest, 'TestResize')
