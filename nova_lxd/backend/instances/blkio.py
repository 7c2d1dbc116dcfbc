"""Root-disk I/O limits and disk priority through the cgroup v1 blkio controller."""
import logging
import os
import re

from nova_lxd.backend.instances.config import parse_size

LOG = logging.getLogger(__name__)
_IOPS = re.compile(r'^(\d+)\s*iops$')


def parse_limit(value):
    """'10MB' -> ('bps', 10000000); '100iops' -> ('iops', 100)."""
    match = _IOPS.match(str(value).strip())
    if match:
        return 'iops', int(match.group(1))
    return 'bps', parse_size(value)


def _mount_source(path):
    """(source, 'maj:min') of the mount holding `path`, from /proc/self/mountinfo."""
    path = os.path.realpath(path)
    best = (-1, None, None)
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4].replace('\\040', ' ')
            sep = fields.index('-')
            if (path == mount_point or path.startswith(mount_point.rstrip('/') + '/')) \
                    and len(mount_point) >= best[0]:
                best = (len(mount_point), fields[sep + 2], fields[2])
    return best[1], best[2]


def block_device_of(path):
    """'maj:min' of the whole disk that stores `path`, or None (tmpfs, overlay on tmpfs ...)."""
    source, numbers = _mount_source(path)
    if source and source.startswith('/dev/') and os.path.exists(source):
        st = os.stat(source)
        numbers = '%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))
    if not numbers or numbers.startswith('0:'):
        return None
    sys_dir = '/sys/dev/block/%s' % numbers
    if not os.path.exists(sys_dir):
        return None
    if os.path.exists(os.path.join(sys_dir, 'partition')):  # throttling wants the whole disk
        with open(os.path.join(os.path.realpath(sys_dir), '..', 'dev')) as f:
            numbers = f.read().strip()
    return numbers


def throttle_items(rootfs, dev):
    """{cgroup key: value} for a root disk's limits.read/write/max (empty when not possible)."""
    wanted = {}
    for key, direction in (('limits.max', 'read'), ('limits.max', 'write'),
                           ('limits.read', 'read'), ('limits.write', 'write')):
        if key in dev:
            kind, amount = parse_limit(dev[key])
            wanted['blkio.throttle.%s_%s_device' % (direction, kind)] = amount
    if not wanted:
        return {}
    device = block_device_of(rootfs)
    if device is None:
        LOG.warning('No block device under %s: disk I/O limits not applied', rootfs)
        return {}
    return {key: '%s %d' % (device, amount) for key, amount in wanted.items()}


def throttle_config(rootfs, dev):
    return [('lxc.cgroup.' + key, value) for key, value in throttle_items(rootfs, dev).items()]


def apply_live(ctx, dev):
    container = ctx.daemon.instances.container(ctx.name)
    for key, value in throttle_items(ctx.rootfs, dev).items():
        if not container.set_cgroup_item(key, value):
            LOG.warning('Could not set %s=%s on %s', key, value, ctx.name)


DEFAULT_WEIGHT = '100'   # the kernel's default for a new cgroup


def priority_items(priority):
    """limits.disk.priority 0..10 -> blkio weight (LXD's scale), when a weight file exists.

    None (no priority set) gives the kernel's default weight, so removing the key resets it.
    """
    weight = DEFAULT_WEIGHT if priority is None else str(max(10, int(priority) * 100))
    # the weight files only exist below the root cgroup; BFQ shows its stats at the root
    if os.path.exists('/sys/fs/cgroup/blkio/blkio.bfq.io_service_bytes'):
        return {'blkio.bfq.weight': weight}
    if os.path.exists('/sys/fs/cgroup/blkio/blkio.weight'):
        return {'blkio.weight': weight}
    if priority is not None:
        LOG.info('blkio has no weight file here (no BFQ/CFQ): limits.disk.priority ignored')
    return {}
