"""A stock Debian cloud-init image boots through Nova and takes its config from the config drive.

The image is built with debootstrap by nova-lxd-image (tests/images.py caches it), uploaded to
Nova's Glance fixture, booted with a forced config drive; cloud-init's ConfigDrive datasource
must find the drive, set the hostname from meta_data.json and run the user-data script.
"""
import base64
import io
import time

from nova_lxd.virt import image as lxd_image
from tests import images
from tests.functional.nova import base
from tests.functional.nova import test_servers

USER_DATA = """#!/bin/sh
# run by cloud-init's scripts-user module (cloud-final) as root
echo "user-data ran as $(id -u) on $(hostname)" > /var/tmp/nova-lxd-user-data
"""


class _CloudInit(test_servers._LXDServers):
    __test__ = False

    def setUp(self):
        super().setUp()
        with open(images.debian_image(cloud_init=True), 'rb') as f:
            data = f.read()
        self.image = self.glance.create(None, {
            'name': 'debian-cloud', 'container_format': 'bare', 'disk_format': 'raw',
            'properties': {'lxd_image_format': 'unified'}}, data=io.BytesIO(data))
        self.addCleanup(self._remove_cached_image)

    def _remove_cached_image(self):
        """The shared backend keeps cached images for the session: this one is large."""
        cached = lxd_image.cached_images(self.client).get(self.image['id'])
        if cached is not None:
            cached.delete(wait=True)

    def _cloud_init_status(self, container):
        """`cloud-init status --wait` once systemd runs.

        An exec too early finds no cloud-init state yet and reports `not run`.
        """
        for _ in range(600):
            result = container.execute(['cloud-init', 'status', '--wait', '--long'])
            if 'status: not run' not in result.stdout:
                return result
            time.sleep(0.2)
        return result

    def test_hostname_and_user_data_from_the_config_drive(self):
        self.flags(force_config_drive=True)
        body = self._build_server(name='ci-debian-1', image_uuid=self.image['id'],
                                  flavor_id='1', networks=[{'port': self.port['id']}])
        body['user_data'] = base64.b64encode(USER_DATA.encode()).decode()
        server = self._settle(self.api.post_server({'server': body}), 'ACTIVE')
        container = self._container(server)
        status = self._cloud_init_status(container)
        log = container.execute(['sh', '-c', 'grep -v "util.py\\|handlers.py\\|helpers.py" '
                                 '/var/log/cloud-init.log | head -150']).stdout
        self.assertIn('status: done', status.stdout, status.stdout + status.stderr + log)
        self.assertIn('DataSourceConfigDrive', self._run(
            container, 'cat', '/run/cloud-init/status.json'), log)
        self.assertEqual('ci-debian-1', self._run(container, 'hostname'))
        self.assertEqual('user-data ran as 0 on ci-debian-1',
                         self._run(container, 'cat', '/var/tmp/nova-lxd-user-data'))
        # the instance id cloud-init knows is the Nova server's
        self.assertEqual(server['id'], self._run(container, 'cloud-init', 'query',
                                                 'instance_id'))
        self._delete_server(server)

    # the busybox tests of the base class run in test_servers.py
    test_server_lifecycle = None
    test_config_drive = None


base.for_each_backend(globals(), _CloudInit, 'TestCloudInit')
