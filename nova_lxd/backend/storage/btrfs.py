"""`btrfs` on a loop file the daemon creates: images unpacked once into read-only subvolumes,
instances and snapshots are btrfs snapshots of them (O(1) in the image's size), sizes are qgroup
limits.

The file is DATA/disks/<pool>.img, sparse. It is mounted with `mount -o loop`, so the kernel sets
up the loop device with autoclear: unmounting the pool (even lazily, as a test's cleanup does)
releases the loop device once the filesystem is no longer used; nothing else has to `losetup -d`.
"""
import fcntl
import logging
import os
import shutil
import struct
import subprocess
import uuid

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.storage import system, tree

LOG = logging.getLogger(__name__)
DEFAULT_SIZE = 30 * (1 << 30)
MIN_SIZE = 256 * (1 << 20)
MOUNT_OPTIONS = 'user_subvol_rm_allowed,noatime'
CONFIG_KEYS = ('size', 'source', 'btrfs.mount_options')


class BtrfsDriver(tree.TreeDriver):
    name = 'btrfs'
    enforces_size = True
    copy_on_write = True
    caches_images = True
    # set by the service: where loop files live (DATA/disks)
    disks_dir = None

    @classmethod
    def available(cls):
        if not (shutil.which('mkfs.btrfs') and shutil.which('btrfs')):
            return False
        try:
            with open('/proc/filesystems') as f:
                if 'btrfs' in f.read():
                    return True
        except OSError:
            return False
        return subprocess.run(['modprobe', 'btrfs'], capture_output=True).returncode == 0

    @classmethod
    def check_config(cls, config, creating):
        for key in config:
            if key not in CONFIG_KEYS:
                raise BadRequest('Invalid config key %r for a btrfs pool' % key)
        clean = dict(config)
        if 'size' in clean:
            if system.parse_size(clean['size']) < MIN_SIZE:
                raise BadRequest('A btrfs pool needs a size of at least 256MiB')
        if creating and clean.get('source'):
            raise BadRequest('A btrfs pool lives on a loop file the daemon creates; '
                             'source cannot be set')
        if 'btrfs.mount_options' in clean and not all(
                opt.replace('=', '').replace('_', '').isalnum()
                for opt in str(clean['btrfs.mount_options']).split(',')):
            raise BadRequest('Invalid btrfs.mount_options')
        return clean

    @property
    def image_file(self):
        return self.config.get('source') or os.path.join(self.disks_dir,
                                                         self.pool_name + '.img')

    def _size(self, config=None):
        value = (config or self.config).get('size')
        return system.parse_size(value) if value else DEFAULT_SIZE

    def create(self):
        os.makedirs(os.path.dirname(self.image_file), mode=0o700, exist_ok=True)
        if os.path.exists(self.image_file):
            raise BadRequest('Loop file %s exists already' % self.image_file)
        try:
            with open(self.image_file, 'wb') as f:
                f.truncate(self._size())
            system.run(['mkfs.btrfs', '-q', '-L', self.pool_name[:255], self.image_file],
                       'mkfs.btrfs')
            os.makedirs(self.pool_dir, mode=0o711, exist_ok=True)
            self.mount()
        except BaseException:
            self.delete()
            raise
        self.config['source'] = self.image_file
        self.config.setdefault('size', '%dB' % self._size())

    def mount(self):
        os.makedirs(self.pool_dir, mode=0o711, exist_ok=True)
        if not system.is_mountpoint(self.pool_dir):
            options = self.config.get('btrfs.mount_options') or MOUNT_OPTIONS
            system.run(['mount', '-t', 'btrfs', '-o', 'loop,' + options, self.image_file,
                        self.pool_dir], 'mount of pool %s' % self.pool_name)
        self._ensure_layout()

    def unmount(self):
        if system.is_mountpoint(self.pool_dir):
            system.run(['umount', self.pool_dir], 'umount of pool %s' % self.pool_name)

    def delete(self):
        if system.is_mountpoint(self.pool_dir):
            subprocess.run(['umount', '-l', self.pool_dir], capture_output=True)
        shutil.rmtree(self.pool_dir, ignore_errors=True)
        try:
            os.unlink(self.image_file)
        except FileNotFoundError:
            pass

    def update(self, new_config):
        old_size, new_size = self._size(), self._size(new_config)
        if new_size < old_size:
            raise BadRequest('A btrfs pool cannot shrink (%d < %d bytes)' % (new_size, old_size))
        if new_config.get('source', self.image_file) != self.image_file:
            raise BadRequest('The source of a btrfs pool cannot be changed')
        if new_size > old_size:
            with open(self.image_file, 'r+b') as f:
                f.truncate(new_size)
            loop = system.run(['findmnt', '-n', '-o', 'SOURCE', self.pool_dir]).strip()
            system.run(['losetup', '-c', loop], 'losetup -c')
            system.run(['btrfs', 'filesystem', 'resize', 'max', self.pool_dir], 'btrfs resize')
        self.config = dict(new_config, source=self.image_file)

    # -- primitives ------------------------------------------------------------------------
    def _new_volume(self, path):
        system.run(['btrfs', '-q', 'subvolume', 'create', path], 'btrfs subvolume create')
        os.chmod(path, 0o711)

    def _is_subvolume(self, path):
        return os.path.isdir(path) and os.stat(path).st_ino == 256

    def _clone(self, source, dest, readonly=False):
        if self._is_subvolume(source):
            _snapshot_subvolume(source, dest, readonly)
        else:
            self._new_volume(dest)
            system.run(['cp', '-a', '--reflink=auto', source + '/.', dest], 'copy')
            if readonly:
                self._make_readonly(dest)

    def _make_readonly(self, path):
        system.run(['btrfs', 'property', 'set', '-ts', path, 'ro', 'true'], 'btrfs property')

    def _delete_volume(self, path):
        if self._is_subvolume(path):
            _destroy_subvolume(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _set_limit(self, path, size):
        if size is None:
            # no quota yet means no limit to remove
            subprocess.run(['btrfs', 'qgroup', 'limit', 'none', path], capture_output=True)
            return
        # quotas cost on every write, so they are only switched on when first needed
        system.run(['btrfs', 'quota', 'enable', self.pool_dir], 'btrfs quota enable')
        system.run(['btrfs', 'qgroup', 'limit', str(size), path], 'btrfs qgroup limit')

    def _qgroup(self, path):
        """[qgroupid, referenced, exclusive, max referenced, path] of a subvolume, or None."""
        out = subprocess.run(['btrfs', 'qgroup', 'show', '-rf', '--raw', path],
                             capture_output=True, text=True)
        rows = [line.split() for line in out.stdout.splitlines() if line.startswith('0/')]
        return rows[-1] if out.returncode == 0 and rows else None

    def _get_limit(self, path):
        row = self._qgroup(path)
        return int(row[3]) if row and row[3].isdigit() else None

    def _usage(self, path, walk=True):
        # sysfs and two ioctls, not `btrfs qgroup show`: GET .../state and the recursion=2
        # listing ask this for every instance, and a process per instance dominated them
        exclusive = _qgroup_exclusive(path)
        if exclusive is not None:
            return exclusive          # exclusive bytes: what this volume adds
        return system.du_bytes(path) if walk else None


_IOC_SNAP_DESTROY = 0x5000940f  # _IOW(0x94, 15, struct btrfs_ioctl_vol_args), 4096 bytes
_IOC_SNAP_CREATE_V2 = 0x50009417  # _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2), 4096 bytes
_IOC_SUBVOL_GETFLAGS = 0x80089419
_IOC_SUBVOL_SETFLAGS = 0x4008941a
_SUBVOL_RDONLY = 1 << 1
_IOC_FS_INFO = 0x8400941f       # _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args), 1024 bytes
_IOC_INO_LOOKUP = 0xd0009412    # _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args), 4096 bytes
_FIRST_FREE_OBJECTID = 256      # the root directory of every subvolume


def _qgroup_exclusive(path):
    """Exclusive bytes of the subvolume at path from /sys/fs/btrfs, or None (quotas off)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_ino != _FIRST_FREE_OBJECTID:
            return None               # a plain directory: its subvolume's count would be wrong
        info = bytearray(1024)
        fcntl.ioctl(fd, _IOC_FS_INFO, info)
        fsid = str(uuid.UUID(bytes=bytes(info[16:32])))
        qgroups = '/sys/fs/btrfs/%s/qgroups' % fsid
        if not os.path.isdir(qgroups):
            return None
        lookup = bytearray(4096)
        struct.pack_into('=QQ', lookup, 0, 0, _FIRST_FREE_OBJECTID)
        fcntl.ioctl(fd, _IOC_INO_LOOKUP, lookup)
        subvolume = struct.unpack_from('=Q', lookup)[0]
        with open('%s/0_%d/exclusive' % (qgroups, subvolume)) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _snapshot_subvolume(source, dest, readonly):
    """`btrfs subvolume snapshot [-r] source dest` as one ioctl.

    Every launch (instances are snapshots of the cached image) and every snapshot paid for a
    btrfs process, most of the time either took.
    """
    dest = os.path.abspath(dest)
    name = os.fsencode(os.path.basename(dest))
    if not name or len(name) > 255 or name in (b'.', b'..'):
        raise RuntimeError('btrfs snapshot: invalid name %r' % dest)
    src = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parent = os.open(os.path.dirname(dest), os.O_RDONLY | os.O_DIRECTORY)
        try:
            # struct btrfs_ioctl_vol_args_v2: fd, transid, flags, 32 bytes of union, name
            args = bytearray(4096)
            struct.pack_into('=qQQ', args, 0, src, 0, _SUBVOL_RDONLY if readonly else 0)
            args[56:56 + len(name)] = name
            fcntl.ioctl(parent, _IOC_SNAP_CREATE_V2, args)
        except OSError as exc:
            raise RuntimeError('btrfs snapshot %s %s failed: %s' % (source, dest, exc))
        finally:
            os.close(parent)
    finally:
        os.close(src)


def _destroy_subvolume(path):
    """`btrfs subvolume delete` as ioctls.

    Every instance delete (forced delete included) used to pay for two btrfs processes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(8)
        fcntl.ioctl(fd, _IOC_SUBVOL_GETFLAGS, flags)
        value = struct.unpack('=Q', flags)[0]
        if value & _SUBVOL_RDONLY:
            # a read-only snapshot must be made writable before its content can go
            fcntl.ioctl(fd, _IOC_SUBVOL_SETFLAGS, struct.pack('=Q', value & ~_SUBVOL_RDONLY))
    finally:
        os.close(fd)
    parent = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        args = bytearray(4096)
        name = os.fsencode(os.path.basename(os.path.abspath(path)))
        args[8:8 + len(name)] = name
        fcntl.ioctl(parent, _IOC_SNAP_DESTROY, args)
    except OSError as exc:
        raise RuntimeError('btrfs subvolume delete %s failed: %s' % (path, exc))
    finally:
        os.close(parent)
