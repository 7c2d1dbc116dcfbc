"""Cloud disk images (qcow2 and raw, partitioned) boot as containers through Nova's API.

The disks are built from the busybox rootfs plus a marker file (tests/functional/image/disks.py:
mkfs.ext4 -d, sfdisk, qemu-img) and put in Nova's Glance fixture as ordinary disk images. The
driver converts each once (nova_lxd.image.convert), caches the result in the backend's image
store, and refuses a disk without a Linux root with a fault that says so, leaving nothing behind.
"""
import io
import os

import fixtures

from nova_lxd.image import convert
from nova_lxd.virt import conf
from nova_lxd.virt import image as lxd_image
from tests.functional.image import disks
from tests.functional.nova import base
from tests.functional.nova import test_servers


class _DiskImages(test_servers._LXDServers):
    __test__ = False

    def setUp(self):
        super().setUp()
        self.disks = disks.cached_disks()
        self.conversions = []
        real = convert.disk_to_unified

        def counting(path, *args, **kwargs):        # the real conversion, counted
            self.conversions.append(path)
            return real(path, *args, **kwargs)
        self.useFixture(fixtures.MonkeyPatch(
            'nova_lxd.image.convert.disk_to_unified', counting))
        self.glance_ids = []
        self.addCleanup(self._remove_cached_images)

    def _disk_image(self, kind, disk_format, **properties):
        with open(self.disks[kind], 'rb') as f:
            data = f.read()
        image = self.glance.create(None, {
            'name': 'disk-%s' % kind, 'container_format': 'bare',
            'disk_format': disk_format, 'properties': properties}, data=io.BytesIO(data))
        self.glance_ids.append(image['id'])
        return image

    def _boot_image(self, image, name, status='ACTIVE'):
        port = self.port if name == 'first' else self._new_port(**{'binding:vif_type': 'tap'})
        body = self._build_server(name=name, image_uuid=image['id'], flavor_id='1',
                                  networks=[{'port': port['id']}])
        return self._settle(self.api.post_server({'server': body}), status)

    def _cached(self):
        return set(lxd_image.cached_images(self.client))

    def _remove_cached_images(self):
        for glance_id, image in lxd_image.cached_images(self.client).items():
            if glance_id in self.glance_ids:
                image.delete(wait=True)

    def _download_dir_leftovers(self):
        directory = os.path.join(conf.CONF.instances_path, '_lxd_images')
        if not os.path.isdir(directory):
            return []
        return os.listdir(directory) + disks.leftovers(directory)

    def test_qcow2_and_raw_disks_boot_once_converted(self):
        qcow2 = self._disk_image('qcow2', 'qcow2')
        raw = self._disk_image('raw', 'raw', halt_signal='SIGUSR2')
        first = self._boot_image(qcow2, 'first')
        container = self._container(first)
        self.assertEqual('Running', container.status)
        marker_path, marker = disks.DISK_MARKER
        self.assertEqual(marker.strip(), self._run(container, 'cat', marker_path))
        self.assertIn('converted from', self.client.images.get_by_alias(
            qcow2['id']).properties['description'])
        self.assertEqual(1, len(self.conversions))
        self.assertIn(qcow2['id'], self._cached())

        # the same image again: straight from the backend's store, no second conversion
        second = self._boot_image(qcow2, 'second')
        self.assertEqual('Running', self._container(second).status)
        self.assertEqual(1, len(self.conversions))

        # a raw MBR disk; the Glance image's halt_signal reaches the instance's config
        third = self._boot_image(raw, 'third')
        container = self._container(third)
        self.assertEqual(marker.strip(), self._run(container, 'cat', marker_path))
        self.assertEqual('SIGUSR2', container.config['image.halt_signal'])
        self.assertEqual(2, len(self.conversions))
        third = self._action(third, {'os-stop': None}, 'SHUTOFF')
        self.assertEqual('Stopped', self._container(third).status)

        for server in (first, second, third):
            self._delete_server(server)
        self.assertEqual([], self._download_dir_leftovers())

    def test_disk_without_a_linux_root_fails_and_leaves_nothing(self):
        before_images = {i.fingerprint for i in self.client.images.all()}
        noroot = self._disk_image('noroot', 'raw')
        server = self._boot_image(noroot, 'first', status='ERROR')
        fault = self.api.get_server(server['id'])['fault']['message']
        self.assertIn('no Linux root filesystem', fault)
        self.assertIn('cannot become a container', fault)
        self.assertEqual(1, len(self.conversions))
        self.assertEqual(before_images, {i.fingerprint for i in self.client.images.all()})
        self.assertNotIn(noroot['id'], self._cached())
        self.assertEqual([], self._download_dir_leftovers())
        self.assertEqual([], [line for line in disks.leftovers(conf.CONF.instances_path)
                              if not line.startswith('temp')])
        self._delete_server(server)

    def test_root_tar_image_takes_container_properties_from_glance(self):
        """Not a disk, but the same path: nova-lxd writes its metadata.yaml from Glance."""
        from tests.functional.nova import busybox_image
        with open(busybox_image.root_tarball('gz'), 'rb') as f:
            image = self.glance.create(None, {
                'name': 'root-tar', 'container_format': 'bare', 'disk_format': 'raw',
                'properties': {'halt_signal': 'SIGUSR2', 'init_cmd': '/sbin/init'}},
                data=io.BytesIO(f.read()))
        self.glance_ids.append(image['id'])
        server = self._boot_image(image, 'first')
        container = self._container(server)
        self.assertEqual('SIGUSR2', container.config['image.halt_signal'])
        self.assertEqual('/sbin/init', container.config['image.init_cmd'])
        self.assertEqual([], self.conversions)
        self._delete_server(server)

    # the busybox tests of the base class run in test_servers.py
    test_server_lifecycle = None
    test_config_drive = None


base.for_each_backend(globals(), _DiskImages, 'TestDiskImages')
