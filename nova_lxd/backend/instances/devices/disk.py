"""`disk`: the root disk (pool, size, I/O limits), host directory / file binds, and custom
storage volumes (`pool` + `source` = the volume's name), bind-mounted like a host directory
once the storage service has their files owned for the instance's id map (storage/service.py).
"""
import os

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.instances import blkio, mountns
from nova_lxd.backend.instances.config import is_true, parse_size
from nova_lxd.backend.instances.devices import DeviceType, register
from nova_lxd.backend.instances.paths import relative_mount_target

ROOT_KEYS = {'type', 'path', 'pool', 'size', 'limits.read', 'limits.write', 'limits.max',
             'boot.priority'}
BIND_KEYS = {'type', 'path', 'source', 'readonly', 'optional', 'recursive', 'propagation',
             'limits.read', 'limits.write', 'limits.max', 'boot.priority', 'shift', 'pool',
             'required'}


def _check_limit(name, key, value):
    try:
        blkio.parse_limit(value)
    except ValueError:
        raise BadRequest('Device %r: invalid %s %r (expected bytes/s like 10MB or NNiops)'
                         % (name, key, value))


class Disk(DeviceType):
    type = 'disk'

    def validate(self, name, dev):
        path = dev.get('path')
        if not path:
            raise BadRequest('Device %r: disk devices need a path' % name)
        allowed = ROOT_KEYS if path == '/' else BIND_KEYS
        for key in dev:
            if key not in allowed:
                raise BadRequest('Device %r: unknown disk key %r' % (name, key))
        for key in ('limits.read', 'limits.write', 'limits.max'):
            if key in dev:
                _check_limit(name, key, dev[key])
        if path == '/':
            if not dev.get('pool'):
                raise BadRequest('Device %r: the root disk needs a pool' % name)
            if 'size' in dev:
                try:
                    parse_size(dev['size'])
                except ValueError:
                    raise BadRequest('Device %r: invalid size %r' % (name, dev['size']))
            return
        relative_mount_target(path)
        source = dev.get('source')
        if not source:
            raise BadRequest('Device %r: disk devices other than the root need a source' % name)
        if dev.get('pool'):
            if '/' in source:
                raise BadRequest('Device %r: source %r must be the name of a custom volume of '
                                 'pool %r' % (name, source, dev['pool']))
            return
        if not os.path.isabs(source):
            raise BadRequest('Device %r: source %r must be an absolute host path' % (name, source))

    def check_host(self, daemon, name, dev, links=True):
        if _is_volume(dev):
            try:
                daemon.storage.check_custom_volume(dev['pool'], dev['source'])
            except BadRequest as exc:
                raise BadRequest('Device %r: %s' % (name, exc))

    def pre_start(self, ctx, name, dev):
        if _is_volume(dev):
            self._attach_volume(ctx, dev)

    @staticmethod
    def _attach_volume(ctx, dev):
        return ctx.daemon.storage.attach_custom_volume(dev['pool'], dev['source'], ctx.name,
                                                       ctx.idmap)

    def _source(self, ctx, name, dev):
        """The host source, or None when it is missing and the device is optional."""
        if _is_volume(dev):
            return ctx.daemon.storage.custom_volume_path(dev['pool'], dev['source'])
        source = dev['source']
        if os.path.exists(source):
            return source
        if is_true(dev.get('optional', 'false')):
            return None
        raise BadRequest('Device %r: source %r does not exist' % (name, source))

    def lxc_config(self, ctx, name, dev):
        if dev['path'] == '/':
            return blkio.throttle_config(ctx.rootfs, dev)
        source = self._source(ctx, name, dev)
        if source is None:
            return []
        options = ['rbind' if is_true(dev.get('recursive', 'false')) else 'bind',
                   'create=dir' if os.path.isdir(source) else 'create=file']
        if is_true(dev.get('readonly', 'false')):
            options.append('ro')
        return [('lxc.mount.entry', '%s %s none %s 0 0' % (
            _escape(source), _escape(relative_mount_target(dev['path'])), ','.join(options)))]

    def hotplug(self, ctx, name, dev):
        if dev['path'] == '/':
            blkio.apply_live(ctx, dev)
            return
        source = self._attach_volume(ctx, dev) if _is_volume(dev) else \
            self._source(ctx, name, dev)
        if source is not None:
            mountns.bind_into(ctx.init_pid, source, dev['path'],
                              readonly=is_true(dev.get('readonly', 'false')),
                              owner=(ctx.host_uid(0) or 0, ctx.host_uid(0, 'g') or 0))

    def unplug(self, ctx, name, dev):
        if dev['path'] == '/':
            raise BadRequest('The root disk cannot be removed from a running instance')
        mountns.unmount_from(ctx.init_pid, dev['path'])

    def update(self, ctx, name, old, new):
        if old['path'] == '/' and new['path'] == '/':
            if old.get('pool') != new.get('pool'):
                raise BadRequest('The root disk\'s pool cannot be changed')
            blkio.apply_live(ctx, new)
            return
        super().update(ctx, name, old, new)


def _is_volume(dev):
    return dev['path'] != '/' and bool(dev.get('pool'))


def _escape(path):
    # fstab-style: a space would split the mount entry
    return path.replace('\\', '\\134').replace(' ', '\\040').replace('\t', '\\011')


register(Disk)
