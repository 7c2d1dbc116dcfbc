"""Partition tables and filesystem signatures, read by nova_lxd.image.disk (no root needed)."""
import io
import struct
import subprocess
import uuid
import zlib

import pytest

from nova_lxd.image import disk
from nova_lxd.image.errors import ConvertRefused

MIB = 1 << 20
LINUX_FS = uuid.UUID('0fc63daf-8483-4772-8e79-3d69d8477de4')
ROOT_X86_64 = uuid.UUID('4f68bce3-e8cd-4db1-96e7-fbcaf984b709')


def ext4_at(buf, offset):
    buf[offset + 1080:offset + 1082] = b'\x53\xef'
    struct.pack_into('<II', buf, offset + 1024 + 92, 0x4, 0x40 | 0x2)   # journal; extents


def mbr_entry(buf, at, ptype, start, count, status=0):
    struct.pack_into('<B3xB3xII', buf, at, status, ptype, start, count)


def write_mbr(buf, entries):
    for i, (ptype, start, count) in enumerate(entries):
        mbr_entry(buf, 446 + 16 * i, ptype, start, count)
    buf[510:512] = b'\x55\xaa'


def write_gpt(buf, parts, sector=512):
    """parts: list of (type uuid, first lba, last lba)."""
    entries = bytearray(128 * 128)
    for i, (type_guid, first, last) in enumerate(parts):
        struct.pack_into('<16s16sQQQ', entries, i * 128, type_guid.bytes_le, uuid.uuid4().bytes_le,
                         first, last, 0)
    entries_lba = 2
    buf[entries_lba * sector:entries_lba * sector + len(entries)] = entries
    header = bytearray(92)
    header[:8] = b'EFI PART'
    struct.pack_into('<II', header, 8, 0x10000, 92)
    struct.pack_into('<QQQQ', header, 24, 1, len(buf) // sector - 1, 34, len(buf) // sector - 34)
    header[56:72] = uuid.uuid4().bytes_le
    struct.pack_into('<QIII', header, 72, entries_lba, 128, 128, zlib.crc32(bytes(entries)))
    struct.pack_into('<I', header, 16, zlib.crc32(bytes(header)))
    buf[sector:sector + 92] = header
    write_mbr(buf, [(0xee, 1, len(buf) // 512 - 1)])


def parts_of(buf):
    return disk.partitions(io.BytesIO(bytes(buf)), len(buf))


def test_gpt_partitions_and_root_type_preferred():
    buf = bytearray(16 * MIB)
    write_gpt(buf, [(LINUX_FS, 2048, 2048 + 8191), (ROOT_X86_64, 12288, 12288 + 4095)])
    ext4_at(buf, 2048 * 512)
    ext4_at(buf, 12288 * 512)
    parts = parts_of(buf)
    assert [(p.number, p.offset, p.size, p.scheme, p.fstype) for p in parts] == [
        (1, 2048 * 512, 4 * MIB, 'gpt', 'ext4'), (2, 12288 * 512, 2 * MIB, 'gpt', 'ext4')]
    # the larger partition would come first, but the GPT says which one is the root
    assert [p.number for p in disk.root_candidates(parts)] == [2, 1]


def test_gpt_checksums_are_verified():
    buf = bytearray(8 * MIB)
    write_gpt(buf, [(LINUX_FS, 2048, 4095)])
    bad_header = bytearray(buf)
    bad_header[512 + 40] ^= 1
    with pytest.raises(ConvertRefused, match='header checksum'):
        parts_of(bad_header)
    bad_entries = bytearray(buf)
    bad_entries[1024 + 40] ^= 1
    with pytest.raises(ConvertRefused, match='entries checksum'):
        parts_of(bad_entries)


def test_gpt_partition_outside_the_disk_is_refused():
    buf = bytearray(4 * MIB)
    write_gpt(buf, [(LINUX_FS, 2048, 100000)])
    with pytest.raises(ConvertRefused, match='outside the disk'):
        parts_of(buf)


def test_mbr_primary_and_logical_partitions():
    buf = bytearray(16 * MIB)
    write_mbr(buf, [(0x83, 2048, 2048), (0x05, 4096, 16384)])
    # two logical partitions: EBRs at 4096 and 4096+8192
    ebr1 = 4096 * 512
    mbr_entry(buf, ebr1 + 446, 0x83, 2048, 4096)
    mbr_entry(buf, ebr1 + 462, 0x05, 8192, 8192)
    buf[ebr1 + 510:ebr1 + 512] = b'\x55\xaa'
    ebr2 = (4096 + 8192) * 512
    mbr_entry(buf, ebr2 + 446, 0x83, 2048, 2048)
    buf[ebr2 + 510:ebr2 + 512] = b'\x55\xaa'
    ext4_at(buf, (4096 + 8192 + 2048) * 512)
    parts = parts_of(buf)
    assert [(p.number, p.offset // 512, p.size // 512) for p in parts] == [
        (1, 2048, 2048), (5, 6144, 4096), (6, 14336, 2048)]
    assert [p.number for p in disk.root_candidates(parts)] == [6]


def test_looping_extended_chain_is_refused():
    buf = bytearray(8 * MIB)
    write_mbr(buf, [(0x05, 2048, 8192)])
    first, second = 2048 * 512, 2049 * 512
    mbr_entry(buf, first + 446, 0x83, 64, 64)
    mbr_entry(buf, first + 462, 0x05, 1, 100)       # next EBR: extended start + 1
    mbr_entry(buf, second + 446, 0x83, 64, 64)
    mbr_entry(buf, second + 462, 0x05, 1, 100)      # ... which names itself again
    for ebr in (first, second):
        buf[ebr + 510:ebr + 512] = b'\x55\xaa'
    with pytest.raises(ConvertRefused, match='loops'):
        parts_of(buf)


def test_protective_mbr_without_gpt_is_refused():
    buf = bytearray(4 * MIB)
    write_mbr(buf, [(0xee, 1, 8191)])
    with pytest.raises(ConvertRefused, match='protective MBR'):
        parts_of(buf)


def test_bare_filesystem_and_unknown_layouts():
    buf = bytearray(4 * MIB)
    ext4_at(buf, 0)
    assert [(p.number, p.scheme, p.fstype, p.size) for p in parts_of(buf)] == [
        (0, 'none', 'ext4', 4 * MIB)]
    with pytest.raises(ConvertRefused, match='no partition table'):
        parts_of(bytearray(4 * MIB))
    garbage = bytearray(b'\x42' * (4 * MIB))
    garbage[510:512] = b'\x55\xaa'                  # a signature, but the entries are nonsense
    with pytest.raises(ConvertRefused, match='no partition table'):
        parts_of(garbage)
    with pytest.raises(ConvertRefused, match='too small'):
        parts_of(bytearray(100))


@pytest.mark.parametrize('write,expected', [
    (lambda b: b.__setitem__(slice(0, 4), b'XFSB'), 'xfs'),
    (lambda b: b.__setitem__(slice(0x10040, 0x10048), b'_BHRfS_M'), 'btrfs'),
    (lambda b: b.__setitem__(slice(0, 6), b'LUKS\xba\xbe'), 'crypto_LUKS'),
    (lambda b: (b.__setitem__(slice(512, 520), b'LABELONE'),
                b.__setitem__(slice(536, 544), b'LVM2 001')), 'LVM2_member'),
    (lambda b: b.__setitem__(slice(4086, 4096), b'SWAPSPACE2'), 'swap'),
    (lambda b: b.__setitem__(slice(0, 4), b'hsqs'), 'squashfs'),
    (lambda b: b.__setitem__(slice(1080, 1082), b'\x53\xef'), 'ext2'),
])
def test_signatures(write, expected):
    buf = bytearray(MIB)
    write(buf)
    assert disk.filesystem_type(io.BytesIO(bytes(buf)), 0) == expected


@pytest.mark.parametrize('fstype,reason', [
    ('crypto_LUKS', 'the disk is encrypted \\(LUKS\\)'),
    ('LVM2_member', 'LVM physical volumes are not supported'),
    ('swap', 'no ext2/3/4, xfs or btrfs filesystem \\(found partition 1 \\(swap, 1 MiB\\)\\)'),
])
def test_refusal_reasons(fstype, reason):
    parts = [disk.Partition(1, MIB, MIB, 'gpt', fstype=fstype)]
    with pytest.raises(ConvertRefused, match='no Linux root filesystem: ' + reason):
        disk.root_candidates(parts)


@pytest.mark.parametrize('label', ['gpt', 'dos'])
def test_tables_written_by_sfdisk(tmp_path, label):
    """Our reader agrees with util-linux about real tables."""
    path = tmp_path / 'disk.raw'
    with open(path, 'wb') as f:
        f.truncate(20 * MIB)
    script = ('label: %s\nstart=1MiB, size=3MiB\nstart=5MiB, size=10MiB\n' % label)
    subprocess.run(['sfdisk', '-q', str(path)], input=script, text=True, check=True)
    with open(path, 'rb') as f:
        parts = disk.partitions(f, 20 * MIB)
    assert [(p.number, p.offset, p.size) for p in parts] == [
        (1, MIB, 3 * MIB), (2, 5 * MIB, 10 * MIB)]
    assert {p.scheme for p in parts} == {'gpt' if label == 'gpt' else 'mbr'}
