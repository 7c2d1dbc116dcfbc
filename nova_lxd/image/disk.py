"""Read a disk image's layout in Python: MBR and GPT partition tables, filesystem signatures.

Nothing here mounts or executes anything; it only reads bytes.
"""
import dataclasses
import struct
import uuid
import zlib

from nova_lxd.image.errors import ConvertRefused

SECTOR = 512
MIN_PARTITION = 1 << 20          # smaller ones cannot hold a root filesystem
MAX_EBR_CHAIN = 128              # logical partitions; also stops a looping chain

# filesystems a container root can be extracted from, with the kernel fs type to mount them
LINUX_ROOT_FILESYSTEMS = {'ext2': 'ext4', 'ext3': 'ext4', 'ext4': 'ext4',
                          'xfs': 'xfs', 'btrfs': 'btrfs'}

MBR_EXTENDED_TYPES = {0x05, 0x0f, 0x85}
MBR_PROTECTIVE = 0xee
# GPT "Linux root (x86-64)" and friends: tried first when several filesystems qualify
GPT_LINUX_ROOT_TYPES = {
    uuid.UUID('4f68bce3-e8cd-4db1-96e7-fbcaf984b709'),   # x86-64
    uuid.UUID('44479540-f297-41b2-9af7-d131d5f0458a'),   # x86
    uuid.UUID('b921b045-1df0-41c3-af44-4c6f280d3fae'),   # arm64
    uuid.UUID('69dad710-2ce4-4e3c-b16c-21a1d49abed3'),   # arm
}


@dataclasses.dataclass
class Partition:
    number: int          # 1-based; 0 for a whole-disk filesystem
    offset: int          # bytes
    size: int            # bytes
    scheme: str          # 'gpt', 'mbr' or 'none'
    type_id: str = ''    # GPT type GUID or MBR type byte (hex)
    fstype: str = None   # from the signature: ext4, xfs, btrfs, vfat, swap, crypto_LUKS ...

    @property
    def linux_root_candidate(self):
        return self.fstype in LINUX_ROOT_FILESYSTEMS

    def describe(self):
        where = 'the whole disk' if self.number == 0 else 'partition %d' % self.number
        return '%s (%s, %d MiB)' % (where, self.fstype or 'unknown contents', self.size >> 20)


def _read(f, offset, length):
    f.seek(offset)
    data = f.read(length)
    return data if len(data) == length else data + b'\0' * (length - len(data))


def filesystem_type(f, offset):
    """Name the filesystem (or other content) starting at offset by its signature, or None."""
    if _read(f, offset + 1080, 2) == b'\x53\xef':
        compat, incompat = struct.unpack('<II', _read(f, offset + 1024 + 92, 8))
        if incompat & ~0x16:         # beyond filetype/recover/meta_bg: extents, 64bit, flex_bg..
            return 'ext4'
        return 'ext3' if compat & 0x4 else 'ext2'
    head = _read(f, offset, 8)
    if head[:4] == b'XFSB':
        return 'xfs'
    if _read(f, offset + 0x10040, 8) == b'_BHRfS_M':
        return 'btrfs'
    if head[:6] in (b'LUKS\xba\xbe', b'SKUL\xba\xbe'):
        return 'crypto_LUKS'
    for sector in range(4):
        label = _read(f, offset + sector * SECTOR, 32)
        if label[:8] == b'LABELONE' and label[24:32] == b'LVM2 001':
            return 'LVM2_member'
    if head[:4] in (b'hsqs', b'sqsh'):
        return 'squashfs'
    if _read(f, offset + 4096 - 10, 10) == b'SWAPSPACE2':
        return 'swap'
    if _read(f, offset + 0x8001, 5) == b'CD001':
        return 'iso9660'
    boot = _read(f, offset, 512)
    if boot[510:512] == b'\x55\xaa' and (boot[54:59] == b'FAT12' or boot[54:59] == b'FAT16'
                                         or boot[82:87] == b'FAT32'):
        return 'vfat'
    if boot[3:11] == b'NTFS    ':
        return 'ntfs'
    return None


def _gpt(f, disk_size, sector):
    header = _read(f, sector, 92)
    if header[:8] != b'EFI PART':
        return None
    header_size, header_crc = struct.unpack_from('<II', header, 12)
    if not 92 <= header_size <= sector:
        raise ConvertRefused('corrupt GPT: header size %d' % header_size)
    raw = bytearray(_read(f, sector, header_size))
    raw[16:20] = b'\0\0\0\0'
    if zlib.crc32(bytes(raw)) != header_crc:
        raise ConvertRefused('corrupt GPT: header checksum mismatch')
    entries_lba, count, entry_size, entries_crc = struct.unpack_from('<QIII', header, 72)
    if entry_size < 128 or count > 4096 or entry_size > 4096:
        raise ConvertRefused('corrupt GPT: %d entries of %d bytes' % (count, entry_size))
    table = _read(f, entries_lba * sector, count * entry_size)
    if zlib.crc32(table) != entries_crc:
        raise ConvertRefused('corrupt GPT: partition entries checksum mismatch')
    parts = []
    for i in range(count):
        entry = table[i * entry_size:(i + 1) * entry_size]
        type_guid = uuid.UUID(bytes_le=entry[:16])
        if type_guid.int == 0:
            continue
        first, last = struct.unpack_from('<QQ', entry, 32)
        offset, size = first * sector, (last - first + 1) * sector
        if last < first or offset + size > disk_size:
            raise ConvertRefused('corrupt GPT: partition %d lies outside the disk' % (i + 1))
        parts.append(Partition(i + 1, offset, size, 'gpt', str(type_guid)))
    return parts


