"""Where an instance's volume lives: the storage service's pool of its root disk.

Until daemon.storage exists (it is built separately), a plain directory pool under
DATA/storage-pools/<pool>/ stands in with the same layout, so instances work on their own.
"""
import os
import shutil
import subprocess

from nova_lxd.backend.errors import BadRequest, NotFound


class _DirectoryPool:
    def __init__(self, pool_dir):
        self.pool_dir = pool_dir

    def instance_path(self, name):
        return os.path.join(self.pool_dir, 'containers', name)

    def create_empty_instance(self, name, size=None):
        if size:
            raise BadRequest('This pool cannot enforce a root disk size')
        path = self.instance_path(name)
        os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
        os.mkdir(path, 0o711)
        os.mkdir(os.path.join(path, 'rootfs'), 0o755)

    def create_instance_from_image(self, name, fingerprint, unpack, size=None):
        self.create_empty_instance(name, size)
        try:
            unpack(self.instance_path(name))
        except BaseException:
            self.delete_instance(name)
            raise

    def copy_instance(self, source_path, name, size=None):
        path = self.instance_path(name)
        os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
        subprocess.run(['cp', '-a', '--reflink=auto', source_path, path], check=True)

    def delete_instance(self, name):
        shutil.rmtree(self.instance_path(name), ignore_errors=True)

    def rename_instance(self, old, new):
        os.rename(self.instance_path(old), self.instance_path(new))

    def set_instance_size(self, name, size):
        if size:
            raise BadRequest('This pool cannot enforce a root disk size')

    def instance_usage(self, name):
        out = subprocess.run(['du', '-sb', self.instance_path(name)], capture_output=True,
                             text=True)
        return int(out.stdout.split()[0]) if out.returncode == 0 else 0


class Volumes:
    def __init__(self, daemon):
        self.daemon = daemon
        self._fallback = {}

    def _storage(self):
        return getattr(self.daemon, 'storage', None)

    def default_pool(self):
        storage = self._storage()
        return storage.default_pool() if storage else 'default'

    def pool(self, name):
        storage = self._storage()
        if storage is not None:
            return storage.pool(name)
        if name != 'default':
            raise NotFound('Storage pool %r not found' % name)
        if name not in self._fallback:
            pool_dir = self.daemon.config.path('storage-pools', name)
            os.makedirs(pool_dir, mode=0o711, exist_ok=True)
            self._fallback[name] = _DirectoryPool(pool_dir)
        return self._fallback[name]
