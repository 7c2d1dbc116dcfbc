"""Instance and profile config: the one table of known keys, value checks, and profile expansion."""
import re

from nova_lxd.backend.errors import BadRequest

_UNITS = {'': 1, 'B': 1, 'kB': 10**3, 'MB': 10**6, 'GB': 10**9, 'TB': 10**12, 'PB': 10**15,
          'EB': 10**18, 'KiB': 2**10, 'MiB': 2**20, 'GiB': 2**30, 'TiB': 2**40, 'PiB': 2**50,
          'EiB': 2**60, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}
_SIZE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$')
_CPUSET = re.compile(r'^\d+(-\d+)?(,\d+(-\d+)?)*$')
_DURATION = re.compile(r'^(\d+)(us|ms|s)$')
_TRUE, _FALSE = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off', '')


def parse_size(value):
    """'512MiB', '1GB', '1048576' -> bytes (LXD's units: kB=1000, KiB=1024)."""
    match = _SIZE.match(str(value))
    if not match or match.group(2) not in _UNITS:
        raise ValueError('invalid size %r' % value)
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def is_true(value):
    return str(value).lower() in _TRUE


def parse_duration_us(value):
    match = _DURATION.match(value)
    if not match:
        raise ValueError('invalid duration %r' % value)
    return int(match.group(1)) * {'us': 1, 'ms': 1000, 's': 1000000}[match.group(2)]


# -- value checks: each raises ValueError with a short reason ------------------------------------

def _any(value):
    pass


def _bool(value):
    if str(value).lower() not in _TRUE + _FALSE:
        raise ValueError('expected true or false')


def _uint(value):
    if not str(value).isdigit():
        raise ValueError('expected a whole number')


def _int_range(low, high):
    def check(value):
        _uint(value)
        if not low <= int(value) <= high:
            raise ValueError('expected a number from %d to %d' % (low, high))
    return check


def _one_of(*choices):
    def check(value):
        if value not in choices:
            raise ValueError('expected one of %s' % ', '.join(choices))
    return check


def _size(value):
    parse_size(value)


def _size_or_percent(value):
    if str(value).endswith('%'):
        _int_range(1, 100)(value[:-1])
    else:
        parse_size(value)


def _cpus(value):
    if str(value).isdigit():
        if int(value) < 1:
            raise ValueError('expected at least 1 CPU')
    elif not _CPUSET.match(str(value)):
        raise ValueError('expected a CPU count or a set like 0-1,3')


def _cpu_allowance(value):
    value = str(value)
    if value.endswith('%'):
        _int_range(1, 100)(value[:-1])
        return
    quota, _, period = value.partition('/')
    if parse_duration_us(quota) < 1000 or parse_duration_us(period) < 1000:
        raise ValueError('quota and period must be at least 1ms')


def _processes(value):
    _uint(value)
    if int(value) < 1:
        raise ValueError('expected at least 1')


def _kernel_modules(value):
    for module in filter(None, (m.strip() for m in value.split(','))):
        if not re.match(r'^[A-Za-z0-9_-]+$', module):
            raise ValueError('invalid module name %r' % module)


def _kernel_limit(value):
    for part in value.split(':'):
        if part != 'unlimited' and not part.isdigit():
            raise ValueError('expected a number, unlimited, or soft:hard')


def _raw_lxc(value):
    for line in str(value).splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        key, sep, _ = line.partition('=')
        key = key.strip()
        if not sep or not key.startswith('lxc.'):
            raise ValueError('line %r is not an lxc.* key = value line' % line)
        # these would let a client escape its rootfs or its id map
        if key.startswith(('lxc.rootfs', 'lxc.idmap', 'lxc.hook', 'lxc.logfile')):
            raise ValueError('%s may not be set through raw.lxc' % key)