def _mbr_entries(sector0):
    entries = []
    for i in range(4):
        status, ptype, start, count = struct.unpack_from('<B3xB3xII', sector0, 446 + 16 * i)
        if status not in (0x00, 0x80):
            return None              # not a partition table (boot code or a filesystem)
        if ptype and count:
            entries.append((i + 1, ptype, start, count))
    return entries


def _mbr(f, disk_size, sector0):
    entries = _mbr_entries(sector0)
    if entries is None or not entries:
        return None
    parts = []
    for number, ptype, start, count in entries:
        if ptype == MBR_PROTECTIVE:
            raise ConvertRefused('protective MBR without a valid GPT header')
        if (start + count) * SECTOR > disk_size:
            raise ConvertRefused('corrupt MBR: partition %d lies outside the disk' % number)
        if ptype in MBR_EXTENDED_TYPES:
            parts.extend(_logical(f, disk_size, start))
        else:
            parts.append(Partition(number, start * SECTOR, count * SECTOR, 'mbr',
                                   '0x%02x' % ptype))
    return parts


def _logical(f, disk_size, extended_start):
    """Walk the EBR chain of an extended partition (logical partitions are numbered from 5)."""
    parts, ebr, seen = [], extended_start, set()
    for number in range(5, 5 + MAX_EBR_CHAIN):
        if ebr in seen:
            raise ConvertRefused('corrupt MBR: extended partition chain loops')
        seen.add(ebr)
        sector = _read(f, ebr * SECTOR, SECTOR)
        if sector[510:512] != b'\x55\xaa':
            raise ConvertRefused('corrupt MBR: bad extended boot record at sector %d' % ebr)
        _, ptype, start, count = struct.unpack_from('<B3xB3xII', sector, 446)
        if ptype and count:
            offset = (ebr + start) * SECTOR
            if offset + count * SECTOR > disk_size:
                raise ConvertRefused('corrupt MBR: partition %d lies outside the disk' % number)
            parts.append(Partition(number, offset, count * SECTOR, 'mbr', '0x%02x' % ptype))
        _, next_type, next_start, _ = struct.unpack_from('<B3xB3xII', sector, 462)
        if not next_type or not next_start:
            return parts
        ebr = extended_start + next_start
    raise ConvertRefused('corrupt MBR: more than %d logical partitions' % MAX_EBR_CHAIN)


def partitions(f, disk_size):
    """The disk's partitions (GPT, else MBR) or the whole disk as one filesystem.

    Raises ConvertRefused when there is neither a partition table we understand nor a
    filesystem signature at the start.
    """
    if disk_size < 4 * 1024:
        raise ConvertRefused('too small to be a disk image (%d bytes)' % disk_size)
    sector0 = _read(f, 0, SECTOR)
    for sector in (SECTOR, 4096):
        found = _gpt(f, disk_size, sector)
        if found is not None:
            return _classify(f, found)
    whole = filesystem_type(f, 0)
    # A bare filesystem; a FAT boot sector also ends in 55aa, so signatures win over MBR
    if whole is not None and whole not in ('vfat', 'ntfs'):
        return [Partition(0, 0, disk_size, 'none', fstype=whole)]
    if sector0[510:512] == b'\x55\xaa':
        found = _mbr(f, disk_size, sector0)
        if found is not None:
            return _classify(f, found)
    if whole is not None:
        return [Partition(0, 0, disk_size, 'none', fstype=whole)]
    raise ConvertRefused('no partition table (MBR or GPT) and no filesystem signature found: '
                         'not a disk image this tool understands')


def _classify(f, parts):
    for part in parts:
        if part.size >= MIN_PARTITION:
            part.fstype = filesystem_type(f, part.offset)
    return parts


def root_candidates(parts):
    """Partitions that may hold a Linux root, most likely first; refuses when there are none."""
    candidates = [p for p in parts if p.linux_root_candidate]
    if not candidates:
        found = ', '.join(p.describe() for p in parts) or 'no partitions'
        if any(p.fstype == 'crypto_LUKS' for p in parts):
            reason = 'the disk is encrypted (LUKS); it cannot be read without its key'
        elif any(p.fstype == 'LVM2_member' for p in parts):
            reason = 'LVM physical volumes are not supported'
        else:
            reason = 'no ext2/3/4, xfs or btrfs filesystem'
        raise ConvertRefused('no Linux root filesystem: %s (found %s)' % (reason, found))

    def rank(part):
        return (part.type_id not in {str(u) for u in GPT_LINUX_ROOT_TYPES}, -part.size)
    return sorted(candidates, key=rank)
