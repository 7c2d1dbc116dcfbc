"""Image tarballs for tests, built in memory: a busybox image (from Debian's busybox-static) and a
corpus of hostile or broken images, each paired with the words its 400 error must contain."""
import gzip
import io
import lzma
import os
import tarfile
import time

import yaml

BUSYBOX = '/bin/busybox'
APPLETS_BIN = ('sh', 'ls', 'cat', 'echo', 'mount', 'umount', 'sleep', 'hostname', 'ps', 'true',
               'false', 'id', 'stat', 'touch', 'mkdir', 'rm', 'ip', 'ifconfig', 'udhcpc', 'df',
               'free', 'uptime', 'top', 'grep', 'sed', 'head', 'tail', 'wc', 'env', 'test')
APPLETS_SBIN = ('init', 'halt', 'poweroff', 'reboot')
INITTAB = b'::sysinit:/bin/hostname -F /etc/hostname\n::respawn:/bin/sleep 2147483647\n' \
    b'::shutdown:/bin/true\n'


def metadata_yaml(architecture='x86_64', creation_date=None, properties=None, templates=None,
                  **extra):
    doc = {'architecture': architecture,
           'creation_date': int(time.time()) if creation_date is None else creation_date,
           'properties': {'os': 'busybox', 'description': 'busybox test image'}
           if properties is None else properties,
           'templates': {'/etc/hostname': {'when': ['create', 'copy'],
                                           'template': 'hostname.tpl'}}
           if templates is None else templates}
    doc.update(extra)
    return yaml.safe_dump(doc).encode()


class TarBuilder:
    """Members added in order; `bytes(compression)` gives the archive."""

    def __init__(self):
        self.members = []

    def _info(self, name, kind, mode, uid=0, gid=0):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
        info.mtime = 1700000000
        return info

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self.members.append((self._info(name, tarfile.DIRTYPE, mode, uid, gid), None))
        return self

    def file(self, name, data=b'', mode=0o644, uid=0, gid=0):
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size = len(data)
        self.members.append((info, data))
        return self

    def symlink(self, name, target):
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.members.append((info, None))
        return self

    def hardlink(self, name, target):
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target
        self.members.append((info, None))
        return self

    def device(self, name, char=True, major=1, minor=3):
        info = self._info(name, tarfile.CHRTYPE if char else tarfile.BLKTYPE, 0o666)
        info.devmajor, info.devminor = major, minor
        self.members.append((info, None))
        return self

    def pax(self, name, pax_headers, data=b'', kind=tarfile.REGTYPE, linkname=''):
        """A member whose pax header says more than (or else than) its ustar fields."""
        info = self._info(name, kind, 0o644)
        info.size, info.pax_headers = len(data), dict(pax_headers)
        info.linkname = linkname
        self.members.append((info, data))
        self.format = tarfile.PAX_FORMAT
        return self

    def raw(self, blocks):
        """Bytes written as they are where the next member would go (forged headers)."""
        self.members.append((None, blocks))
        return self

    format = tarfile.GNU_FORMAT
    global_pax = None

    def tar(self):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode='w', format=self.format,
                          pax_headers=self.global_pax) as archive:
            for info, data in self.members:
                if info is None:
                    out.write(data)
                    archive.offset += len(data)
                else:
                    archive.addfile(info, io.BytesIO(data) if data is not None else None)
        return out.getvalue()

    def bytes(self, compression='gzip'):
        raw = self.tar()
        if compression == 'gzip':
            return gzip.compress(raw, mtime=0)
        if compression == 'xz':
            return lzma.compress(raw)
        return raw


