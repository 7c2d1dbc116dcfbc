"""Snapshots through Nova's API: a running container is snapshotted without a restart, the image
lands in Glance as an LXD unified tarball, and a server booted from it on another host (its own
backend) holds the snapshotted data. Nothing is left on the backends, also when the upload fails.
"""
import tempfile

from nova import exception

from tests.functional.nova import base
from tests.functional.nova import moves_base
from nova_lxd.virt import image as lxd_image


class _SnapshotTest(moves_base.MovesTestBase):
    __test__ = False

    def _snapshot(self, server, name):
        image_id = self.api.post_server_action(
            server['id'], {'createImage': {'name': name}})['image_id']
        server = self._wait_for_server_parameter(server, {'OS-EXT-STS:task_state': None})
        return server, image_id

    def test_snapshot_running_then_boot_on_other_host(self):
        server = self._boot('host1')
        container = self._container('host1', server)
        self._write_marker(container, 'snapshotted')
        pid = container.state().pid
        server, image_id = self._snapshot(server, 'snap1')
        self.assertEqual('ACTIVE', server['status'])
        # never stopped: the same init process still runs
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual(pid, container.state().pid)
        self.assertEqual([], [s.name for s in container.snapshots.all()])
        image = self.glance.show(None, image_id)
        self.assertEqual('raw', image['disk_format'])
        self.assertEqual('bare', image['container_format'])
        self.assertEqual('unified', image['properties']['lxd_image_format'])
        self.assertEqual(server['id'], image['properties']['instance_uuid'])
        with tempfile.NamedTemporaryFile(dir='/var/tmp') as f:
            f.write(self.glance._imagedata[image_id])
            f.flush()
            self.assertEqual(lxd_image.UNIFIED, lxd_image.detect_format(f.name))
        # task states were reported in order (instance actions record the snapshot)
        actions = self.api.get_instance_actions(server['id'])
        self.assertIn('createImage', [a['action'] for a in actions])

        other = self._boot('host2', image_id=image_id)
        self.assertEqual('host2', other['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('snapshotted', self._marker(self._container('host2', other)))
        self._delete_server(other)
        self._delete_server(server)

    def test_snapshot_stopped(self):
        server = self._boot('host1')
        self._write_marker(self._container('host1', server), 'cold')
        server = self._stop_server(server)
        server, image_id = self._snapshot(server, 'snap-stopped')
        self.assertEqual('SHUTOFF', server['status'])
        self.assertEqual('Stopped', self._container('host1', server).status)
        other = self._boot('host1', image_id=image_id)
        self.assertEqual('cold', self._marker(self._container('host1', other)))
        self._delete_server(other)
        self._delete_server(server)

    def test_upload_failure_leaves_instance_running(self):
        server = self._boot('host1')
        container = self._container('host1', server)
        self._write_marker(container, 'kept')
        pid = container.state().pid
        uploaded = self.glance.update

        def failing_update(context, image_id, metadata, data=None, purge_props=False):
            if data is not None:
                data.read(4096)   # the upload starts, then Glance goes away
                raise exception.ImageNotAuthorized(image_id=image_id)
            return uploaded(context, image_id, metadata, purge_props=purge_props)
        self.glance.update = failing_update
        self.api.post_server_action(server['id'], {'createImage': {'name': 'broken'}})
        server = self._wait_for_server_parameter(server, {'OS-EXT-STS:task_state': None})
        self.assertEqual('ACTIVE', server['status'])
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual(pid, container.state().pid)
        self.assertEqual('kept', self._marker(container))
        # no backend snapshot and no published image survive the failure
        self.assertEqual([], [s.name for s in container.snapshots.all()])
        self.assertEqual([], self._scratch_images('host1'))
        self._delete_server(server)


base.for_each_backend(globals(), _SnapshotTest, 'TestSnapshot')
