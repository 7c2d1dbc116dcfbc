"""Build real disk images for the convert tests: a directory -> mkfs.ext4 -d -> a partition
table written by sfdisk -> qemu-img convert -O qcow2. And find what a run may have left behind."""
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

MIB = 1 << 20


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def extract_rootfs(tarball, dest):
    """The rootfs/ of a unified tarball into dest (as root: owners and modes kept)."""
    os.makedirs(dest)
    run('tar', '-xzf', tarball, '-C', dest, '--numeric-owner', '--strip-components=1',
        'rootfs')
    return dest


def make_ext4(path, source_dir, size_mib=32, label='root'):
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)
    run('mkfs.ext4', '-q', '-F', '-L', label, '-d', source_dir, path)
    return path


def make_btrfs(path, source_dir, size_mib=128):
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)
    run('mkfs.btrfs', '-q', '-f', '--rootdir', source_dir, path)
    return path


def make_xfs(path, source_dir, size_mib=320):
    """mkfs.xfs has no --rootdir here: fill it through a short-lived loop mount."""
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)
    run('mkfs.xfs', '-q', '-f', path)
    mountpoint = path + '.mnt'
    os.mkdir(mountpoint)
    try:
        run('mount', '-o', 'loop', path, mountpoint)
        try:
            run('cp', '-a', source_dir + '/.', mountpoint)
        finally:
            run('umount', '-d', mountpoint)
    finally:
        os.rmdir(mountpoint)
    return path


def make_disk(path, filesystems, table='gpt'):
    """A raw disk holding each filesystem image in its own partition, in order.

    filesystems: list of (fs_image_path or None for an empty partition, size_mib).
    table: 'gpt', 'mbr', or 'mbr-logical' (an extended partition whose logical partitions hold
    the filesystems, after a small primary one).
    """
    start = 1                                  # MiB, as partitioning tools align
    lines, placements, end = [], [], 0
    if table == 'mbr-logical':
        total = sum(size for _, size in filesystems) + len(filesystems) + 4
        lines.append('start=%dMiB, size=2MiB, type=83' % start)
        lines.append('start=%dMiB, size=%dMiB, type=5' % (start + 2, total))
        end = start + 2 + total
        start += 3                             # logical partitions begin after their EBR
    for fs, size in filesystems:
        kind = '0FC63DAF-8483-4772-8E79-3D69D8477DE4' if table == 'gpt' else '83'
        lines.append('start=%dMiB, size=%dMiB, type=%s' % (start, size, kind))
        placements.append((fs, start))
        start += size + (1 if table == 'mbr-logical' else 0)
    with open(path, 'wb') as f:
        f.truncate((max(start, end) + 2) * MIB)
    label = 'gpt' if table == 'gpt' else 'dos'
    run('sfdisk', '-q', '--wipe', 'never', path,
        input='label: %s\n%s\n' % (label, '\n'.join(lines)))
    for fs, offset in placements:
        if fs:
            run('dd', 'if=%s' % fs, 'of=%s' % path, 'bs=1M', 'seek=%d' % offset,
                'conv=notrunc,sparse', 'status=none')
    return path


def to_qcow2(raw, qcow2, backing=None):
    if backing:
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', backing, qcow2)
    else:
        run('qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, qcow2)
    return qcow2


def leftovers(*dirs):
    """Loop devices backed by files under dirs, mounts under dirs, convert temp dirs in dirs."""
    dirs = [os.path.realpath(d) for d in dirs]
    found = []
    loops = json.loads(run('losetup', '--list', '--json').stdout or '{}').get('loopdevices', [])
    for loop in loops:
        backing = loop.get('back-file') or ''
        if any(backing.startswith(d + '/') for d in dirs):
            found.append('loop %s -> %s' % (loop['name'], backing))
    with open('/proc/self/mounts') as f:
        for line in f:
            point = line.split()[1]
            if any(point == d or point.startswith(d + '/') for d in dirs):
                found.append('mount %s' % point)
    for d in dirs:
        for name in os.listdir(d):
            if name.startswith(('.nova-lxd-', )) or name.endswith('.partial'):
                found.append('temp %s' % os.path.join(d, name))
    return found


def rootfs_members(tarball):
    with tarfile.open(tarball) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(tarball, name):
    with tarfile.open(tarball) as tar:
        return tar.extractfile(name).read()


def copytree(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


# -- cached disk images of the busybox rootfs, for the driver's tests ----------------------------
DISK_MARKER = ('/etc/nova-lxd-disk-marker', 'from a partitioned disk image\n')


def _build_disks(out_dir):
    """The three disks of cached_disks(), built from the busybox image in a scratch dir."""
    from tests import images
    scratch = tempfile.mkdtemp(prefix='.disks-', dir=out_dir)
    try:
        root = extract_rootfs(images.busybox_image(), os.path.join(scratch, 'root'))
        with open(os.path.join(root, DISK_MARKER[0].lstrip('/')), 'w') as f:
            f.write(DISK_MARKER[1])
        fs = make_ext4(os.path.join(scratch, 'root.ext4'), root, 32)
        # GPT with an empty partition first (where an EFI system partition would be)
        gpt = make_disk(os.path.join(scratch, 'gpt.raw'), [(None, 4), (fs, 32)], 'gpt')
        to_qcow2(gpt, os.path.join(scratch, 'gpt.qcow2'))
        make_disk(os.path.join(scratch, 'mbr.raw'), [(fs, 32)], 'mbr')
        data = os.path.join(scratch, 'data')
        os.makedirs(os.path.join(data, 'photos'))
        with open(os.path.join(data, 'photos', 'README'), 'w') as f:
            f.write('no operating system here\n')
        nofs = make_ext4(os.path.join(scratch, 'data.ext4'), data, 8, label='data')
        make_disk(os.path.join(scratch, 'noroot.raw'), [(nofs, 8)], 'gpt')
        for name, kind in CACHED_DISKS.items():
            os.rename(os.path.join(scratch, kind), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


CACHED_DISKS = {'busybox-disk-v1-gpt.qcow2': 'gpt.qcow2', 'busybox-disk-v1-mbr.raw': 'mbr.raw',
                'busybox-disk-v1-noroot.raw': 'noroot.raw'}


def cached_disks():
    """Paths of the cached busybox disks, by kind.

    'qcow2': the busybox rootfs + DISK_MARKER on GPT, as qcow2; 'raw': the same on MBR, raw;
    'noroot': a raw GPT disk whose only filesystem holds data, no Linux root.
    Built once per machine into tests/images.py's cache (under a lock: xdist workers).
    """
    import fcntl
    from tests import images
    os.makedirs(images.CACHE_DIR, exist_ok=True)
    paths = {name: os.path.join(images.CACHE_DIR, name) for name in CACHED_DISKS}
    if not all(os.path.exists(p) for p in paths.values()):
        with open(os.path.join(images.CACHE_DIR, '.busybox-disks.lock'), 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not all(os.path.exists(p) for p in paths.values()):
                _build_disks(images.CACHE_DIR)
    names = dict(zip(('qcow2', 'raw', 'noroot'), CACHED_DISKS))
    return {kind: paths[name] for kind, name in names.items()}
