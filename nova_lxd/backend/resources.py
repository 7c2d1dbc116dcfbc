"""Host resources for GET /1.0/resources (LXD's shape): CPU topology and memory."""
import os
import platform


def _cpuinfo():
    """[{processor, physical id, core id, vendor_id, model name, cpu MHz}] from /proc/cpuinfo."""
    cpus, current = [], {}
    with open('/proc/cpuinfo') as f:
        for line in f:
            key, _, value = line.partition(':')
            key, value = key.strip(), value.strip()
            if not key:
                if current:
                    cpus.append(current)
                current = {}
            else:
                current[key] = value
    if current:
        cpus.append(current)
    return [c for c in cpus if 'processor' in c]


def cpu():
    sockets = {}
    for entry in _cpuinfo():
        socket_id = int(entry.get('physical id', 0))
        socket = sockets.setdefault(socket_id, {
            'socket': socket_id, 'name': entry.get('model name', ''),
            'vendor': entry.get('vendor_id', ''), 'cache': [], 'cores': {},
            'frequency': int(float(entry.get('cpu MHz', 0) or 0)),
            'frequency_minimum': 0, 'frequency_turbo': 0})
        core_id = int(entry.get('core id', entry['processor']))
        core = socket['cores'].setdefault(core_id, {'core': core_id, 'die': 0, 'threads': [],
                                                    'frequency': socket['frequency']})
        core['threads'].append({'id': int(entry['processor']), 'numa_node': 0,
                                'thread': len(core['threads']), 'online': True,
                                'isolated': False})
    result = []
    for socket in sorted(sockets.values(), key=lambda s: s['socket']):
        socket['cores'] = [socket['cores'][k] for k in sorted(socket['cores'])]
        result.append(socket)
    total = sum(len(c['threads']) for s in result for c in s['cores']) or os.cpu_count()
    return {'architecture': platform.machine(), 'sockets': result, 'total': total}


def memory():
    values = {}
    with open('/proc/meminfo') as f:
        for line in f:
            key, _, rest = line.partition(':')
            values[key] = int(rest.split()[0]) * 1024 if rest.split() else 0
    total = values.get('MemTotal', 0)
    used = total - values.get('MemAvailable', values.get('MemFree', 0))
    huge_size = values.get('Hugepagesize', 0)
    huge_total = values.get('HugePages_Total', 0) // 1024 * huge_size
    huge_used = (values.get('HugePages_Total', 0) - values.get('HugePages_Free', 0)) \
        // 1024 * huge_size
    return {'total': total, 'used': used, 'hugepages_size': huge_size,
            'hugepages_total': huge_total, 'hugepages_used': huge_used,
            'nodes': [{'numa_node': 0, 'total': total, 'used': used,
                       'hugepages_total': huge_total, 'hugepages_used': huge_used}]}


def _dmi(name):
    try:
        with open('/sys/class/dmi/id/' + name) as f:
            return f.read().strip()
    except OSError:
        return ''


def system():
    return {'uuid': _dmi('product_uuid'), 'vendor': _dmi('sys_vendor'),
            'product': _dmi('product_name'), 'family': _dmi('product_family'),
            'version': _dmi('product_version'), 'sku': _dmi('product_sku'),
            'serial': _dmi('product_serial'), 'type': 'unknown',
            'firmware': None, 'chassis': None, 'motherboard': None}


def host_resources():
    """What LXD's GET /1.0/resources reports.

    Devices this daemon does not pass through (GPU, USB, PCI, disks, NICs) are listed empty.
    """
    return {'cpu': cpu(), 'memory': memory(), 'gpu': {'cards': [], 'total': 0},
            'network': {'cards': [], 'total': 0}, 'storage': {'disks': [], 'total': 0},
            'usb': {'devices': [], 'total': 0}, 'pci': {'devices': [], 'total': 0},
            'system': system()}