# Exact keys, then prefixes (free-form namespaces). One table for instances and profiles.
KEYS = {
    'boot.autostart': _bool, 'boot.autostart.delay': _uint, 'boot.autostart.priority': _uint,
    'boot.host_shutdown_timeout': _uint, 'boot.stop.priority': _uint,
    'limits.cpu': _cpus, 'limits.cpu.allowance': _cpu_allowance,
    'limits.cpu.priority': _int_range(0, 10), 'limits.disk.priority': _int_range(0, 10),
    'limits.memory': _size_or_percent, 'limits.memory.enforce': _one_of('hard', 'soft'),
    'limits.memory.swap': _bool, 'limits.memory.swap.priority': _int_range(0, 10),
    'limits.network.priority': _int_range(0, 10), 'limits.processes': _processes,
    'security.privileged': _bool, 'security.nesting': _bool,
    'security.idmap.isolated': _bool, 'security.idmap.base': _uint,
    'security.idmap.size': _uint, 'security.protection.delete': _bool,
    'security.protection.shift': _bool, 'security.devlxd': _one_of('false'),
    'raw.lxc': _raw_lxc, 'linux.kernel_modules': _kernel_modules, 'migration.stateful': _bool,
    'snapshots.schedule': _any, 'snapshots.schedule.stopped': _bool,
    'snapshots.pattern': _any, 'snapshots.expiry': _any,
    'cloud-init.network-config': _any, 'cloud-init.user-data': _any,
    'cloud-init.vendor-data': _any, 'cluster.evacuate': _one_of('auto', 'migrate', 'stop'),
}
PREFIXES = ('user.', 'environment.', 'image.', 'volatile.', 'limits.kernel.')
# LXD keys this backend does not implement: refused by name rather than silently ignored
UNSUPPORTED = {
    'security.syscalls.': 'custom seccomp policies are not implemented (the LXC default '
                          'policy always applies)',
    'raw.seccomp': 'custom seccomp policies are not implemented',
    'raw.apparmor': 'this kernel has no AppArmor',
    'raw.idmap': 'custom id map entries are not implemented',
    'limits.network.priority': 'the net_prio cgroup is not available',
}
KERNEL_LIMITS = ('as', 'core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice',
                 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack')


def validate_config(config, where='config'):
    """Refuse unknown or malformed keys with a 400 naming the key. Returns a clean str->str map."""
    if not isinstance(config, dict):
        raise BadRequest('%s must be an object' % where)
    clean = {}
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = 'true' if value else 'false'
        if not isinstance(value, (str, int)):
            raise BadRequest('Invalid value for config key %r: must be a string' % key)
        value = str(value)
        check = KEYS.get(key)
        for prefix, reason in UNSUPPORTED.items():
            if key == prefix or (prefix.endswith('.') and key.startswith(prefix)):
                raise BadRequest('Config key %r is not supported by this backend: %s'
                                 % (key, reason))
        if check is None:
            if not key.startswith(PREFIXES) or key in PREFIXES:
                raise BadRequest('Unknown config key %r' % key)
            check = _any
            if key.startswith('limits.kernel.'):
                if key[len('limits.kernel.'):] not in KERNEL_LIMITS:
                    raise BadRequest('Unknown config key %r' % key)
                check = _kernel_limit
        try:
            check(value)
        except ValueError as exc:
            raise BadRequest('Invalid value %r for config key %r: %s' % (value, key, exc))
        clean[key] = value
    return clean


def expand(doc, profiles):
    """(expanded_config, expanded_devices): the profiles in order, then the instance's own."""
    config, devices = {}, {}
    for profile in profiles:
        config.update(profile.get('config') or {})
        devices.update(profile.get('devices') or {})
    config.update(doc.get('config') or {})
    devices.update(doc.get('devices') or {})
    # a 'none' device masks one of the same name from a profile
    devices = {name: dev for name, dev in devices.items() if dev.get('type') != 'none'}
    return config, devices


def root_disk(devices):
    """(name, device) of the root disk, or (None, None)."""
    for name, dev in sorted(devices.items()):
        if dev.get('type') == 'disk' and dev.get('path') == '/':
            return name, dev
    return None, None
