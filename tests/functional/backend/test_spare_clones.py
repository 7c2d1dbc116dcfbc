"""btrfs pools keep one spare clone of each cached image: an instance takes it by a rename.

(storage/tree.py: a btrfs snapshot commits a transaction, slow when the disk is busy; the clone
for the next instance is made in the background.)
"""
import os
import subprocess
import time
import uuid


from tests.functional.backend import cleanup
from tests.functional.backend import hostile_tarballs as corpus


def _spares(images_dir, fingerprint):
    return sorted(e for e in os.listdir(images_dir)
                  if e.startswith('.spare-') and e[len('.spare-'):].startswith(fingerprint))


def _uuid(path):
    out = subprocess.run(['btrfs', 'subvolume', 'show', path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines():
        if line.strip().startswith('UUID:'):
            return line.split(':', 1)[1].strip()
    raise AssertionError('no UUID in %s' % out.stdout)


def _wait_for_spare(images_dir, fingerprint, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spares = _spares(images_dir, fingerprint)
        if spares:
            return spares
        time.sleep(0.05)
    raise AssertionError('no spare clone of %s appeared' % fingerprint)


def test_instances_take_the_spare_clone_and_image_delete_removes_it(backend, client):
    image = client.images.create(corpus.busybox_unified(marker=b'spare'), wait=True)
    pool_dir = os.path.join(backend.data_dir, 'storage-pools', 'default')
    images_dir = os.path.join(pool_dir, 'images')
    names = ['spare-%s' % uuid.uuid4().hex[:6] for _ in range(2)]
    try:
        client.instances.create({'name': names[0], 'source': {
            'type': 'image', 'fingerprint': image.fingerprint}}, wait=True)
        spare = _wait_for_spare(images_dir, image.fingerprint)[0]
        spare_uuid = _uuid(os.path.join(images_dir, spare))
        client.instances.create({'name': names[1], 'source': {
            'type': 'image', 'fingerprint': image.fingerprint}}, wait=True)
        # the second instance is that very subvolume, renamed; a new spare replaces it
        assert _uuid(os.path.join(pool_dir, 'containers', names[1])) == spare_uuid
        assert spare not in os.listdir(images_dir)
        _wait_for_spare(images_dir, image.fingerprint)
        # spares are not volumes of the API
        volumes = {(v.type, v.name) for v in client.storage_pools.get('default').volumes.all()}
        assert not any(name.startswith('.') for _, name in volumes)
        instance = client.instances.get(names[1])
        instance.start(wait=True)
        assert client.instances.get(names[1]).status == 'Running'
        instance.stop(force=True, wait=True)
    finally:
        cleanup.delete_instances_and_image(client, names, image)
    assert _spares(images_dir, image.fingerprint) == []
    assert not any(e.startswith(image.fingerprint) for e in os.listdir(images_dir))
