"""Soft delete and restore through Nova's API (reclaim_instance_interval > 0), both backends.

Delete keeps the container, stopped, with its data; restore starts it again; force-delete and
the reclaim periodic task remove it.
"""
import time

from nova import context as nova_context

from tests.functional.nova import base
from tests.functional.nova import moves_base


class _SoftDeleteTest(moves_base.MovesTestBase):
    __test__ = False
    host_count = 1

    def _soft_delete(self, server):
        self.api.delete_server(server['id'])
        server = self._wait_for_state_change(server, 'SOFT_DELETED')
        container = self._container('host1', server)
        self.assertEqual('Stopped', container.status)
        return server

    def test_soft_delete_restore_then_force_delete(self):
        self.flags(reclaim_instance_interval=3600)
        server = self._boot('host1')
        self._write_marker(self._container('host1', server), 'kept')
        server = self._soft_delete(server)
        self.assertEqual(4, server['OS-EXT-STS:power_state'])   # SHUTDOWN
        self.assertEqual([server['OS-EXT-SRV-ATTR:instance_name']],
                         self._nova_containers('host1'))

        self.api.post_server_action(server['id'], {'restore': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(1, server['OS-EXT-STS:power_state'])
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('kept', self._marker(container))

        server = self._soft_delete(server)
        self.api.post_server_action(server['id'], {'forceDelete': None})
        self._wait_until_deleted(server)
        self.assertEqual([], self._nova_containers('host1'))

    def test_reclaim_removes_the_soft_deleted_container(self):
        self.flags(reclaim_instance_interval=1)
        server = self._boot('host1')
        server = self._soft_delete(server)
        manager = self.computes['host1'].manager
        ctxt = nova_context.get_admin_context()
        for _attempt in range(60):
            manager._reclaim_queued_deletes(ctxt)   # what the periodic task runs
            if not self._nova_containers('host1'):
                break
            time.sleep(0.5)    # the interval counts from the soft delete
        self.assertEqual([], self._nova_containers('host1'))
        self._wait_until_deleted(server)


base.for_each_backend(globals(), _SoftDeleteTest, 'TestSoftDelete')
