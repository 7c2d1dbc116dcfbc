"""Disk full during an image import: a clean LXD error, nothing half-made, the daemon serves on."""
import io
import os
import subprocess
import tarfile
import tempfile

import pylxd
import pytest

from nova_lxd.backend.storage.system import unmount_tree
from tests.backend_fixture import BackendDaemon

METADATA = b'architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: test\n'


def _unified_tarball(payload_size):
    """A unified image whose rootfs holds one incompressible file of payload_size bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for name, data in (('metadata.yaml', METADATA),
                           ('rootfs/bin/blob', os.urandom(payload_size))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo('rootfs/tmp')
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    return buf.getvalue()


@pytest.fixture
def small_daemon():
    """A daemon whose whole data directory is a 96MiB tmpfs."""
    path = tempfile.mkdtemp(prefix='nova-lxd-full-', dir='/var/tmp')
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=96m,mode=0711', 'tmpfs', path],
                   check=True)
    daemon = BackendDaemon(data_dir=path)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.destroy()
        unmount_tree(path)
        subprocess.run(['umount', path], check=False)
        os.rmdir(path)


def test_image_import_on_a_full_disk_fails_cleanly(small_daemon):
    client = small_daemon.client()
    images_dir = os.path.join(small_daemon.data_dir, 'images')
    before = set(os.listdir(images_dir))
    resp = client.api.session.post(client.api._api_endpoint + '/images',
                                   data=_unified_tarball(160 * 1024 * 1024))
    body = resp.json()
    if body['type'] == 'async':        # refused while unpacking: the operation fails
        op = client.api.operations[body['metadata']['id']].wait.get().json()['metadata']
        assert op['status'] == 'Failure' and op['err'], op
        message = op['err']
    else:
        assert body['type'] == 'error' and body['error_code'] == resp.status_code, body
        message = body['error']
    assert 'space' in message.lower(), message
    assert 'Unhandled error' not in small_daemon.log()
    # nothing half-made: no image listed, no staging file or directory kept, space given back
    assert client.images.all() == []
    assert set(os.listdir(images_dir)) == before
    assert os.statvfs(small_daemon.data_dir).f_bfree * os.statvfs(
        small_daemon.data_dir).f_frsize > 64 * 1024 * 1024
    # and it goes on serving: a small image imports fine afterwards
    image = client.images.create(_unified_tarball(1024), wait=True)
    assert client.images.exists(image.fingerprint)
    with pytest.raises(pylxd.exceptions.NotFound):
        client.images.get('0' * 64)
