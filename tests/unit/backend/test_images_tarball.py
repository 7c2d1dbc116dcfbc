"""Image tarball validation: formats, the hostile corpus, fingerprints of staged uploads."""
import asyncio
import hashlib
import io
import os

import pytest

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.images import tarball
from nova_lxd.backend.images.staging import Staging
from tests.functional.backend import hostile_tarballs as corpus


def _write(tmp_path, data, name='image'):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize('compression,expected', [('gzip', 'gzip'), ('xz', 'xz'),
                                                  (None, 'tar')])
def test_busybox_image_passes_in_every_compression(tmp_path, compression, expected):
    path = _write(tmp_path, corpus.busybox_unified(compression))
    assert tarball.detect_format(path) == expected
    content = tarball.scan(path, 'unified')
    assert content.has_rootfs
    assert b'architecture: x86_64' in content.metadata_yaml
    assert content.templates == {'hostname.tpl': b'{{ container.name }}\n'}
    assert 'rootfs/bin/busybox' in content.names
    assert 'rootfs/bin/su-test' in content.names      # setuid files are kept


def test_split_parts_pass(tmp_path):
    metadata, rootfs = corpus.busybox_split('xz')
    content = tarball.scan(_write(tmp_path, metadata, 'm'), 'metadata')
    assert content.metadata_yaml and not content.has_rootfs
    names = tarball.scan(_write(tmp_path, rootfs, 'r'), 'rootfs').names
    assert 'bin/busybox' in names and 'sbin/init' in names


@pytest.mark.parametrize('case,data,words', corpus.hostile_unified(),
                         ids=[c[0] for c in corpus.hostile_unified()])
def test_hostile_unified_refused(tmp_path, case, data, words):
    from nova_lxd.backend.images import metadata
    path = _write(tmp_path, data)
    with pytest.raises(BadRequest) as exc:
        content = tarball.scan(path, 'unified')
        metadata.parse(content.metadata_yaml, set(content.templates))
    assert words in str(exc.value)


@pytest.mark.parametrize('case,meta,rootfs,words', corpus.hostile_split(),
                         ids=[c[0] for c in corpus.hostile_split()])
def test_hostile_split_refused(tmp_path, case, meta, rootfs, words):
    meta_path, rootfs_path = _write(tmp_path, meta, 'm'), _write(tmp_path, rootfs, 'r')
    with pytest.raises(BadRequest) as exc:
        tarball.scan(meta_path, 'metadata')
        if tarball.detect_format(rootfs_path) == 'squashfs':
            tarball.check_squashfs(rootfs_path)
        else:
            tarball.scan(rootfs_path, 'rootfs')
    assert words in str(exc.value)


def test_squashfs_must_be_a_split_rootfs(tmp_path):
    path = _write(tmp_path, b'hsqs' + bytes(1000))
    with pytest.raises(BadRequest, match='only accepted as the rootfs'):
        tarball.scan(path, 'unified')


def test_extract_keeps_ids_modes_and_links(tmp_path):
    if os.geteuid() != 0:
        pytest.skip('keeping file owners needs root')  # the functional tests run as root
    path = _write(tmp_path, corpus.busybox_unified())
    dest = tmp_path / 'out'
    dest.mkdir()
    tarball.extract(path, str(dest))
    shadow = os.lstat(dest / 'rootfs/etc/shadow')
    assert (shadow.st_uid, shadow.st_gid, shadow.st_mode & 0o7777) == (0, 42, 0o640)
    assert os.lstat(dest / 'rootfs/bin/su-test').st_mode & 0o4000
    assert os.readlink(dest / 'rootfs/sbin/init') == '../bin/busybox'
    assert os.stat(dest / 'rootfs/etc/hostname.bak').st_ino == \
        os.stat(dest / 'rootfs/etc/hostname').st_ino
    assert (dest / 'templates/hostname.tpl').exists()


def _stage(tmp_path, parts):
    staging = Staging(str(tmp_path))

    async def feed():
        for name, data in parts:
            stream = io.BytesIO(data)

            async def read():
                return stream.read(7000)
            await staging.receive(name, read)
    asyncio.run(feed())
    return staging


def test_fingerprints_are_lxds(tmp_path):
    unified = corpus.busybox_unified()
    staging = _stage(tmp_path, [('image', unified)])
    assert staging.fingerprint == hashlib.sha256(unified).hexdigest()
    assert staging.size == len(unified)
    metadata, rootfs = corpus.busybox_split()
    split = _stage(tmp_path, [('metadata', metadata), ('rootfs', rootfs)])
    assert split.fingerprint == hashlib.sha256(metadata + rootfs).hexdigest()
    split.discard()
    staging.discard()
    assert os.listdir(tmp_path) == []


def _zstd(data):
    import subprocess
    return subprocess.run(['zstd', '-q', '-c'], input=data, capture_output=True,
                          check=True).stdout


def test_zstd_tarballs_are_read_through_the_zstd_tool(tmp_path):
    good = _write(tmp_path, _zstd(corpus.busybox_unified(None)), 'good')
    assert tarball.detect_format(good) == 'zstd'
    assert 'rootfs/bin/busybox' in tarball.scan(good, 'unified').names
    evil = corpus.TarBuilder().file('metadata.yaml', corpus.metadata_yaml(templates={})) \
        .dir('rootfs').symlink('rootfs/e', '/etc').file('rootfs/e/x', b'x').tar()
    with pytest.raises(BadRequest, match='not a directory'):
        tarball.scan(_write(tmp_path, _zstd(evil), 'evil'), 'unified')
    truncated = _zstd(corpus.busybox_unified(None))
    with pytest.raises(BadRequest, match='(?i)corrupt'):
        tarball.scan(_write(tmp_path, truncated[:len(truncated) // 2], 'cut'), 'unified')


def test_discard_later_removes_the_staging_directory_off_the_callers_thread(tmp_path):
    from nova_lxd.backend.images import staging as staging_module
    staging = Staging(str(tmp_path))
    staging.discard_later()
    staging_module._CLEANER.submit(lambda: None).result(timeout=10)   # one thread, in order
    assert not os.path.exists(staging.path)
    assert os.listdir(tmp_path) == []
