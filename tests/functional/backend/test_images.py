"""The image store through pylxd and the stock `lxc` client, against a private daemon."""
import hashlib
import os
import socket
import subprocess
import tarfile
import time

import pylxd
import pytest
from requests_toolbelt.multipart import decoder

from tests.functional.backend import hostile_tarballs as corpus


@pytest.fixture
def images(backend, client):
    """The images a test creates are deleted afterwards, whatever happens."""
    before = {i.fingerprint for i in client.images.all()}
    yield client
    for image in client.images.all():
        if image.fingerprint not in before:
            image.delete(wait=True)


def _images_dir(backend):
    return os.path.join(backend.data_dir, 'images')


def _raw_post(client, data, headers=None):
    return client.api.session.post(client.api._api_endpoint + '/images', data=data,
                                   headers=headers or {})


@pytest.mark.parametrize('compression', ['gzip', 'xz', None])
def test_unified_upload(backend, images, compression):
    data = corpus.busybox_unified(compression, creation_date=1700000000)
    image = images.images.create(data, public=True, wait=True)
    assert image.fingerprint == hashlib.sha256(data).hexdigest()
    assert image.architecture == 'x86_64'
    assert image.public is True
    assert image.size == len(data)
    assert image.properties == {'os': 'busybox', 'description': 'busybox test image'}
    assert image.created_at.startswith('2023-11-14T22:13:20')
    assert image.type == 'container'
    path = os.path.join(_images_dir(backend), image.fingerprint)
    with open(path, 'rb') as f:
        assert f.read() == data
    image.delete(wait=True)
    assert not os.path.exists(path)
    assert not images.images.exists(image.fingerprint)


def test_upload_is_an_operation_with_the_fingerprint(images):
    data = corpus.busybox_unified(marker=b'async')
    resp = _raw_post(images, data)
    assert resp.status_code == 202
    body = resp.json()
    assert body['type'] == 'async' and resp.headers['Location'] == body['operation']
    op = images.operations.wait_for_operation(body['operation'])
    assert op.metadata['fingerprint'] == hashlib.sha256(data).hexdigest()


def test_split_upload_and_multipart_export(backend, images):
    metadata, rootfs = corpus.busybox_split('xz', marker=b'split')
    image = images.images.create(rootfs, metadata=metadata, wait=True)
    assert image.fingerprint == hashlib.sha256(metadata + rootfs).hexdigest()
    assert image.size == len(metadata) + len(rootfs)
    resp = images.api.images[image.fingerprint].export.get()
    parts = decoder.MultipartDecoder(resp.content, resp.headers['Content-Type']).parts
    names = [p.headers[b'Content-Disposition'].decode() for p in parts]
    assert 'name="metadata"' in names[0] and 'name="rootfs"' in names[1]
    assert [p.content for p in parts] == [metadata, rootfs]


def test_unified_export_streams_the_file(images):
    data = corpus.busybox_unified(marker=b'export')
    image = images.images.create(data, wait=True)
    assert image.export().read() == data


def test_upload_headers(images):
    data = corpus.busybox_unified(marker=b'headers')
    resp = _raw_post(images, data, {
        'X-LXD-fingerprint': hashlib.sha256(data).hexdigest(), 'X-LXD-public': 'true',
        'X-LXD-filename': 'bb.tar.gz', 'X-LXD-properties': 'os=Busy+Box&release=1.36'})
    op = images.operations.wait_for_operation(resp.json()['operation'])
    image = images.images.get(op.metadata['fingerprint'])
    assert image.public is True and image.filename == 'bb.tar.gz'
    assert image.properties['os'] == 'Busy Box' and image.properties['release'] == '1.36'


def test_wrong_fingerprint_header_is_refused_and_leaves_nothing(backend, images):
    before = sorted(os.listdir(_images_dir(backend)))
    resp = _raw_post(images, corpus.busybox_unified(marker=b'fp'),
                     {'X-LXD-fingerprint': '0' * 64})
    assert resp.status_code == 400 and 'Fingerprint mismatch' in resp.json()['error']
    assert sorted(os.listdir(_images_dir(backend))) == before


def test_duplicate_upload_conflicts(backend, images):
    data = corpus.busybox_unified(marker=b'dup')
    image = images.images.create(data, wait=True)
    resp = _raw_post(images, data)
    assert resp.status_code == 409
    assert sorted(os.listdir(_images_dir(backend))).count(image.fingerprint) == 1


def test_empty_and_vm_uploads_refused(images):
    assert _raw_post(images, b'').status_code == 400
    with pytest.raises(pylxd.exceptions.LXDAPIException, match='Virtual-machine'):
        images.images.create(b'disk', metadata=corpus.busybox_split()[0], vm=True)


