"""Turn a raw or qcow2 disk image into an LXD unified tarball by extracting its Linux root.

Library entry point for the Nova driver: disk_to_unified(path, out_path, properties).
Nothing from the image is executed: qcow2 is read by qemu-img, partition tables and
signatures by nova_lxd.image.disk, the filesystem by the kernel through a read-only loop device
mounted ro,nosuid,nodev,noexec, and the files are copied out by the host's tar. Every loop
device, mount and temporary file is released on success, error, Ctrl-C and SIGTERM.
"""
import contextlib
import json
import os
import re
import stat
import struct
import subprocess
import tempfile

from nova_lxd.image import disk
from nova_lxd.image import formats
from nova_lxd.image import metadata
from nova_lxd.image import pack
from nova_lxd.image import progress as progress_mod
from nova_lxd.image import sysutil
from nova_lxd.image.errors import ConvertRefused

# mount options: read-only and inert, and no journal/log replay (the loop device is read-only)
MOUNT_OPTIONS = ['ro', 'nosuid', 'nodev', 'noexec']
FS_MOUNT_OPTIONS = {'ext4': ['noload'], 'xfs': ['norecovery', 'nouuid'],
                    'btrfs': ['rescue=nologreplay']}
# btrfs distributions put the root in a subvolume (Ubuntu '@', Fedora 'root')
BTRFS_ROOT_SUBVOLUMES = ('@', 'root', '@rootfs', 'rootfs')
ELF_PROBES = ('bin/sh', 'usr/bin/sh', 'sbin/init', 'usr/bin/env', 'bin/ls')

FSTAB_NOTE = ('# nova-lxd-image convert: a container gets its filesystems from its devices.\n'
              '# The disk image\'s original table is in /etc/fstab.disk-image.\n')


def sniff_format(path):
    """'qcow2', 'raw', or refuse a format we do not convert."""
    with open(path, 'rb') as f:
        head = f.read(8)
    if head[:4] == b'QFI\xfb':
        return 'qcow2'
    for magic, name in ((b'KDMV', 'VMDK'), (b'vhdxfile', 'VHDX'), (b'conectix', 'VHD'),
                        (b'\x1f\x8b', 'gzip'), (b'\xfd7zXZ\x00', 'xz'), (b'BZh', 'bzip2'),
                        (b'\x28\xb5\x2f\xfd', 'zstd')):
        if head.startswith(magic):
            hint = ('(a compressed file: is it already a unified tarball?)'
                    if name in ('gzip', 'xz', 'bzip2', 'zstd')
                    else '(convert it to raw or qcow2 with qemu-img first)')
            raise ConvertRefused('%s is %s data, not a raw or qcow2 disk image %s'
                                 % (path, name, hint))
    return 'raw'


