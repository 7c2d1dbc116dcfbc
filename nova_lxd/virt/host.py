"""What the compute host offers: resources from the backend, placement inventories, /proc stats."""
import json
import os
import time
import weakref

import os_resource_classes as orc
from oslo_log import log as logging

from nova.compute import utils as compute_utils
from nova import exception
from nova.i18n import _
from nova.objects import fields as obj_fields

from nova_lxd.virt import conf

CONF = conf.CONF
LOG = logging.getLogger(__name__)
GiB = 1024 ** 3
MiB = 1024 ** 2

# API extensions the driver relies on, and what each is for.
REQUIRED_EXTENSIONS = {
    'resources': 'host CPU/memory for the resource tracker (GET /1.0/resources)',
    'resources_v2': 'storage pool space for DISK_GB (GET /1.0/storage-pools/<pool>/resources)',
    'container_exec_recording': 'exec with captured output (set_admin_password)',
    'instances': 'the /1.0/instances API',
    'console': 'console log (get_console_output)',
}


def missing_extensions(client):
    present = set(client.host_info.get('api_extensions', []))
    return {name: why for name, why in REQUIRED_EXTENSIONS.items() if name not in present}


_POOL_DRIVERS = weakref.WeakKeyDictionary()   # client -> {pool name: driver}


def pool_driver(client):
    """The configured pool's driver, read once per client and pool (a pool keeps its driver)."""
    drivers = _POOL_DRIVERS.setdefault(client, {})
    if CONF.lxd.pool not in drivers:
        drivers[CONF.lxd.pool] = client.storage_pools.get(CONF.lxd.pool).driver
    return drivers[CONF.lxd.pool]


def pool_info(client):
    """(driver, total bytes, used bytes) of the configured storage pool."""
    try:
        driver = pool_driver(client)
        space = client.api.storage_pools[CONF.lxd.pool].resources.get().json()['metadata'][
            'space']
    except Exception as exc:
        raise exception.HypervisorUnavailable(
            host=CONF.host, reason=_('storage pool %(pool)s is unavailable: %(err)s') %
            {'pool': CONF.lxd.pool, 'err': exc})
    return driver, int(space['total']), int(space['used'])


def available_resource(client, nodename):
    """The dict ComputeDriver.get_available_resource returns."""
    res = client.resources
    vcpus = int(res['cpu']['total'])
    memory_total = int(res['memory']['total']) // MiB
    memory_used = int(res['memory']['used']) // MiB
    _driver, disk_total, disk_used = pool_info(client)
    env = client.host_info['environment']
    arch = obj_fields.Architecture.canonicalize(res['cpu'].get('architecture') or
                                                os.uname().machine)
    version = env.get('server_version', '0')
    parts = [int(p) for p in version.split('.')[:3] if p.isdigit()] + [0, 0, 0]
    cpu_info = {'arch': res['cpu'].get('architecture'),
                'vendor': (res['cpu'].get('sockets') or [{}])[0].get('vendor'),
                'model': (res['cpu'].get('sockets') or [{}])[0].get('name'),
                'topology': {'sockets': len(res['cpu'].get('sockets') or [1]),
                             'cores': vcpus, 'threads': 1},
                'features': []}
    return {
        'vcpus': vcpus,
        'memory_mb': memory_total,
        'local_gb': disk_total // GiB,
        'vcpus_used': 0,
        'memory_mb_used': memory_used,
        'local_gb_used': disk_used // GiB,
        'hypervisor_type': obj_fields.HVType.LXD,
        'hypervisor_version': parts[0] * 1000000 + parts[1] * 1000 + parts[2],
        'hypervisor_hostname': nodename,
        'cpu_info': json.dumps(cpu_info),
        'disk_available_least': (disk_total - disk_used) // GiB,
        'numa_topology': None,
        # images may ask for hypervisor_type lxd or lxc (nova-lxd-image sets lxc)
        'supported_instances': [(arch, hv_type, obj_fields.VMMode.EXE)
                                for hv_type in (obj_fields.HVType.LXD, obj_fields.HVType.LXC)],
    }


def inventory(client, existing, allocation_ratios):
    """VCPU, MEMORY_MB and DISK_GB inventories with nova.conf's reserved amounts and ratios."""
    res = client.resources
    vcpus = int(res['cpu']['total'])
    memory_mb = int(res['memory']['total']) // MiB
    _driver, disk_total, _used = pool_info(client)
    disk_gb = disk_total // GiB
    return {
        orc.VCPU: {'total': vcpus, 'min_unit': 1, 'max_unit': vcpus, 'step_size': 1,
                   'allocation_ratio': allocation_ratios[orc.VCPU],
                   'reserved': CONF.reserved_host_cpus},
        orc.MEMORY_MB: {'total': memory_mb, 'min_unit': 1, 'max_unit': memory_mb,
                        'step_size': 1, 'allocation_ratio': allocation_ratios[orc.MEMORY_MB],
                        'reserved': CONF.reserved_host_memory_mb},
        orc.DISK_GB: {'total': disk_gb, 'min_unit': 1, 'max_unit': disk_gb, 'step_size': 1,
                      'allocation_ratio': allocation_ratios[orc.DISK_GB],
                      'reserved': compute_utils.convert_mb_to_ceil_gb(
                          CONF.reserved_host_disk_mb)},
    }


def uptime():
    """`uptime`-style line for this host, from /proc (nova-compute runs beside its backend)."""
    with open('/proc/uptime') as f:
        seconds = float(f.read().split()[0])
    with open('/proc/loadavg') as f:
        load = f.read().split()[:3]
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return '%s up %d days, %2d:%02d,  load average: %s' % (
        time.strftime('%H:%M:%S'), days, hours, rest // 60, ', '.join(load))


def cpu_stats():
    """Host CPU time in nanoseconds, in the shape libvirt's get_host_cpu_stats returns."""
    with open('/proc/stat') as f:
        fields = f.readline().split()[1:]
    ticks = os.sysconf('SC_CLK_TCK')
    user, nice, system, idle, iowait = (int(v) for v in fields[:5])
    to_ns = 10 ** 9 // ticks
    frequency = 0
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('cpu MHz'):
                    frequency = int(float(line.split(':')[1]))
                    break
    except OSError:
        pass
    return {'kernel': system * to_ns, 'idle': idle * to_ns, 'user': (user + nice) * to_ns,
            'iowait': iowait * to_ns, 'frequency': frequency}
