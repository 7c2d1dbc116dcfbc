"""Between the bundled backend and a real LXD 5.0.2: images copy both ways with `lxc image copy`;
an instance move is refused cleanly (the control messages are not LXD's protobuf) and leaves the
instance where it was and nothing on the target."""
import uuid

import pytest

from tests.functional.backend import hostile_tarballs as corpus
from tests.functional.backend.busybox_rootfs import create_busybox, unique
from tests.functional.backend.migration_hosts import PASSWORD, Hosts, free_port
from tests.lxd_fixture import LXDDaemon


class HostsWithLXD(Hosts):
    """Host a: a bundled backend; remote "reallxd": LXD 5.0.2 on an HTTPS port of its own."""

    def __init__(self):
        self.lxd = None
        super().__init__(second=False)
        try:
            self.lxd = LXDDaemon()
            self.lxd_client = self.lxd.start()
            port = free_port()
            self.lxd_client.api.patch(json={'config': {
                'core.https_address': '127.0.0.1:%d' % port, 'core.trust_password': PASSWORD}})
            self.add_remote('reallxd', 'https://127.0.0.1:%d' % port)
        except BaseException:
            self.destroy()
            raise

    def destroy(self):
        if self.lxd is not None:
            self.lxd.destroy()
        super().destroy()


@pytest.fixture(scope='module')
def hosts():
    h = HostsWithLXD()
    yield h
    h.destroy()


def test_images_copy_both_ways_with_lxc(hosts):
    data = corpus.busybox_unified(marker=uuid.uuid4().hex.encode())
    image = hosts.a.local.images.create(data, public=False, wait=True)
    try:
        out = hosts.lxc('image', 'copy', 'hosta:%s' % image.fingerprint, 'reallxd:',
                        '--alias', 'from-bundled')
        assert out.returncode == 0, out.stderr
        assert hosts.lxd_client.images.get_by_alias('from-bundled').fingerprint == \
            image.fingerprint
        image.delete(wait=True)
        out = hosts.lxc('image', 'copy', 'reallxd:from-bundled', 'hosta:', '--alias', 'back')
        assert out.returncode == 0, out.stderr
        assert hosts.a.local.images.get_by_alias('back').fingerprint == image.fingerprint
    finally:
        for client in (hosts.a.local, hosts.lxd_client):
            for img in client.images.all():
                img.delete(wait=True)


def test_instance_move_to_lxd_fails_cleanly(hosts):
    name = unique('tolxd')
    inst = create_busybox(hosts.a.local, hosts.a.daemon, name=name)
    try:
        out = hosts.lxc('move', 'hosta:%s' % name, 'reallxd:')
        # LXD expects its protobuf migration header on the control websocket
        assert out.returncode != 0 and 'header' in out.stderr, out.stderr
        assert hosts.a.local.instances.get(name).status == 'Stopped'
        assert not hosts.lxd_client.instances.exists(name)
    finally:
        inst.delete(wait=True)