def test_update_with_etag(images):
    image = images.images.create(corpus.busybox_unified(marker=b'etag'), wait=True)
    node = images.api.images[image.fingerprint]
    etag = node.get().headers['ETag']
    node.patch(json={'properties': {'extra': 'yes'}})
    image = images.images.get(image.fingerprint)
    assert image.properties['extra'] == 'yes' and image.properties['os'] == 'busybox'
    resp = images.api.session.put(node._api_endpoint, json={'properties': {}, 'public': False},
                                  headers={'If-Match': etag})
    assert resp.status_code == 412
    node.put(json={'properties': {'only': 'this'}, 'public': True, 'auto_update': False})
    image = images.images.get(image.fingerprint)
    assert image.properties == {'only': 'this'} and image.public is True
    resp = images.api.session.patch(node._api_endpoint, json={'public': 'yes'})
    assert resp.status_code == 400 and 'public' in resp.json()['error']


def test_fingerprint_prefix_lookup(images):
    image = images.images.create(corpus.busybox_unified(marker=b'prefix'), wait=True)
    assert images.images.get(image.fingerprint[:12]).fingerprint == image.fingerprint
    with pytest.raises(pylxd.exceptions.NotFound):
        images.images.get('f' * 64)


def test_aliases(images):
    image = images.images.create(corpus.busybox_unified(marker=b'alias'), wait=True)
    image.add_alias('bb/test', 'busybox for tests')
    assert images.images.get_by_alias('bb/test').fingerprint == image.fingerprint
    aliases = images.api.images.aliases
    assert '/1.0/images/aliases/bb/test' in aliases.get().json()['metadata']
    resp = images.api.session.post(aliases._api_endpoint, json={'name': 'bb/test',
                                                                'target': image.fingerprint})
    assert resp.status_code == 409
    resp = images.api.session.post(aliases._api_endpoint, json={'name': 'x', 'target': 'nope'})
    assert resp.status_code == 404
    aliases['bb/test'].patch(json={'description': 'changed'})
    assert aliases['bb/test'].get().json()['metadata']['description'] == 'changed'
    aliases['bb/test'].post(json={'name': 'bb2'})
    assert images.images.get(image.fingerprint).aliases == [
        {'name': 'bb2', 'description': 'changed'}]
    with pytest.raises(pylxd.exceptions.NotFound):
        images.images.get_by_alias('bb/test')
    image.delete(wait=True)
    with pytest.raises(pylxd.exceptions.NotFound):      # aliases go with their image
        images.images.get_by_alias('bb2')


