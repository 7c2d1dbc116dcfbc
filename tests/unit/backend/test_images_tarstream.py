"""The strict tar header reader: it reads every layout real images use as GNU tar reads it, and
every decompression the store accepts, in one streaming pass."""
import bz2
import gzip
import io
import lzma
import subprocess
import tarfile

import pytest

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.images import streams
from nova_lxd.backend.images import tarball
from nova_lxd.backend.images import tarstream
from tests.functional.backend import hostile_tarballs as corpus

LONG = 'rootfs/' + '/'.join(['d' * 60] * 3)       # over 100 bytes: a long-name header


def _link_target(fmt):
    # ustar has no long link names
    return 'rootfs/é-ü' if fmt == tarfile.USTAR_FORMAT else LONG


def _archive(fmt):
    target = _link_target(fmt)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=fmt) as archive:
        for name, kind, data, link in (
                ('rootfs', tarfile.DIRTYPE, None, ''),
                (LONG.rsplit('/', 1)[0], tarfile.DIRTYPE, None, ''),
                (LONG, tarfile.REGTYPE, b'long' * 300, ''),
                ('rootfs/é-ü', tarfile.REGTYPE, b'utf-8 name', ''),
                ('rootfs/link', tarfile.SYMTYPE, None, target[len('rootfs/'):]),
                ('rootfs/hard', tarfile.LNKTYPE, None, target),
                ('rootfs/fifo', tarfile.FIFOTYPE, None, '')):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = kind, link, 1700000000
            info.size = len(data or b'')
            archive.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def _walk(raw, chunk=700):
    chunks = iter([raw[i:i + chunk] for i in range(0, len(raw), chunk)])
    return [(m.name, m.type, m.linkname, m.size)
            for m in tarstream.walk(lambda: next(chunks, b''))]


@pytest.mark.parametrize('fmt', [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_names_are_gnu_tars_names(tmp_path, fmt):
    raw = _archive(fmt)
    path = tmp_path / 'a.tar'
    path.write_bytes(raw)
    listed = subprocess.run(['tar', '-tf', str(path)], check=True, capture_output=True
                            ).stdout.decode('utf-8', 'surrogateescape').splitlines()
    walked = _walk(raw)
    assert [name for name, *_ in walked] == listed
    assert (LONG, tarstream.REGULAR, '', 1200) in walked
    target = _link_target(fmt)
    assert ('rootfs/hard', tarstream.HARDLINK, target, 0) in walked
    assert ('rootfs/link', tarstream.SYMLINK, target[len('rootfs/'):], 0) in walked


def test_member_data_is_read_only_when_asked():
    raw = _archive(tarfile.PAX_FORMAT)
    chunks = iter([raw])
    seen = {}
    for member in tarstream.walk(lambda: next(chunks, b'')):
        if member.name == 'rootfs/é-ü':
            seen[member.name] = member.read()
    assert seen == {'rootfs/é-ü': b'utf-8 name'}


def test_pax_size_and_base256_size_are_read():
    data = b'x' * 1000
    header = corpus.forged_header(b'rootfs/big', size_field=b'\x80' + (1000).to_bytes(11, 'big'))
    raw = header + data + bytes(24) + bytes(1024)
    assert _walk(raw, 100) == [('rootfs/big', tarstream.REGULAR, '', 1000)]
    pax = b'13 size=1000\n'
    raw = (corpus.forged_header(b'pax', b'x', len(pax)) + pax + bytes(512 - len(pax))
           + corpus.forged_header(b'rootfs/big', size=7) + data + bytes(24) + bytes(1024))
    assert _walk(raw) == [('rootfs/big', tarstream.REGULAR, '', 1000)]


def test_truncated_stream_is_an_eof_error():
    raw = _archive(tarfile.GNU_FORMAT)
    with pytest.raises(EOFError):
        _walk(raw[:2048])      # in the middle of the long-named file's data


@pytest.mark.parametrize('compress', [
    lambda raw: gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]),   # two gzip members
    lambda raw: lzma.compress(raw),
    lambda raw: bz2.compress(raw),
    lambda raw: subprocess.run(['zstd', '-q', '-c'], input=raw, check=True,
                               capture_output=True).stdout,
], ids=['gzip-multi-member', 'xz', 'bzip2', 'zstd'])
def test_every_compression_streams_to_the_same_bytes(tmp_path, compress):
    raw = corpus.busybox_unified(compression=None)
    path = tmp_path / 'image'
    path.write_bytes(compress(raw))
    fmt = tarball.detect_format(str(path))
    with streams.chunks(str(path), fmt) as chunks:
        assert b''.join(chunks) == raw
    content = tarball.scan(str(path), 'unified')
    assert content.has_rootfs and 'rootfs/bin/busybox' in content.names


def test_corrupt_zstd_is_refused(tmp_path):
    raw = subprocess.run(['zstd', '-q', '-c'], input=corpus.busybox_unified(compression=None),
                         check=True, capture_output=True).stdout
    path = tmp_path / 'image'
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(BadRequest, match='Corrupt or truncated'):
        tarball.scan(str(path), 'unified')


def test_byte_sum_is_exact_up_to_256_bytes():
    for block in (bytes(256), b'\xff' * 256, bytes(range(256)), b'\x80' * 8, b''):
        assert tarstream._byte_sum(block) == sum(block)


def test_signed_checksum_is_accepted_and_a_wrong_one_refused():
    name = 'rootfs/\xe9'.encode('latin-1')        # a byte over 127: signed and unsigned differ
    header = bytearray(corpus.forged_header(name))
    unsigned = tarstream._unsigned_checksum(bytes(header))
    header[148:156] = b'%06o\x00 ' % (unsigned - 256)
    raw = bytes(header) + bytes(1024)
    assert [m.name for m in tarstream.walk(iter([raw, b'']).__next__)] == ['rootfs/\udce9']
    header[148:156] = b'%06o\x00 ' % (unsigned - 1)
    with pytest.raises(BadRequest, match='checksum'):
        list(tarstream.walk(iter([bytes(header) + bytes(1024), b'']).__next__))


def test_a_lone_zero_block_ends_the_archive_as_for_gnu_tar(tmp_path):
    raw = (corpus.forged_header(b'rootfs/a') + bytes(512) + corpus.forged_header(b'rootfs/hidden')
           + bytes(10240))
    path = tmp_path / 'lone.tar'
    path.write_bytes(raw)
    listed = subprocess.run(['tar', '-tf', str(path)], capture_output=True).stdout.split()
    assert listed == [b'rootfs/a']
    assert [name for name, *_ in _walk(raw)] == ['rootfs/a']
