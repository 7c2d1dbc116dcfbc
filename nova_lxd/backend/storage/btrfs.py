"""`btrfs` on a loop file the daemon creates: images unpacked once into read-only subvolumes,
instances and snapshots are btrfs snapshots of them (O(1) in the image's size), sizes are qgroup
limits.

The file is DATA/disks/<pool>.img, sparse. It is mounted with `mount -o loop`, so the kernel sets
up the loop device with autoclear: unmounting the pool (even lazily, as a test's cleanup does)
releases the loop device once the filesystem is no longer used; nothing else has to `losetup -d`.
"""
import logging
import os
import shutil
import subprocess

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
            cmd = ['btrfs', '-q', 'subvolume', 'snapshot'] + (['-r'] if readonly else [])
            system.run(cmd + [source, dest], 'btrfs snapshot')
        else:
            self._new_volume(dest)
            system.run(['cp', '-a', '--reflink=auto', source + '/.', dest], 'copy')
            if readonly:
                self._make_readonly(dest)

    def _make_readonly(self, path):
        system.run(['btrfs', 'property', 'set', '-ts', path, 'ro', 'true'], 'btrfs property')

    def _delete_volume(self, path):
        if self._is_subvolume(path):
            # a read-only snapshot must be made writable before its content can go
            subprocess.run(['btrfs', 'property', 'set', '-ts', path, 'ro', 'false'],
                           capture_output=True)
            system.run(['btrfs', '-q', 'subvolume', 'delete', path], 'btrfs subvolume delete')
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

    def _usage(self, path):
        row = self._qgroup(path)
        if row:
            return int(row[2])        # exclusive bytes: what this volume adds
        return system.du_bytes(path)
