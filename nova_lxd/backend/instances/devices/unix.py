"""`unix-char` / `unix-block`: a device node made on the host, bound into the container.

The node is created under DATA/devices/<instance>/ (owned by the container's uid/gid through
the id map), bind-mounted to `path`, and allowed in the devices cgroup; hot-plug uses mount
injection and a live devices.allow.
"""
import os
import stat

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.instances import mountns
from nova_lxd.backend.instances.config import is_true
from nova_lxd.backend.instances.devices import DeviceType, register
from nova_lxd.backend.instances.paths import relative_mount_target

KEYS = {'type', 'source', 'path', 'major', 'minor', 'uid', 'gid', 'mode', 'required'}


class UnixDevice(DeviceType):
    kind = None   # 'c' or 'b'

    def validate(self, name, dev):
        for key in dev:
            if key not in KEYS:
                raise BadRequest('Device %r: unknown %s key %r' % (name, self.type, key))
        if not dev.get('source') and not dev.get('path'):
            raise BadRequest('Device %r: needs a source or a path' % name)
        for key in ('major', 'minor', 'uid', 'gid'):
            if key in dev and not dev[key].isdigit():
                raise BadRequest('Device %r: %s must be a number' % (name, key))
        if 'mode' in dev:
            try:
                int(dev['mode'], 8)
            except ValueError:
                raise BadRequest('Device %r: mode must be octal' % name)
        relative_mount_target(dev.get('path') or dev['source'])
        if dev.get('source') and not os.path.isabs(dev['source']):
            raise BadRequest('Device %r: source must be an absolute path' % name)

    def _numbers(self, name, dev):
        """(major, minor) from the config or the host node; None if absent and not required."""
        if 'major' in dev and 'minor' in dev:
            return int(dev['major']), int(dev['minor'])
        source = dev.get('source') or dev['path']
        try:
            st = os.stat(source)
        except OSError:
            if is_true(dev.get('required', 'true')):
                raise BadRequest('Device %r: %s does not exist on the host' % (name, source))
            return None
        wanted = stat.S_ISCHR if self.kind == 'c' else stat.S_ISBLK
        if not wanted(st.st_mode):
            raise BadRequest('Device %r: %s is not a %s device' % (name, source, self.type))
        return os.major(st.st_rdev), os.minor(st.st_rdev)

    def _node_path(self, ctx, name):
        return ctx.daemon.config.path('devices', ctx.name, 'unix.%s' % name)

    def _make_node(self, ctx, name, dev):
        numbers = self._numbers(name, dev)
        if numbers is None:
            return None, None
        path = self._node_path(ctx, name)
        os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        mode = int(dev.get('mode', '660'), 8)
        os.mknod(path, mode | (stat.S_IFCHR if self.kind == 'c' else stat.S_IFBLK),
                 os.makedev(*numbers))
        os.chmod(path, mode)
        uid = ctx.host_uid(int(dev.get('uid', '0')))
        gid = ctx.host_uid(int(dev.get('gid', '0')), 'g')
        os.chown(path, 0 if uid is None else uid, 0 if gid is None else gid)
        return path, '%s %d:%d rwm' % (self.kind, numbers[0], numbers[1])

    def lxc_config(self, ctx, name, dev):
        node, rule = self._make_node(ctx, name, dev)
        if node is None:
            return []
        target = relative_mount_target(dev.get('path') or dev['source'])
        return [('lxc.cgroup.devices.allow', rule),
                ('lxc.mount.entry', '%s %s none bind,create=file 0 0' % (node, target))]

    def post_stop(self, ctx, name, dev):
        try:
            os.unlink(self._node_path(ctx, name))
        except FileNotFoundError:
            pass

    def hotplug(self, ctx, name, dev):
        node, rule = self._make_node(ctx, name, dev)
        if node is None:
            return
        container = ctx.daemon.instances.container(ctx.name)
        if not container.set_cgroup_item('devices.allow', rule):
            raise BadRequest('Device %r: the devices cgroup refused %s' % (name, rule))
        mountns.bind_into(ctx.init_pid, node, dev.get('path') or dev['source'],
                          owner=(ctx.host_uid(0) or 0, ctx.host_uid(0, 'g') or 0))

    def unplug(self, ctx, name, dev):
        mountns.unmount_from(ctx.init_pid, dev.get('path') or dev['source'], remove_file=True)
        numbers = None
        try:
            numbers = self._numbers(name, dev)
        except BadRequest:
            pass
        if numbers:
            ctx.daemon.instances.container(ctx.name).set_cgroup_item(
                'devices.deny', '%s %d:%d rwm' % (self.kind, numbers[0], numbers[1]))
        self.post_stop(ctx, name, dev)


@register
class UnixChar(UnixDevice):
    type = 'unix-char'
    kind = 'c'


@register
class UnixBlock(UnixDevice):
    type = 'unix-block'
    kind = 'b'
