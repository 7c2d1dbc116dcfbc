"""limits.* config -> cgroup v1 values, applied at start (lxc.cgroup.*) and live on update."""
import logging
import os

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.instances import blkio
from nova_lxd.backend.instances.config import is_true, parse_duration_us, parse_size

LOG = logging.getLogger(__name__)
MEMSW = os.path.exists('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes')
UNLIMITED = '-1'


def host_cpus():
    with open('/sys/fs/cgroup/cpuset/cpuset.cpus') as f:
        return _expand_cpuset(f.read().strip())


def _expand_cpuset(text):
    cpus = []
    for part in filter(None, text.split(',')):
        low, _, high = part.partition('-')
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def host_memory():
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemTotal:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no MemTotal in /proc/meminfo')


def memory_bytes(value):
    if value.endswith('%'):
        return host_memory() * int(value[:-1]) // 100
    return parse_size(value)


def _cpuset(value):
    available = host_cpus()
    if value.isdigit():
        count = int(value)
        if count > len(available):
            raise BadRequest('limits.cpu=%s: only %d CPUs available' % (value, len(available)))
        return ','.join(str(c) for c in available[:count])
    wanted = _expand_cpuset(value)
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise BadRequest('limits.cpu=%s: CPU %s not available on this host'
                         % (value, ','.join(map(str, missing))))
    return value


def cgroup_items(config):
    """{cgroup v1 key: value} for every limit, including resets of unset ones (for live updates).

    Order matters for memory: the plain limit must be set before memsw can follow it.
    """
    items = {}
    # CPU
    items['cpuset.cpus'] = _cpuset(config['limits.cpu']) if 'limits.cpu' in config \
        else ','.join(map(str, host_cpus()))
    allowance = config.get('limits.cpu.allowance', '')
    shares, quota, period = 1024, -1, 100000
    if allowance.endswith('%'):
        # a percentage is a soft share under contention, as in LXD
        shares = max(2, 1024 * int(allowance[:-1]) // 100)
    elif allowance:
        quota_text, _, period_text = allowance.partition('/')
        quota, period = parse_duration_us(quota_text), parse_duration_us(period_text)
    if 'limits.cpu.priority' in config:
        shares = max(2, shares * (int(config['limits.cpu.priority']) + 1) // 11)
    items['cpu.shares'] = str(shares)
    items['cpu.cfs_period_us'] = str(period)
    items['cpu.cfs_quota_us'] = str(quota)
    # memory
    if 'limits.memory' in config:
        limit = memory_bytes(config['limits.memory'])
        if config.get('limits.memory.enforce') == 'soft':
            items['memory.soft_limit_in_bytes'] = str(limit)
            items['memory.limit_in_bytes'] = UNLIMITED
        else:
            items['memory.soft_limit_in_bytes'] = UNLIMITED
            items['memory.limit_in_bytes'] = str(limit)
            if MEMSW:
                swap = is_true(config.get('limits.memory.swap', 'true'))
                items['memory.memsw.limit_in_bytes'] = UNLIMITED if swap else str(limit)
    else:
        items['memory.soft_limit_in_bytes'] = UNLIMITED
        if MEMSW:
            items['memory.memsw.limit_in_bytes'] = UNLIMITED
        items['memory.limit_in_bytes'] = UNLIMITED
    if 'limits.memory.swap.priority' in config:
        items['memory.swappiness'] = str(50 + int(config['limits.memory.swap.priority']))
    # processes and disk priority
    items['pids.max'] = config.get('limits.processes', 'max')
    items.update(blkio.priority_items(config.get('limits.disk.priority')))
    return items


def start_config(config):
    """LXC config lines for a start; resets are left out (a fresh cgroup has them already)."""
    items = cgroup_items(config)
    defaults = {'cpu.shares': '1024', 'cpu.cfs_period_us': '100000', 'cpu.cfs_quota_us': '-1',
                'pids.max': 'max', 'blkio.bfq.weight': blkio.DEFAULT_WEIGHT,
                'blkio.weight': blkio.DEFAULT_WEIGHT}
    lines = []
    for key, value in items.items():
        if value == UNLIMITED or defaults.get(key) == value:
            continue
        if key == 'cpuset.cpus' and 'limits.cpu' not in config:
            continue
        lines.append(('lxc.cgroup.' + key, value))
    return lines


def apply_live(container, old_config, new_config):
    """Apply changed limits to a running container; refuse what the kernel refuses."""
    old, new = cgroup_items(old_config), cgroup_items(new_config)
    changed = [(k, v) for k, v in new.items() if old.get(k) != v]
    # raising memory: memsw first; lowering: the plain limit first (memsw >= limit always)
    if any(k.startswith('memory.') for k, _ in changed):
        grow = int(new.get('memory.limit_in_bytes', UNLIMITED)) == -1 or \
            int(old.get('memory.limit_in_bytes', UNLIMITED)) != -1 and \
            int(new['memory.limit_in_bytes']) > int(old['memory.limit_in_bytes'])
        order = ['memory.memsw.limit_in_bytes', 'memory.limit_in_bytes'] if grow else \
            ['memory.limit_in_bytes', 'memory.memsw.limit_in_bytes']
        changed.sort(key=lambda kv: order.index(kv[0]) if kv[0] in order else -1)
    for key, value in changed:
        if key == 'memory.memsw.limit_in_bytes' or key == 'memory.limit_in_bytes':
            value = value if value != UNLIMITED else '-1'
        if not container.set_cgroup_item(key, value):
            raise BadRequest('The kernel refused %s=%s for this instance (e.g. memory in use '
                             'above the new limit)' % (key, value))