def _lxc(backend, *args, check=True):
    proc = subprocess.run(['lxc'] + list(args), env=dict(os.environ, LXD_DIR=backend.data_dir),
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_stock_lxc_client_session(backend, images, tmp_path):
    unified = tmp_path / 'busybox.tar.gz'
    unified.write_bytes(corpus.busybox_unified(marker=b'lxc'))
    fingerprint = hashlib.sha256(unified.read_bytes()).hexdigest()
    out = _lxc(backend, 'image', 'import', str(unified), '--alias', 'lxc-bb', 'os=lxcbox')
    assert fingerprint[:12] in out.stdout
    listing = _lxc(backend, 'image', 'list', '--format', 'csv').stdout
    assert 'lxc-bb' in listing and fingerprint[:12] in listing
    assert images.images.get(fingerprint).properties['os'] == 'lxcbox'
    _lxc(backend, 'image', 'alias', 'create', 'lxc-bb2', fingerprint)
    _lxc(backend, 'image', 'alias', 'rename', 'lxc-bb2', 'lxc-bb3')
    assert 'lxc-bb3' in _lxc(backend, 'image', 'alias', 'list', '--format', 'csv').stdout
    info = _lxc(backend, 'image', 'info', 'lxc-bb').stdout
    assert 'Architecture: x86_64' in info and fingerprint in info
    _lxc(backend, 'image', 'export', 'lxc-bb', str(tmp_path / 'exported'))
    exported = [p for p in tmp_path.iterdir() if p.name.startswith('exported')]
    assert len(exported) == 1 and exported[0].read_bytes() == unified.read_bytes()
    metadata, rootfs = corpus.busybox_split(marker=b'lxc-split')
    (tmp_path / 'meta.tar.gz').write_bytes(metadata)
    (tmp_path / 'rootfs.tar.gz').write_bytes(rootfs)
    _lxc(backend, 'image', 'import', str(tmp_path / 'meta.tar.gz'),
         str(tmp_path / 'rootfs.tar.gz'), '--alias', 'lxc-split')
    split_fp = hashlib.sha256(metadata + rootfs).hexdigest()
    assert images.images.get_by_alias('lxc-split').fingerprint == split_fp
    split_dir = tmp_path / 'split-export'
    split_dir.mkdir()
    _lxc(backend, 'image', 'export', 'lxc-split', str(split_dir / 'out'))
    assert sorted(p.read_bytes() for p in split_dir.iterdir()) == sorted([metadata, rootfs])
    _lxc(backend, 'image', 'delete', 'lxc-bb', 'lxc-split')
    assert not images.images.exists(fingerprint)
    assert not images.images.exists(split_fp)
    assert not os.path.exists(os.path.join(_images_dir(backend), split_fp + '.rootfs'))


def test_split_image_with_squashfs_rootfs(backend, images, tmp_path):
    """A squashfs rootfs (as LXD's own images ship) is imported and unpacked for an instance."""
    metadata, rootfs_tar = corpus.busybox_split(marker=b'squash')
    tree = tmp_path / 'tree'
    tree.mkdir()
    (tmp_path / 'rootfs.tar.gz').write_bytes(rootfs_tar)
    subprocess.run(['tar', '-C', str(tree), '-xzf', str(tmp_path / 'rootfs.tar.gz'),
                    '--numeric-owner'], check=True)
    squashfs = tmp_path / 'rootfs.squashfs'
    subprocess.run(['mksquashfs', str(tree), str(squashfs), '-noappend', '-quiet',
                    '-comp', 'xz'], check=True, capture_output=True)
    rootfs = squashfs.read_bytes()
    image = images.images.create(rootfs, metadata=metadata, wait=True)
    assert image.fingerprint == hashlib.sha256(metadata + rootfs).hexdigest()
    name = 'sq-' + image.fingerprint[:8]
    images.instances.create({'name': name, 'source': {'type': 'image',
                                                      'fingerprint': image.fingerprint}},
                            wait=True)
    try:
        root = os.path.join(backend.data_dir, 'storage-pools', 'default', 'containers', name,
                            'rootfs')
        with open(os.path.join(root, 'etc/marker'), 'rb') as f:
            assert f.read() == b'squash'
        assert os.readlink(os.path.join(root, 'sbin/init')) == '../bin/busybox'
    finally:
        images.instances.get(name).delete(wait=True)


def test_squashfs_rootfs_with_a_device_node_is_refused(backend, images, tmp_path):
    metadata, _ = corpus.busybox_split()
    tree = tmp_path / 'tree'
    (tree / 'dev').mkdir(parents=True)
    os.mknod(tree / 'dev' / 'null', 0o666 | 0o020000, os.makedev(1, 3))
    squashfs = tmp_path / 'rootfs.squashfs'
    subprocess.run(['mksquashfs', str(tree), str(squashfs), '-noappend', '-quiet'],
                   check=True, capture_output=True)
    before = sorted(os.listdir(_images_dir(backend)))
    with pytest.raises(pylxd.exceptions.LXDAPIException, match='device node'):
        images.images.create(squashfs.read_bytes(), metadata=metadata, wait=True)
    assert sorted(os.listdir(_images_dir(backend))) == before


def _peak_rss(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024


def test_large_upload_is_streamed_to_disk(backend, images, tmp_path):
    """A 160 MB image is written to disk as it arrives: the daemon's peak memory barely moves."""
    size = 160 << 20
    payload = tmp_path / 'payload'
    with open(payload, 'wb') as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    builder = corpus.TarBuilder().file('metadata.yaml', corpus.metadata_yaml(templates={}))
    builder.dir('rootfs')
    head = builder.tar()[:-1024]            # without the end-of-archive blocks
    image_path = tmp_path / 'big.tar'
    with open(image_path, 'wb') as out:
        out.write(head)
        info = tarfile.TarInfo('rootfs/big')
        info.size, info.mode = size, 0o644
        out.write(info.tobuf(format=tarfile.GNU_FORMAT))
        with open(payload, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                out.write(chunk)
        out.write(b'\0' * (-size % 512) + b'\0' * 1024)
    payload.unlink()
    before = _peak_rss(backend.process.pid)
    with open(image_path, 'rb') as f:
        image = images.images.create(f, wait=True)
    assert image.size == os.path.getsize(image_path)
    assert _peak_rss(backend.process.pid) - before < 48 << 20


def test_client_vanishing_mid_upload_leaves_nothing(backend, images):
    before = sorted(os.listdir(_images_dir(backend)))
    data = corpus.busybox_unified(marker=b'vanish')
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(backend.socket)
    sock.sendall(b'POST /1.0/images HTTP/1.1\r\nHost: lxd\r\n'
                 b'Content-Type: application/octet-stream\r\n'
                 b'Content-Length: %d\r\n\r\n' % len(data) + data[:len(data) // 3])
    deadline = time.monotonic() + 10
    while not any(n.startswith('.staging-') for n in os.listdir(_images_dir(backend))):
        assert time.monotonic() < deadline, 'the upload was never staged'
        time.sleep(0.05)
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sorted(os.listdir(_images_dir(backend))) != before:
        time.sleep(0.1)
    assert sorted(os.listdir(_images_dir(backend))) == before
    assert not images.images.exists(hashlib.sha256(data).hexdigest())
