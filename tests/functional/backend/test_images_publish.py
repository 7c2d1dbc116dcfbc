"""Publish (POST /1.0/images from an instance) and export, with real unprivileged containers."""
import hashlib
import io
import os
import subprocess
import tarfile
import uuid

import pylxd
import pytest
import yaml

from tests.functional.backend import hostile_tarballs as corpus
from tests.lxd_fixture import LXDDaemon

HOST_BASE = 1000000     # the daemon's default idmap base (root:1000000:1000000000)


@pytest.fixture
def source(backend, client):
    """A stopped unprivileged busybox instance with a file of its uid 1000 in it."""
    image = client.images.create(corpus.busybox_unified(marker=b'published'), wait=True)
    name = 'pub-%s' % uuid.uuid4().hex[:6]
    instance = client.instances.create({'name': name, 'source': {
        'type': 'image', 'fingerprint': image.fingerprint}}, wait=True)
    rootfs = os.path.join(backend.data_dir, 'storage-pools', 'default', 'containers', name,
                          'rootfs')
    assert os.stat(os.path.join(rootfs, 'etc/marker')).st_uid == HOST_BASE   # shifted
    home = os.path.join(rootfs, 'home-user')
    with open(home, 'w') as f:
        f.write('owned by 1000 inside\n')
    os.chown(home, HOST_BASE + 1000, HOST_BASE + 1000)
    before = {i.fingerprint for i in client.images.all()}
    yield instance
    try:
        instance = client.instances.get(name)
        if instance.status != 'Stopped':
            instance.stop(force=True, wait=True)
        instance.delete(wait=True)
    except pylxd.exceptions.NotFound:
        pass
    for other in client.images.all():
        if other.fingerprint not in before or other.fingerprint == image.fingerprint:
            other.delete(wait=True)


def _members(image):
    data = image.export().read()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        meta = yaml.safe_load(archive.extractfile('metadata.yaml').read())
    return data, members, meta


def test_publish_stopped_instance_maps_ids_back(client, source):
    resp = client.api.images.post(json={
        'source': {'type': 'instance', 'name': source.name}, 'compression_algorithm': 'xz',
        'properties': {'os': 'published-busybox'}, 'aliases': [{'name': source.name + '-img'}],
        'public': True})
    op = client.operations.wait_for_operation(resp.json()['operation'])
    image = client.images.get(op.metadata['fingerprint'])
    assert image.public is True and image.properties['os'] == 'published-busybox'
    assert image.aliases == [{'name': source.name + '-img', 'description': ''}]
    data, members, meta = _members(image)
    assert data[:6] == b'\xfd7zXZ\x00'
    assert (members['rootfs/etc/marker'].uid, members['rootfs/etc/marker'].gid) == (0, 0)
    assert (members['rootfs/home-user'].uid, members['rootfs/home-user'].gid) == (1000, 1000)
    assert members['rootfs/etc/shadow'].gid == 42
    assert members['rootfs/bin/su-test'].mode & 0o4000
    assert members['rootfs/sbin/init'].issym()
    assert meta['architecture'] == 'x86_64' and '/etc/hostname' in meta['templates']
    assert 'templates/hostname.tpl' in members


def test_published_image_launches_again(backend, client, source):
    image = source.publish(wait=True)
    name = source.name + '-again'
    client.instances.create({'name': name, 'source': {
        'type': 'image', 'fingerprint': image.fingerprint}}, wait=True)
    try:
        rootfs = os.path.join(backend.data_dir, 'storage-pools', 'default', 'containers', name,
                              'rootfs')
        with open(os.path.join(rootfs, 'home-user')) as f:
            assert f.read() == 'owned by 1000 inside\n'
        assert os.stat(os.path.join(rootfs, 'home-user')).st_uid == HOST_BASE + 1000
    finally:
        client.instances.get(name).delete(wait=True)


