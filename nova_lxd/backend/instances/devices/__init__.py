"""Device registry: one module per device type, each a small `DeviceType` subclass.

Types and their modules (imported lazily, so a missing module only disables its type):
    disk        devices/disk.py     root disk (pool, size, limits.read/write), host dir/block binds
    unix-char   devices/unix.py     character device nodes
    unix-block  devices/unix.py     block device nodes
    none        devices/none.py     masks a device inherited from a profile
    nic         devices/nic.py      (network engineer) bridged/macvlan/p2p/physical ... NICs

The interface (all methods receive the device's name and its config dict, as in the API):

    class MyType(DeviceType):
        type = 'unix-char'
        def validate(self, name, dev)            raise BadRequest naming the bad key; no effects
        def check_host(self, daemon, name, dev, links=True)
                                                 raise BadRequest naming what the device refers
                                                 to and this host lacks (pool, volume, network;
                                                 host interfaces only if links); at create,
                                                 update and profile change
        def lxc_config(self, ctx, name, dev)     -> [(lxc_key, value), ...] written into the
                                                 container's LXC config at start
        def pre_start(self, ctx, name, dev)      host-side setup right before the start (optional)
        def post_start(self, ctx, name, dev)     host-side setup once it runs (optional; an
                                                 error is logged, the start stands)
        def pre_kill(self, ctx, name, dev)       before a forced stop kills the container: start
                                                 clean-up that need not wait for it (optional)
        def post_stop(self, ctx, name, dev)      host-side cleanup after the container stopped
        def hotplug(self, ctx, name, dev)        add to a RUNNING container (ctx.init_pid set);
                                                 raise BadRequest if impossible live
        def unplug(self, ctx, name, dev)         remove from a RUNNING container
        def update(self, ctx, name, old, new)    changed live; default: unplug(old) + hotplug(new)
        def replaces(self, old, new)             new is another device under the old one's name:
                                                 the old one is deleted, not updated (a NIC on
                                                 another network); default False
        def deleted(self, daemon, name, dev, volatile)
                                                 the device leaves for good (its instance is
                                                 deleted, or it is removed from it): give back
                                                 what outlives stops (a NIC's DHCP lease);
                                                 volatile: the instance's volatile.* keys
        def state(self, ctx, name, dev)          optional extra state (NICs: None here)

    register(MyType) at the bottom of the module makes the type known.

`ctx` is a DeviceContext (below): everything a device may need about its instance, without
reaching into the instances service. Devices that need stable generated values (MAC addresses,
host-side interface names) keep them in `ctx.volatile` under 'volatile.<device>.<key>'; the
instances service persists that dict after start/hot-plug. LXC NIC indexes come from
ctx.next_net_index() so several NIC devices never collide.
"""
import importlib
import logging

from nova_lxd.backend.errors import BadRequest

LOG = logging.getLogger(__name__)

MODULES = {'disk': 'disk', 'unix-char': 'unix', 'unix-block': 'unix', 'none': 'none',
           'nic': 'nic', 'infiniband': None, 'gpu': None, 'usb': None, 'proxy': None,
           'tpm': None, 'pci': None}
_REGISTRY = {}


class DeviceContext:
    """What a device handler knows about the instance it belongs to."""

    def __init__(self, daemon, name, config, rootfs, idmap, privileged, init_pid=None,
                 volatile=None):
        self.daemon = daemon            # the Daemon (daemon.networks, daemon.storage, ...)
        self.name = name                # instance name
        self.config = config            # the instance's expanded config (read only)
        self.rootfs = rootfs            # host path of the rootfs
        self.idmap = idmap              # [(kind 'u'|'g', ns_id, host_id, count)], [] if privileged
        self.privileged = privileged
        self.init_pid = init_pid        # host pid of the container's init, None when stopped
        self.volatile = {} if volatile is None else volatile  # volatile.* keys, persisted
        self._net_index = 0

    def next_net_index(self):
        index = self._net_index
        self._net_index += 1
        return index

    def host_uid(self, ns_uid, kind='u'):
        """The host id a container id maps to (identity when privileged)."""
        for k, ns, host, count in self.idmap:
            if k == kind and ns <= ns_uid < ns + count:
                return host + ns_uid - ns
        return ns_uid if not self.idmap else None


class DeviceType:
    type = None

    def validate(self, name, dev):
        pass

    def check_host(self, daemon, name, dev, links=True):
        pass

    def lxc_config(self, ctx, name, dev):
        return []

    def pre_start(self, ctx, name, dev):
        pass

    def post_start(self, ctx, name, dev):
        pass

    def pre_kill(self, ctx, name, dev):
        pass

    def post_stop(self, ctx, name, dev):
        pass

    def hotplug(self, ctx, name, dev):
        raise BadRequest('Device %r (type %s) cannot be added to a running instance'
                         % (name, self.type))

    def unplug(self, ctx, name, dev):
        raise BadRequest('Device %r (type %s) cannot be removed from a running instance'
                         % (name, self.type))

    def update(self, ctx, name, old, new):
        self.unplug(ctx, name, old)
        self.hotplug(ctx, name, new)

    def replaces(self, old, new):
        return False

    def deleted(self, daemon, name, dev, volatile):
        pass

    def state(self, ctx, name, dev):
        return None


def register(cls):
    _REGISTRY[cls.type] = cls()
    return cls


def get(dev_type):
    """The handler of a device type, or a 400 naming it."""
    if dev_type not in _REGISTRY:
        module = MODULES.get(dev_type)
        if module:
            try:
                importlib.import_module('%s.%s' % (__name__, module))
            except ImportError:
                LOG.debug('Device module %s not available', module, exc_info=True)
    try:
        return _REGISTRY[dev_type]
    except KeyError:
        raise BadRequest('Unsupported device type %r' % dev_type)


def validate_devices(devices):
    """Validate a devices map as sent by a client (instance or profile)."""
    if not isinstance(devices, dict):
        raise BadRequest('devices must be an object')
    for name, dev in devices.items():
        if not isinstance(dev, dict):
            raise BadRequest('Device %r must be an object' % name)
        for key, value in dev.items():
            if not isinstance(value, str):
                raise BadRequest('Device %r: value of %r must be a string' % (name, key))
        if 'type' not in dev:
            raise BadRequest('Device %r has no type' % name)
        get(dev['type']).validate(name, dev)


def check_on_host(daemon, devices, links=True):
    """Refuse devices naming what this host lacks (validated ones; no effects).

    At create, update and profile change, not at the next start. links=False for an instance
    arriving by migration: host interfaces (a bridge parent) are plugged on a target after the
    instance arrived (Nova's order), so only what the API manages is checked then; LXD checks
    parents only at start.
    """
    for name, dev in sorted(devices.items()):
        get(dev['type']).check_host(daemon, name, dev, links)
