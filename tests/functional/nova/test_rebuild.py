"""Rebuild (same host, new image: the root filesystem is replaced) and soft delete / restore.

Both run through Nova's generic paths on top of the driver: rebuild is destroy + spawn from the
new image (the driver keeps no state a rebuild would have to carry), soft delete powers the
container off and restore powers it on again.
"""
import io
import tarfile

from tests.functional.nova import base
from tests.functional.nova import moves_base


def _with_extra_file(unified, path, text):
    """A copy of a unified image tarball with one more file in its rootfs."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(unified)) as src, \
            tarfile.open(fileobj=out, mode='w:gz') as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        data = text.encode()
        info = tarfile.TarInfo('rootfs/' + path)
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


class _RebuildTest(moves_base.MovesTestBase):
    __test__ = False
    host_count = 1

    def test_rebuild_new_image_replaces_data(self):
        server = self._boot('host1')
        container = self._container('host1', server)
        self._write_marker(container, 'old-data')
        image2 = self.glance.create(None, {
            'name': 'busybox-v2', 'container_format': 'bare', 'disk_format': 'raw',
            'properties': {'lxd_image_format': 'unified'}},
            data=io.BytesIO(_with_extra_file(base.busybox_bytes(), 'etc/image-version', 'v2')))
        server = self._rebuild_server(server, image2['id'])
        self.assertEqual(image2['id'], server['image']['id'])
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('v2', self._run(container, 'cat', '/etc/image-version'))
        result = container.execute(['cat', '/root/marker'])
        self.assertNotEqual(0, result.exit_code)   # the old root filesystem is gone
        self.assertEqual([server['OS-EXT-SRV-ATTR:instance_name']],
                         self._nova_containers('host1'))
        self._delete_server(server)

    def test_soft_delete_and_restore(self):
        self.flags(reclaim_instance_interval=3600)
        server = self._boot('host1')
        self._write_marker(self._container('host1', server), 'still-here')
        self.api.delete_server(server['id'])
        server = self._wait_for_state_change(server, 'SOFT_DELETED')
        self.assertEqual('Stopped', self._container('host1', server).status)
        self.api.post_server_action(server['id'], {'restore': {}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('still-here', self._marker(container))
        self.api.post_server_action(server['id'], {'forceDelete': {}})
        self._wait_until_deleted(server)


base.for_each_backend(globals(), _RebuildTest, 'TestRebuild')