def test_publish_running_instance_on_btrfs(backend, client, source):
    source.start(wait=True)
    assert client.instances.get(source.name).status == 'Running'
    image = source.publish(wait=True, compression_algorithm='gzip')
    assert client.instances.get(source.name).status == 'Running'   # thawed again
    snapshots = os.path.join(backend.data_dir, 'storage-pools', 'default',
                             'containers-snapshots', source.name)
    assert not os.path.exists(snapshots) or os.listdir(snapshots) == []
    _, members, _ = _members(image)
    assert 'rootfs/etc/marker' in members and 'rootfs/home-user' in members


def test_publish_refusals(client, source):
    for body, status, words in [
            ({'source': {'type': 'instance', 'name': 'no-such'}}, 404, 'not found'),
            ({'source': {'type': 'instance', 'name': source.name},
              'compression_algorithm': 'lz4'}, 400, 'lz4'),
            ({'source': {'type': 'url', 'url': 'https://x'}}, 400, 'not supported'),
            ({'source': {'type': 'image', 'fingerprint': 'x', 'server': 'http://x'}}, 400,
             'https://')]:
        resp = client.api.session.post(client.api.images._api_endpoint, json=body)
        assert resp.status_code == status and words in resp.json()['error']
    resp = client.api.images.post(json={'source': {'type': 'snapshot',
                                                   'name': source.name + '/nosnap'}})
    with pytest.raises(pylxd.exceptions.LXDAPIException, match='not found'):
        client.operations.wait_for_operation(resp.json()['operation'])


def test_stock_lxc_publish_and_export(backend, client, source, tmp_path):
    env = dict(os.environ, LXD_DIR=backend.data_dir)
    proc = subprocess.run(['lxc', 'publish', source.name, '--alias', source.name + '-lxc',
                           'description=from lxc'], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    image = client.images.get_by_alias(source.name + '-lxc')
    assert image.properties['description'] == 'from lxc'
    proc = subprocess.run(['lxc', 'image', 'export', source.name + '-lxc',
                           str(tmp_path / 'out')], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    exported = [p for p in tmp_path.iterdir() if p.name.startswith('out')]
    assert exported[0].read_bytes() == image.export().read()


def test_exported_image_boots_here_and_in_lxd(backend, client, source):
    """An exported image imports again, and into LXD 5.0.2, and boots in both (issue 4)."""
    image = source.publish(wait=True)
    data = image.export().read()
    image.delete(wait=True)
    again = client.images.create(data, wait=True)
    assert again.fingerprint == hashlib.sha256(data).hexdigest()
    name = source.name + '-boot'
    instance = client.instances.create({'name': name, 'source': {
        'type': 'image', 'fingerprint': again.fingerprint}}, wait=True)
    try:
        instance.start(wait=True)
        assert client.instances.get(name).status == 'Running'
    finally:
        instance = client.instances.get(name)
        instance.stop(force=True, wait=True)
        instance.delete(wait=True)
    lxd = LXDDaemon()
    try:
        lxd_client = lxd.start()
        imported = lxd_client.images.create(data, wait=True)
        assert imported.fingerprint == again.fingerprint
        container = lxd_client.instances.create({'name': 'exported', 'source': {
            'type': 'image', 'fingerprint': imported.fingerprint}}, wait=True)
        container.start(wait=True)
        assert lxd_client.instances.get('exported').status == 'Running'
        result = container.execute(['/bin/cat', '/home-user'])
        assert result.exit_code == 0 and result.stdout == 'owned by 1000 inside\n'
        result = container.execute(['/bin/stat', '-c', '%u:%g', '/home-user'])
        assert result.stdout.strip() == '1000:1000'
    finally:
        lxd.destroy()


def test_publish_a_snapshot(backend, client, source):
    rootfs = os.path.join(backend.data_dir, 'storage-pools', 'default', 'containers',
                          source.name, 'rootfs')
    snapshot = source.snapshots.create('snap0', wait=True)
    os.unlink(os.path.join(rootfs, 'home-user'))        # changed after the snapshot
    image = snapshot.publish(wait=True)
    _, members, _ = _members(image)
    assert members['rootfs/home-user'].uid == 1000
    snapshot.delete(wait=True)
