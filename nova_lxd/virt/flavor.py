"""Flavor, extra specs and image properties -> an LXD instance's config and devices, in one place.
"""
from oslo_utils import strutils

from nova import exception
from nova.i18n import _

PRODUCT_NAME = 'OpenStack Nova'
UUID_KEY = 'user.nova.uuid'

# lxd:<key> extra specs operators may set, and the LXD config key each one controls.
LXD_EXTRA_SPECS = {
    'lxd:nested_allowed': 'security.nesting',
    'lxd:privileged_allowed': 'security.privileged',
    'lxd:isolated': 'security.idmap.isolated',
}
# quota:disk_* -> (LXD disk limit key, unit suffix); bytes win over iops when both are set,
# because an LXD disk limit takes one or the other.
DISK_QUOTAS = (
    ('read', ('quota:disk_read_bytes_sec', 'B'), ('quota:disk_read_iops_sec', 'iops')),
    ('write', ('quota:disk_write_bytes_sec', 'B'), ('quota:disk_write_iops_sec', 'iops')),
    ('max', ('quota:disk_total_bytes_sec', 'B'), ('quota:disk_total_iops_sec', 'iops')),
)
# Pool drivers on which LXD enforces a root disk size.
SIZED_POOL_DRIVERS = ('btrfs', 'zfs', 'lvm', 'ceph')


def _int_spec(specs, key):
    value = specs.get(key)
    if value in (None, ''):
        return None
    try:
        number = int(value)
    except ValueError:
        raise exception.InvalidInput(reason=_('%(key)s=%(value)s is not an integer') %
                                     {'key': key, 'value': value})
    if number < 0:
        raise exception.InvalidInput(reason=_('%s must not be negative') % key)
    return number


def _bool_spec(specs, key):
    try:
        return strutils.bool_from_string(specs[key], strict=True)
    except ValueError:
        raise exception.InvalidInput(reason=_('%(key)s=%(value)s is not a boolean') %
                                     {'key': key, 'value': specs[key]})


def _cpu_allowance(specs):
    quota = _int_spec(specs, 'quota:cpu_quota')
    period = _int_spec(specs, 'quota:cpu_period') or 100000
    shares = _int_spec(specs, 'quota:cpu_shares')
    if quota:
        # microseconds of CPU per period, as libvirt's cpu_quota/cpu_period
        return '%dms/%dms' % (max(1, quota // 1000), max(1, period // 1000))
    if shares:
        # LXD turns a percentage into cpu.shares relative to 1024
        return '%d%%' % max(1, shares * 100 // 1024)
    return None


def _disk_limits(specs):
    limits = {}
    for lxd_key, (bytes_key, _b), (iops_key, _i) in DISK_QUOTAS:
        rate = _int_spec(specs, bytes_key)
        iops = _int_spec(specs, iops_key)
        if rate:
            limits['limits.' + lxd_key] = '%dB' % rate
        elif iops:
            limits['limits.' + lxd_key] = '%diops' % iops
    return limits


def nic_limits(specs):
    """quota:vif_{inbound,outbound}_average (KB/s, as libvirt) -> LXD nic ingress/egress."""
    limits = {}
    for direction, lxd_key in (('inbound', 'limits.ingress'), ('outbound', 'limits.egress')):
        average = _int_spec(specs, 'quota:vif_%s_average' % direction)
        if average:
            limits[lxd_key] = '%dkbit' % (average * 8)
    return limits


def security_config(specs):
    config = {}
    unknown = sorted(k for k in specs if k.startswith('lxd:') and k not in LXD_EXTRA_SPECS)
    if unknown:
        raise exception.InvalidInput(
            reason=_('unknown flavor extra specs %(keys)s; nova-lxd understands %(known)s') %
            {'keys': ', '.join(unknown), 'known': ', '.join(sorted(LXD_EXTRA_SPECS))})
    for spec, key in LXD_EXTRA_SPECS.items():
        if spec in specs:
            config[key] = 'true' if _bool_spec(specs, spec) else 'false'
    return config


def instance_config(instance, flavor, pool, pool_driver, nics=None, extra_devices=None):
    """The whole LXD instance definition (config + devices) for a Nova instance.

    :param pool: storage pool of the root disk; pool_driver decides whether a size is enforced.
    :param nics: {device name: nic device} from vif.nic_devices; quota:vif_* are applied here.
    """
    specs = dict(flavor.extra_specs or {})
    config = {
        'limits.cpu': str(flavor.vcpus),
        'limits.memory': '%dMiB' % flavor.memory_mb,
        'environment.product_name': PRODUCT_NAME,
        'boot.autostart': 'false',   # nova decides (resume_guests_state_on_host_boot)
        UUID_KEY: instance.uuid,
    }
    allowance = _cpu_allowance(specs)
    if allowance:
        config['limits.cpu.allowance'] = allowance
    config.update(security_config(specs))

    root = {'type': 'disk', 'path': '/', 'pool': pool}
    if flavor.root_gb and pool_driver in SIZED_POOL_DRIVERS:
        root['size'] = '%dGB' % flavor.root_gb
    root.update(_disk_limits(specs))
    devices = {'root': root}

    vif_limits = nic_limits(specs)
    for name, nic in (nics or {}).items():
        devices[name] = dict(nic, **vif_limits)
    devices.update(extra_devices or {})
    return {'name': instance.name, 'config': config, 'devices': devices}
