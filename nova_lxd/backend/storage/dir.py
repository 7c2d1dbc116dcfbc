"""`dir`: plain directories; instances are unpacked from the image each time, copies are `cp -a`."""
import os
import shutil

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.storage import system, tree

CONFIG_KEYS = ('source',)


class DirDriver(tree.TreeDriver):
    name = 'dir'

    @classmethod
    def available(cls):
        return True

    @classmethod
    def check_config(cls, config, creating):
        for key in config:
            if key not in CONFIG_KEYS:
                raise BadRequest('Invalid config key %r for a dir pool' % key)
        source = config.get('source')
        if source is not None and (not isinstance(source, str) or not os.path.isabs(source)):
            raise BadRequest('source must be an absolute path')
        return dict(config)

    def update(self, new_config):
        if new_config.get('source', self.config.get('source')) != self.config.get('source'):
            raise BadRequest('The source of a dir pool cannot be changed')
        self.config = dict(new_config)

    def create(self):
        if os.path.isdir(self.pool_dir) and os.listdir(self.pool_dir):
            raise BadRequest('The source directory %s is not empty' % self.pool_dir)
        os.makedirs(self.pool_dir, mode=0o711, exist_ok=True)
        self.config['source'] = self.pool_dir
        self._ensure_layout()

    def mount(self):
        if not os.path.isdir(self.pool_dir):
            raise RuntimeError('dir pool %s: %s is missing' % (self.pool_name, self.pool_dir))
        self._ensure_layout()

    def delete(self):
        shutil.rmtree(self.pool_dir, ignore_errors=True)

    def _new_volume(self, path):
        os.mkdir(path, 0o711)

    def _clone(self, source, dest, readonly=False):
        system.copy_tree(source, dest)

    def _delete_volume(self, path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _set_limit(self, path, size):
        if size is not None:
            raise BadRequest('The dir storage driver cannot enforce a disk size; '
                             'use a btrfs pool')
