"""Runtime state of a running container: cgroup counters, processes, network interfaces."""
import ctypes
import logging
import os
import socket

from pyroute2 import IPRoute

LOG = logging.getLogger(__name__)
# its per-message debug output would drown the daemon's log
logging.getLogger('pyroute2').setLevel(logging.INFO)
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def cgroup_paths(pid):
    """{controller: host path} of a process's cgroups (v1)."""
    paths = {}
    try:
        with open('/proc/%d/cgroup' % pid) as f:
            for line in f:
                _, controllers, path = line.rstrip('\n').split(':', 2)
                # the container's own cgroup, not a child its init created (init.scope)
                parts = path.split('/')
                for i, part in enumerate(parts):
                    if part.startswith('lxc.payload.'):
                        path = '/'.join(parts[:i + 1])
                        break
                for controller in controllers.split(','):
                    if controller:
                        paths[controller] = '/sys/fs/cgroup/%s%s' % (
                            controller.replace('name=', ''), path)
    except OSError:
        pass
    return paths


def _read_int(path, default=0):
    try:
        with open(path) as f:
            value = f.read().strip()
        return int(value) if value.lstrip('-').isdigit() else default
    except OSError:
        return default


def _memory_stat(path):
    values = {}
    try:
        with open(os.path.join(path, 'memory.stat')) as f:
            for line in f:
                key, value = line.split()
                values[key] = int(value)
    except OSError:
        pass
    return values


def cgroup_state(pid):
    paths = cgroup_paths(pid)
    memory = paths.get('memory', '')
    usage = _read_int(os.path.join(memory, 'memory.usage_in_bytes'))
    peak = _read_int(os.path.join(memory, 'memory.max_usage_in_bytes'))
    swap_usage = max(0, _read_int(os.path.join(memory, 'memory.memsw.usage_in_bytes')) - usage)
    swap_peak = max(0, _read_int(os.path.join(memory, 'memory.memsw.max_usage_in_bytes')) - peak)
    processes = _read_int(os.path.join(paths.get('pids', ''), 'pids.current'), -1)
    return {
        'cpu': {'usage': _read_int(os.path.join(paths.get('cpuacct', ''), 'cpuacct.usage'))},
        'memory': {'usage': usage, 'usage_peak': peak, 'swap_usage': swap_usage,
                   'swap_usage_peak': swap_peak,
                   'total': _read_int(os.path.join(memory, 'memory.limit_in_bytes'))},
        'processes': processes,
    }


def _setns(fd):
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _netlink_in(pid):
    """An IPRoute socket created inside the netns of `pid` (this thread switches back at once)."""
    own = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
    target = os.open('/proc/%d/ns/net' % pid, os.O_RDONLY)
    try:
        _setns(target)
        try:
            return IPRoute()
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


def network_state(pid, host_names=None):
    """LXD's `network` map for the container whose init is `pid` (blocking: use a worker)."""
    host_names = host_names or {}
    result = {}
    try:
        ipr = _netlink_in(pid)
    except OSError as exc:
        LOG.debug('No netns for pid %s: %s', pid, exc)
        return result
    try:
        names = {}
        for link in ipr.get_links():
            name = link.get_attr('IFLA_IFNAME')
            names[link['index']] = name
            stats = link.get_attr('IFLA_STATS64') or {}
            result[name] = {
                'addresses': [], 'hwaddr': link.get_attr('IFLA_ADDRESS') or '',
                'host_name': host_names.get(name, ''), 'mtu': link.get_attr('IFLA_MTU'),
                'state': 'up' if link['flags'] & 1 else 'down',
                'type': 'loopback' if link['flags'] & 8 else 'broadcast',
                'counters': {'bytes_received': stats.get('rx_bytes', 0),
                             'bytes_sent': stats.get('tx_bytes', 0),
                             'packets_received': stats.get('rx_packets', 0),
                             'packets_sent': stats.get('tx_packets', 0),
                             'errors_received': stats.get('rx_errors', 0),
                             'errors_sent': stats.get('tx_errors', 0),
                             'packets_dropped_inbound': stats.get('rx_dropped', 0),
                             'packets_dropped_outbound': stats.get('tx_dropped', 0)},
            }
        for addr in ipr.get_addr():
            name = names.get(addr['index'])
            if name not in result:
                continue
            scopes = {0: 'global', 200: 'site', 253: 'link', 254: 'local'}
            scope = scopes.get(addr['scope'], 'global')
            result[name]['addresses'].append({
                'family': 'inet' if addr['family'] == socket.AF_INET else 'inet6',
                'address': addr.get_attr('IFA_ADDRESS'), 'netmask': str(addr['prefixlen']),
                'scope': scope})
    finally:
        ipr.close()
    return result