def busybox_rootfs(builder, prefix='rootfs/', marker=None):
    with open(BUSYBOX, 'rb') as f:
        busybox = f.read()
    for d in ('', 'bin', 'sbin', 'etc', 'dev', 'proc', 'sys', 'tmp', 'root', 'run', 'var',
              'usr', 'usr/bin'):
        builder.dir((prefix + d).rstrip('/') or '.', 0o1777 if d == 'tmp' else 0o755)
    builder.file(prefix + 'bin/busybox', busybox, 0o755)
    for applet in APPLETS_BIN:
        builder.symlink(prefix + 'bin/' + applet, 'busybox')
    for applet in APPLETS_SBIN:
        builder.symlink(prefix + 'sbin/' + applet, '../bin/busybox')
    builder.file(prefix + 'etc/inittab', INITTAB)
    builder.file(prefix + 'etc/hostname', b'busybox\n')
    builder.file(prefix + 'etc/passwd', b'root:x:0:0:root:/root:/bin/sh\n')
    builder.file(prefix + 'etc/group', b'root:x:0:\n')
    builder.file(prefix + 'etc/shadow', b'root:*:19000:0:99999:7:::\n', 0o640, gid=42)
    builder.file(prefix + 'bin/su-test', b'#!/bin/sh\n', 0o4755)     # setuid is fine
    builder.hardlink(prefix + 'etc/hostname.bak', prefix + 'etc/hostname')
    if marker is not None:
        builder.file(prefix + 'etc/marker', marker)
    return builder


def busybox_unified(compression='gzip', marker=None, **meta):
    builder = TarBuilder().file('metadata.yaml', metadata_yaml(**meta))
    builder.dir('templates').file('templates/hostname.tpl', b'{{ container.name }}\n')
    return busybox_rootfs(builder, marker=marker).bytes(compression)


def busybox_split(compression='gzip', marker=None, **meta):
    """(metadata tarball, rootfs tarball)"""
    metadata = TarBuilder().file('metadata.yaml', metadata_yaml(**meta)).dir('templates')
    metadata.file('templates/hostname.tpl', b'{{ container.name }}\n')
    rootfs = busybox_rootfs(TarBuilder(), prefix='./', marker=marker)
    return metadata.bytes(compression), rootfs.bytes(compression)


def _with_meta(**meta):
    return TarBuilder().file('metadata.yaml', metadata_yaml(templates={}, **meta)).dir('rootfs')


def _truncated(data, keep):
    return data[:keep]


