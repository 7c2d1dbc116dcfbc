"""Runtime state of a running container: cgroup counters, processes, network interfaces.

The recursion=2 listing asks this of every running container, so each piece is read the cheap
way: cgroup files with one read each (their paths cached per container init), and the network
through one plain netlink socket opened inside the container's netns (two dumps, the few
attributes LXD shows decoded with struct). pyroute2's IPRoute costs about 2 ms a namespace here
(an event loop and a general decoder per socket), which made 1000 running containers take
half a minute to list.
"""
import ctypes
import os
import socket
import struct
import threading
import time

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

# -- cgroups (v1) ---------------------------------------------------------------------------------
_PATHS_CACHE_MAX = 8192
_paths_cache = {}       # (owner, init pid) -> {controller: path}
_paths_lock = threading.Lock()
_MEMORY_ROOT = '/sys/fs/cgroup/memory'


def _read(path):
    """A small file's bytes, or None (open/read/close without Python's io layer)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def _parse_cgroups(text):
    paths = {}
    for line in text.decode(errors='replace').splitlines():
        _, controllers, path = line.split(':', 2)
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
    return paths


def cgroup_paths(pid, owner=None, fresh=False):
    """{controller: host path} of a process's cgroups (v1).

    With an owner (the container's name), the answer is kept per (owner, pid): a container's
    cgroup does not change while its init lives, and a pid another container reuses is another
    key. `fresh` reads /proc again (the cached cgroup is gone: the container restarted).
    """
    key = (owner, pid)
    if owner is not None and not fresh:
        cached = _paths_cache.get(key)
        if cached is not None:
            return cached
    paths = _parse_cgroups(_read('/proc/%d/cgroup' % pid) or b'')
    if paths and owner is not None:
        with _paths_lock:
            if len(_paths_cache) >= _PATHS_CACHE_MAX:
                _paths_cache.clear()      # simplest bound; the next listing refills it
            _paths_cache[key] = paths
    return paths


def _int(raw, default=0):
    try:
        return int(raw)
    except (TypeError, ValueError):
        return default


def process_start(pid):
    """The start time of a live process, or None when it is gone or a zombie.

    In clock ticks since boot: with the pid, it names one process (a pid is reused, not both).
    """
    stat = _read('/proc/%d/stat' % pid) or b''
    fields = stat[stat.rfind(b')') + 2:].split()
    if len(fields) < 20 or fields[0] in (b'Z', b'X'):
        return None
    return fields[19]


def freezer_state(pid, owner):
    """FROZEN, FREEZING or THAWED from the container's v1 freezer cgroup (None: unknown)."""
    freezer = cgroup_paths(pid, owner).get('freezer')
    raw = _read(freezer + '/freezer.state') if freezer else None
    return raw.strip().decode() if raw else None


_swap = {'checked': -1e9, 'in_use': False}
_SWAP_RECHECK = 10.0     # seconds: swap can be switched on while the daemon runs


def _swap_in_use():
    """True when the host has swap and accounts it per cgroup (memsw files).

    Without swap no container can use any: two fewer files to read per container, which a
    listing of 1000 running ones notices.
    """
    now = time.monotonic()
    if now - _swap['checked'] > _SWAP_RECHECK:
        swaps = (_read('/proc/swaps') or b'').splitlines()
        _swap['in_use'] = len(swaps) > 1 and os.path.exists(
            _MEMORY_ROOT + '/memory.memsw.usage_in_bytes')
        _swap['checked'] = now
    return _swap['in_use']


def cgroup_state(pid, owner=None):
    """cpu, memory and processes of the container whose init is `pid` (LXD's state fields)."""
    paths = cgroup_paths(pid, owner)
    usage = _read(paths.get('memory', '') + '/memory.usage_in_bytes')
    if usage is None and owner is not None:
        paths = cgroup_paths(pid, owner, fresh=True)
        usage = _read(paths.get('memory', '') + '/memory.usage_in_bytes')
    memory = paths.get('memory', '')
    usage = _int(usage)
    peak = _int(_read(memory + '/memory.max_usage_in_bytes'))
    swap_usage = swap_peak = 0
    if _swap_in_use():
        swap_usage = max(0, _int(_read(memory + '/memory.memsw.usage_in_bytes')) - usage)
        swap_peak = max(0, _int(_read(memory + '/memory.memsw.max_usage_in_bytes')) - peak)
    return {
        'cpu': {'usage': _int(_read(paths.get('cpuacct', '') + '/cpuacct.usage'))},
        'memory': {'usage': usage, 'usage_peak': peak, 'swap_usage': swap_usage,
                   'swap_usage_peak': swap_peak},
        'processes': _int(_read(paths.get('pids', '') + '/pids.current'), -1),
    }


# -- network (rtnetlink) -------------------------------------------------------------------------
_NLMSG = struct.Struct('=IHHII')         # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct('=BxHiII')       # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct('=BBBBI')        # ifaddrmsg: family, prefixlen, flags, scope, index
_RTATTR = struct.Struct('=HH')
_STATS64 = struct.Struct('=8Q')          # the first 8 counters of rtnl_link_stats64
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_GETADDR = 16, 18, 20, 22
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_STATS64 = 1, 3, 4, 23
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_IFF_UP, _IFF_LOOPBACK = 0x1, 0x8
_LINK_ATTRS = frozenset((_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_STATS64))
_ADDR_ATTRS = frozenset((_IFA_ADDRESS, _IFA_LOCAL))
_SCOPES = {0: 'global', 200: 'site', 253: 'link', 254: 'local'}


def _attrs(data, offset, end, wanted):
    """{type: payload} of the rtattrs of the `wanted` types in data[offset:end].

    Only those are copied out: a link message carries some 50 attributes, a few of which we show.
    """
    found = {}
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4:
            break
        kind &= 0x3fff      # without NLA_F_* bits
        if kind in wanted:
            found[kind] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def _dump(sock, msg_type, body, seq):
    """Send one dump request; yield (type, message bytes) of every answer until DONE."""
    sock.send(_NLMSG.pack(_NLMSG.size + len(body), msg_type, _NLM_F_REQUEST | _NLM_F_DUMP,
                          seq, 0) + body)
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, kind, _, msg_seq, _ = _NLMSG.unpack_from(data, offset)
            if length < _NLMSG.size:
                return
            if msg_seq == seq:
                if kind == _NLMSG_DONE:
                    return
                if kind == _NLMSG_ERROR:
                    errno = -struct.unpack_from('=i', data, offset + _NLMSG.size)[0]
                    raise OSError(errno, os.strerror(errno))
                yield kind, data[offset:offset + length]
            offset += (length + 3) & ~3


def _mac(raw):
    return raw.hex(':')


def _links(sock, host_names):
    result, names = {}, {}
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    for kind, msg in _dump(sock, _RTM_GETLINK, body, 1):
        if kind != _RTM_NEWLINK:
            continue
        _, _, index, flags, _ = _IFINFO.unpack_from(msg, _NLMSG.size)
        attrs = _attrs(msg, _NLMSG.size + _IFINFO.size, len(msg), _LINK_ATTRS)
        name = attrs.get(_IFLA_IFNAME, b'').rstrip(b'\0').decode(errors='replace')
        mtu = attrs.get(_IFLA_MTU)
        stats = attrs.get(_IFLA_STATS64)
        rx_p, tx_p, rx_b, tx_b, rx_e, tx_e, rx_d, tx_d = (
            _STATS64.unpack_from(stats) if stats and len(stats) >= _STATS64.size else (0,) * 8)
        names[index] = name
        result[name] = {
            'addresses': [], 'hwaddr': _mac(attrs.get(_IFLA_ADDRESS, b'')),
            'host_name': host_names.get(name, ''),
            'mtu': struct.unpack('=I', mtu)[0] if mtu and len(mtu) == 4 else None,
            'state': 'up' if flags & _IFF_UP else 'down',
            'type': 'loopback' if flags & _IFF_LOOPBACK else 'broadcast',
            'counters': {'bytes_received': rx_b, 'bytes_sent': tx_b,
                         'packets_received': rx_p, 'packets_sent': tx_p,
                         'errors_received': rx_e, 'errors_sent': tx_e,
                         'packets_dropped_inbound': rx_d, 'packets_dropped_outbound': tx_d},
        }
    return result, names


def _addresses(sock, result, names):
    body = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    for kind, msg in _dump(sock, _RTM_GETADDR, body, 2):
        if kind != _RTM_NEWADDR:
            continue
        family, prefixlen, _, scope, index = _IFADDR.unpack_from(msg, _NLMSG.size)
        name = names.get(index)
        if name not in result or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        attrs = _attrs(msg, _NLMSG.size + _IFADDR.size, len(msg), _ADDR_ATTRS)
        # IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on a ptp link)
        raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
        if not raw:
            continue
        result[name]['addresses'].append({
            'family': 'inet' if family == socket.AF_INET else 'inet6',
            'address': socket.inet_ntop(family, raw), 'netmask': str(prefixlen),
            'scope': _SCOPES.get(scope, 'global')})


def _setns(fd):
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_own_netns = threading.local()


def _netlink_in(pid):
    """A NETLINK_ROUTE socket created inside the netns of `pid`.

    This thread switches back at once; the socket keeps talking to the namespace it was made in.
    Each worker thread keeps a handle on its own netns to switch back to.
    """
    own = getattr(_own_netns, 'fd', None)
    if own is None:
        own = _own_netns.fd = os.open('/proc/thread-self/ns/net', os.O_RDONLY | os.O_CLOEXEC)
    target = os.open('/proc/%d/ns/net' % pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        finally:
            _setns(own)
    finally:
        os.close(target)


# One open socket per running container the listing has seen, kept while its init lives: making
# it costs an open of /proc/<pid>/ns/net, two setns and a socket (about 40 us of the 110 us the
# network state took). It pins the netns, so it is closed as soon as the init is gone (forget).
class _Kept:
    def __init__(self, pid, start):
        self.init = (pid, start)
        self.sock = _netlink_in(pid)
        self.sock.settimeout(5)
        self.lock = threading.Lock()    # one dump at a time (two listings side by side)

    def close(self):
        # not while a listing's dump runs on it: its fd number could be reused mid-call
        with self.lock:
            self.sock.close()


_sockets = {}       # owner -> _Kept
_sockets_lock = threading.Lock()


def _kept(owner, pid, start):
    """The owner's socket into the netns of init (pid, start), made on first use."""
    kept = _sockets.get(owner)
    if kept is not None and kept.init == (pid, start):
        return kept
    with _sockets_lock:     # made once, even by two listings side by side
        kept = _sockets.get(owner)
        if kept is None or kept.init != (pid, start):
            if kept is not None:
                kept.close()        # an earlier init's netns
            kept = _sockets[owner] = _Kept(pid, start)
        return kept


def forget(owner):
    """The owner's container stopped (or is gone): drop its kept socket and cgroup paths."""
    with _sockets_lock:
        kept = _sockets.pop(owner, None)
    if kept is not None:
        kept.close()
    with _paths_lock:
        for key in [key for key in _paths_cache if key[0] == owner]:
            del _paths_cache[key]


def forget_all_but(owners):
    """Forget every container not in `owners` (the running ones a listing found)."""
    for owner in [owner for owner in list(_sockets) if owner not in owners]:
        forget(owner)


def _read_network(sock, host_names):
    result, names = _links(sock, host_names or {})
    _addresses(sock, result, names)
    return result


def network_state(pid, host_names=None, owner=None, start=None):
    """LXD's `network` map for the container whose init is `pid` (blocking: use a worker).

    With its owner and its init's start time (process_start), the socket into its netns is kept
    for the next call. {} when the namespace cannot be entered (the container stopped meanwhile).
    """
    if owner is None or start is None:
        try:
            sock = _netlink_in(pid)
        except OSError:
            return {}
        try:
            sock.settimeout(5)
            return _read_network(sock, host_names)
        except OSError:
            return {}
        finally:
            sock.close()
    try:
        kept = _kept(owner, pid, start)
        with kept.lock:
            return _read_network(kept.sock, host_names)
    except OSError:
        forget(owner)       # a socket left half-way through a dump is of no further use
        return {}