def _qcow2_to_raw(path, raw_path, progress):
    """qemu-img convert a (self-contained, unencrypted) qcow2 into raw_path."""
    info = subprocess.run(['qemu-img', 'info', '--output=json', '-f', 'qcow2', path],
                          capture_output=True, text=True)
    if info.returncode != 0:
        raise ConvertRefused('not a readable qcow2 image: %s' % info.stderr.strip())
    details = json.loads(info.stdout)
    # a backing or external data file could point anywhere on this host: never follow it
    if details.get('backing-filename') or details.get('full-backing-filename'):
        raise ConvertRefused('qcow2 images with a backing file are not accepted (%s)'
                             % details.get('backing-filename'))
    specific = details.get('format-specific', {}).get('data', {})
    if specific.get('data-file'):
        raise ConvertRefused('qcow2 images with an external data file are not accepted')
    if details.get('encrypted') or specific.get('encrypt'):
        raise ConvertRefused('the qcow2 image is encrypted; it cannot be read without its key')
    progress.message('qemu-img: qcow2 -> raw (%d MiB virtual)'
                     % (details.get('virtual-size', 0) >> 20))
    proc = subprocess.Popen(['qemu-img', 'convert', '-p', '-f', 'qcow2', '-O', 'raw',
                             path, raw_path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for piece in _split_cr(proc.stdout):
            match = re.search(r'\(([\d.]+)/100%\)', piece)
            if match:
                progress.percent(float(match.group(1)))
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise ConvertRefused('qemu-img could not read the qcow2 image: %s' % err.strip())
        progress.reset()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _split_cr(stream):
    buf = ''
    for chunk in iter(lambda: stream.read(64), ''):
        buf += chunk
        *pieces, buf = re.split(r'[\r\n]', buf)
        yield from pieces


def resolve_in_root(root, path, _depth=0):
    """Host path of `path` as seen inside root, following symlinks without leaving root.

    Returns None when a component is missing or the chain is too long.
    """
    parts = [p for p in path.split('/') if p and p != '.']
    current = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == '..':
            if current:
                current.pop()
            continue
        host = os.path.join(root, *current, part)
        try:
            st = os.lstat(host)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(host)
            if target.startswith('/'):
                current = []
            parts = [p for p in target.split('/') if p and p != '.'] + parts
            continue
        current.append(part)
    return os.path.join(root, *current)


def _is_dir_in(root, path):
    host = resolve_in_root(root, path)
    return host is not None and os.path.isdir(host)


def read_os_release(root):
    for candidate in ('etc/os-release', 'usr/lib/os-release'):
        host = resolve_in_root(root, candidate)
        if host and os.path.isfile(host):
            with open(host, errors='replace') as f:
                return metadata.parse_os_release(f.read(65536))
    return None


def elf_architecture(root):
    """LXD architecture of the root's binaries, from an ELF header (read, never executed)."""
    for probe in ELF_PROBES:
        host = resolve_in_root(root, probe)
        if not host or not os.path.isfile(host):
            continue
        with open(host, 'rb') as f:
            head = f.read(20)
        if len(head) < 20 or head[:4] != b'\x7fELF':
            continue
        bits = {1: 32, 2: 64}.get(head[4])
        order = '<' if head[5] == 1 else '>'
        machine = struct.unpack_from(order + 'H', head, 18)[0]
        arch = formats.ELF_MACHINE_TO_LXD_ARCH.get((machine, bits))
        if arch:
            return arch
    return None


def init_properties(root):
    """halt/reboot signals for the image's init, recognised by where /sbin/init leads."""
    init = resolve_in_root(root, 'sbin/init')
    if not init:
        return {}
    name = os.path.basename(init)
    if name == 'systemd':
        return {formats.PROP_HALT_SIGNAL: 'SIGRTMIN+3', formats.PROP_REBOOT_SIGNAL: 'SIGINT',
                formats.PROP_INIT_CMD: '/sbin/init'}
    if name == 'busybox':
        return {formats.PROP_HALT_SIGNAL: 'SIGUSR1', formats.PROP_REBOOT_SIGNAL: 'SIGTERM',
                formats.PROP_INIT_CMD: '/sbin/init'}
    return {formats.PROP_INIT_CMD: '/sbin/init'}


def find_root(mountpoint, fstype):
    """Relative directory of a Linux root in the mounted filesystem ('' for its top), or None.

    A root has /etc and /usr or /bin.
    """
    subdirs = [''] + (list(BTRFS_ROOT_SUBVOLUMES) if fstype == 'btrfs' else [])
    for sub in subdirs:
        top = os.path.join(mountpoint, sub)
        if sub and (os.path.islink(top) or not os.path.isdir(top)):
            continue
        if _is_dir_in(top, 'etc') and (_is_dir_in(top, 'usr') or _is_dir_in(top, 'bin')):
            return sub
    return None


@contextlib.contextmanager
def _mounted_partition(raw, part, mountpoint):
    """part of the raw disk, read-only through a loop device, mounted inert at mountpoint."""
    fstype = disk.LINUX_ROOT_FILESYSTEMS[part.fstype]
    options = MOUNT_OPTIONS + FS_MOUNT_OPTIONS.get(fstype, [])
    with sysutil.loop_device(raw, part.offset, part.size) as dev:
        with sysutil.mounted(dev, mountpoint, fstype, options):
            yield mountpoint


def _inspect(raw, part, mountpoint):
    """Mount part and look for a root; returns (subdir, os_release) or None."""
    with _mounted_partition(raw, part, mountpoint):
        sub = find_root(mountpoint, part.fstype)
        if sub is None:
            return None
        return sub, read_os_release(os.path.join(mountpoint, sub))


def _extract(raw, part, sub, mountpoint, out_path, props, compression, progress):
    with _mounted_partition(raw, part, mountpoint):
        root = os.path.join(mountpoint, sub)
        architecture = props.get('architecture') or elf_architecture(root)
        if not architecture:
            raise ConvertRefused('cannot tell the architecture of %s (no ELF /bin/sh or '
                                 '/sbin/init); pass the architecture property'
                                 % part.describe())
        props['architecture'] = architecture
        for key, value in init_properties(root).items():
            props.setdefault(key, value)
        meta = metadata.make_metadata(architecture, props)
        st = os.statvfs(mountpoint)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        progress.message('extracting the root filesystem of %s' % part.describe())
        return pack.pack_image(root, meta, out_path, compression, progress, estimate=used,
                               fstab_override=FSTAB_NOTE)


def _choose_root(raw, candidates, mountpoint):
    """(partition, subdir, os_release) of the best root among the candidates.

    The first with an os-release wins, else the first root at all; refuses when there is none.
    """
    chosen, problems = None, []
    for part in candidates:
        try:
            found = _inspect(raw, part, mountpoint)
        except ConvertRefused:
            raise
        except Exception as exc:   # one unreadable filesystem must not hide another
            problems.append('%s: %s' % (part.describe(), exc))
            continue
        if found is None:
            problems.append('%s: no /etc with /usr or /bin' % part.describe())
        elif found[1]:
            return (part,) + found
        elif chosen is None:
            chosen = (part,) + found
    if chosen is None:
        raise ConvertRefused('no Linux root filesystem found (%s)' % '; '.join(problems))
    return chosen


def disk_to_unified(path, out_path, properties=None, compression='gz', progress=None,
                    workdir=None):
    """Convert the raw or qcow2 disk image at path into a unified tarball at out_path.

    properties: extra/overriding metadata.yaml properties (e.g. halt_signal, architecture).
    workdir: where the temporary raw copy of a qcow2 and the mount point go (default: next to
    out_path). Returns the fingerprint (sha256 of out_path). Raises ConvertRefused with the
    reason when the image cannot be a container.
    """
    progress = progress or progress_mod.silent()
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ConvertRefused('%s is not a regular file' % path)
    pack.suffix(compression)
    fmt = sniff_format(path)
    workdir = workdir or os.path.dirname(os.path.abspath(out_path))
    tmp = tempfile.mkdtemp(prefix='.nova-lxd-convert-', dir=workdir)
    try:
        raw = path
        if fmt == 'qcow2':
            raw = os.path.join(tmp, 'disk.raw')
            _qcow2_to_raw(path, raw, progress)
        size = os.path.getsize(raw)
        with open(raw, 'rb') as f:
            parts = disk.partitions(f, size)
        mountpoint = os.path.join(tmp, 'mnt')
        part, sub, os_release = _choose_root(raw, disk.root_candidates(parts), mountpoint)
        props = metadata.properties_from_os_release(os_release or {'ID': 'linux'})
        props['description'] = '%s (converted from %s)' % (props['description'],
                                                           os.path.basename(path))
        props.update(properties or {})
        return _extract(raw, part, sub, mountpoint, out_path, props, compression, progress)
    finally:
        sysutil.remove_tree(tmp)