def forged_header(name, typeflag=b'0', size=0, linkname=b'', magic=b'ustar  \x00',
                  size_field=None, checksum_delta=0):
    """One tar header block built by hand (what tarfile would not write), data not included."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = b'0000644\x00'
    block[108:116] = block[116:124] = b'0000000\x00'
    block[124:136] = size_field if size_field is not None else b'%011o\x00' % size
    block[136:148] = b'%011o\x00' % 1700000000
    block[156:157] = typeflag
    block[157:157 + len(linkname)] = linkname
    block[257:265] = magic
    block[148:156] = b' ' * 8
    block[148:156] = b'%06o\x00 ' % (sum(block) + checksum_delta)
    return bytes(block)


def _pad(data):
    return data + bytes(-len(data) % 512)


def _forged(*blocks):
    return _with_meta().raw(b''.join(blocks)).bytes()


def _gzip_tampered(data, at, value):
    raw = bytearray(data)
    raw[at] ^= value
    return bytes(raw)


def header_forgeries():
    """[(case id, tarball bytes, words)]: archives that tarfile and GNU tar could read apart.

    Each is refused by the header reader itself, whatever the member checks would say.
    """
    global_path = _with_meta()
    global_path.global_pax = {'path': 'rootfs/../../evil'}
    global_path.format = tarfile.PAX_FORMAT
    long_absolute = '/' + 'a' * 120 + '/evil'
    good = busybox_unified()
    return [
        ('pax-path-dotdot', _with_meta().pax('rootfs/ok', {'path': 'rootfs/../../evil'}, b'x')
         .bytes(), '".."'),
        ('pax-path-absolute', _with_meta().pax('rootfs/ok', {'path': '/etc/evil'}, b'x').bytes(),
         'absolute path'),
        ('pax-linkpath-out', _with_meta().file('rootfs/ok', b'x')
         .pax('rootfs/h', {'linkpath': '/etc/shadow'}, kind=tarfile.LNKTYPE, linkname='rootfs/ok')
         .bytes(), 'hard link'),
        ('pax-path-nul', _with_meta().pax('rootfs/ok', {'path': 'rootfs/..\x00/x'}).bytes(),
         'NUL byte'),
        ('pax-global-path', global_path.bytes(), 'pax global header'),
        # an empty pax value may unset the keyword (then the ustar name counts): readers differ
        ('pax-path-empty', _with_meta().pax('rootfs/../../evil', {'path': ''}).bytes(),
         'is empty'),
        ('gnu-longname-absolute', _with_meta().file(long_absolute, b'x').bytes(),
         'absolute path'),
        ('bad-checksum', _forged(forged_header(b'rootfs/x', checksum_delta=1)), 'checksum'),
        ('size-not-octal', _forged(forged_header(b'rootfs/x', size_field=b'0000000001_0'),
                                   bytes(1024)), 'malformed size'),
        # GNU tar reads this size as 0 and the next block as a header; '../../evil' hides there
        ('size-leading-nuls', _forged(forged_header(b'rootfs/x', size_field=b'\x00\x000000001000'),
                                      forged_header(b'rootfs/../../evil')), 'malformed size'),
        ('size-blank', _forged(forged_header(b'rootfs/x', size_field=b' ' * 12)),
         'malformed size'),
        ('size-negative-base256', _forged(forged_header(b'rootfs/x', size_field=b'\xff' * 12)),
         'negative'),
        ('sparse-member', _forged(forged_header(b'rootfs/x', b'S')), 'unsupported member type'),
        ('unknown-type', _forged(forged_header(b'rootfs/x', b'Z')), 'unsupported member type'),
        ('v7-header', _forged(forged_header(b'rootfs/x', magic=bytes(8))),
         'not a POSIX ustar/pax or GNU tar header'),
        ('symlink-with-data', _forged(forged_header(b'rootfs/s', b'2', 512, b'busybox'),
                                      _pad(forged_header(b'rootfs/../../evil'))),
         'not a regular file but has'),
        ('regular-named-as-dir', _forged(forged_header(b'rootfs/x/')), 'directory name'),
        ('two-longnames', _forged(forged_header(b'././@LongLink', b'L', 9), _pad(b'rootfs/a\x00'),
                                  forged_header(b'././@LongLink', b'L', 9), _pad(b'rootfs/b\x00'),
                                  forged_header(b'rootfs/c')), 'two extended headers'),
        ('pax-and-longname',
         _forged(forged_header(b'././@LongLink', b'L', 9), _pad(b'rootfs/a\x00'),
                 forged_header(b'pax', b'x', 20), _pad(b'20 path=rootfs/../b\n'),
                 forged_header(b'rootfs/c')), 'both a pax and a GNU long name'),
        ('longname-at-end', _forged(forged_header(b'././@LongLink', b'L', 9),
                                    _pad(b'rootfs/a\x00')), 'end of the archive'),
        ('gzip-bad-crc', _gzip_tampered(good, len(good) - 6, 0xff), 'Corrupt'),
        ('gzip-trailing-garbage', good + b'garbage after the stream' * 10, 'Corrupt'),
    ]


def hostile_unified():
    """[(case id, tarball bytes, words the error must contain)]"""
    good = busybox_unified()
    plain = busybox_unified(compression=None)
    cases = [
        ('absolute-path', _with_meta().file('/etc/evil', b'x').bytes(), 'absolute path'),
        ('dotdot', _with_meta().file('rootfs/../../evil', b'x').bytes(), '".."'),
        ('dotdot-plain', _with_meta().file('rootfs/a/../../../evil', b'x').bytes(None), '".."'),
        ('write-through-absolute-symlink',
         _with_meta().symlink('rootfs/escape', '/etc').file('rootfs/escape/evil', b'x').bytes(),
         'not a directory'),
        ('relative-symlink-out',
         _with_meta().symlink('rootfs/up', '../../../..').bytes(), 'points outside the rootfs'),
        ('write-through-relative-symlink',
         _with_meta().symlink('rootfs/tmp', 'etc').file('rootfs/tmp/x', b'x').bytes(),
         'not a directory'),
        ('hardlink-outside', _with_meta().hardlink('rootfs/shadow', '/etc/shadow').bytes(),
         'hard link'),
        ('hardlink-to-symlink',
         _with_meta().symlink('rootfs/s', '/etc/shadow').hardlink('rootfs/h', 'rootfs/s')
         .bytes(), 'hard link'),
        ('hardlink-dotdot', _with_meta().hardlink('rootfs/h', 'rootfs/../../etc/passwd').bytes(),
         '".."'),
        ('char-device', _with_meta().dir('rootfs/dev').device('rootfs/dev/null').bytes(),
         'device node'),
        ('block-device', _with_meta().dir('rootfs/dev')
         .device('rootfs/dev/sda', char=False, major=8, minor=0).bytes(), 'device node'),
        ('rootfs-is-symlink',
         TarBuilder().file('metadata.yaml', metadata_yaml(templates={}))
         .symlink('rootfs', '/etc').bytes(), 'must be a directory'),
        ('metadata-is-symlink',
         TarBuilder().symlink('metadata.yaml', '/etc/shadow').dir('rootfs').bytes(),
         'metadata.yaml must be a regular file'),
        ('template-symlink',
         _with_meta().dir('templates').symlink('templates/t', '/etc/shadow').bytes(),
         'symlink'),
        ('directory-replaced', _with_meta().dir('rootfs/etc').symlink('rootfs/etc', '/etc')
         .bytes(), 'replaces a directory'),
        ('unexpected-entry', _with_meta().file('evil.sh', b'#!/bin/sh').bytes(),
         'unexpected entry'),
        ('truncated-gzip', _truncated(good, len(good) // 2), 'truncated'),
        ('truncated-tar', _truncated(plain, len(plain) // 2 + 700), 'truncated'),
        ('not-a-tarball', os.urandom(4096), 'not a tarball'),
        ('garbage-gzip', gzip.compress(os.urandom(20000)), 'truncated'),
        ('no-metadata', TarBuilder().dir('rootfs').file('rootfs/x', b'x').bytes(),
         'no metadata.yaml'),
        ('no-rootfs', TarBuilder().file('metadata.yaml', metadata_yaml(templates={})).bytes(),
         'no rootfs'),
        ('metadata-not-yaml', TarBuilder().file('metadata.yaml', b'a: [b').dir('rootfs').bytes(),
         'not valid YAML'),
        ('metadata-not-a-map', TarBuilder().file('metadata.yaml', b'- a\n').dir('rootfs').bytes(),
         'must be a map'),
        ('no-architecture',
         TarBuilder().file('metadata.yaml', b'creation_date: 1\n').dir('rootfs').bytes(),
         'architecture is missing'),
        ('unknown-architecture', _with_meta(architecture='pdp11').bytes(), 'pdp11'),
        ('creation-date-string', _with_meta(creation_date='yesterday').bytes(), 'creation_date'),
        ('properties-list', _with_meta(properties=['a']).bytes(), 'properties must be a map'),
        ('template-file-missing',
         TarBuilder().file('metadata.yaml', metadata_yaml()).dir('rootfs').bytes(),
         'templates/hostname.tpl is missing'),
        ('template-target-dotdot',
         TarBuilder().file('metadata.yaml', metadata_yaml(templates={
             '/etc/../../x': {'when': ['create'], 'template': 't'}})).dir('rootfs')
         .dir('templates').file('templates/t', b'').bytes(), 'clean absolute path'),
        ('xz-symlink-escape',
         _with_meta().symlink('rootfs/e', '/').file('rootfs/e/x', b'x').bytes('xz'),
         'not a directory'),
    ]
    return cases + header_forgeries()


def hostile_split():
    """[(case id, metadata bytes, rootfs bytes, words the error must contain)]"""
    metadata, rootfs = busybox_split()
    return [
        ('rootfs-absolute', metadata, TarBuilder().file('/etc/evil', b'x').bytes(),
         'absolute path'),
        ('rootfs-device', metadata, TarBuilder().dir('dev').device('dev/null').bytes(),
         'device node'),
        ('rootfs-relative-escape', metadata, TarBuilder().symlink('x', '../etc').bytes(),
         'points outside the rootfs'),
        ('rootfs-truncated', metadata, rootfs[:len(rootfs) // 3], 'truncated'),
        ('metadata-with-rootfs', TarBuilder().file('metadata.yaml', metadata_yaml(templates={}))
         .dir('rootfs').bytes(), rootfs, 'unexpected entry'),
        ('squashfs-garbage', metadata, b'hsqs' + os.urandom(8192), 'squashfs'),
    ]
