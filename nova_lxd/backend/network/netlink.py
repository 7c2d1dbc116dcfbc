"""Link plumbing through netlink (pyroute2), as os-vif does: no `ip` command, no output parsing."""
import asyncio
import contextlib
import ctypes
import errno
import fcntl
import functools
import inspect
import logging
import os
import random
import socket
import struct
import threading

from pyroute2 import IPRoute, NetlinkError

LOG = logging.getLogger(__name__)

IFNAMSIZ = 15


@contextlib.contextmanager
def _fresh_iproute():
    """A socket of its own, in the calling thread's network namespace (see in_netns)."""
    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


# Each thread keeps one netlink socket in the host's namespace: opening one per call cost about
# 1 ms, several times per start and stop. pyroute2 (0.9) keeps its socket and event loop per
# thread anyway (an IPRoute used from another thread opens another socket and loop there), and
# the daemon's worker threads live as long as it does. The sockets of threads that ended are
# closed when the next one is opened.
_LOCAL = threading.local()
_OPEN = []                   # (thread, IPRoute) of every thread's socket
_OPEN_LOCK = threading.Lock()


def _close_quietly(ipr):
    try:
        ipr.close()
    except Exception:
        pass


def _thread_socket():
    ipr = getattr(_LOCAL, 'ipr', None)
    if ipr is not None and _LOCAL.pid == os.getpid():
        return ipr
    ipr = IPRoute()            # a forked child never uses its parent's
    _LOCAL.ipr, _LOCAL.pid = ipr, os.getpid()
    with _OPEN_LOCK:
        ended = [entry for entry in _OPEN if not entry[0].is_alive()]
        _OPEN[:] = [entry for entry in _OPEN if entry[0].is_alive()]
        _OPEN.append((threading.current_thread(), ipr))
    for _, old in ended:
        _close_quietly(old)
    return ipr


def _drop_thread_socket():
    ipr, _LOCAL.ipr = _LOCAL.ipr, None
    with _OPEN_LOCK:
        _OPEN[:] = [entry for entry in _OPEN if entry[1] is not ipr]
    _close_quietly(ipr)


@contextlib.contextmanager
def iproute():
    if getattr(_LOCAL, 'busy', False):      # nested use on one thread: a socket of its own
        with _fresh_iproute() as ipr:
            yield ipr
        return
    ipr = _thread_socket()
    _LOCAL.busy = True
    try:
        yield ipr
    except NetlinkError:
        raise                 # the kernel said no; the socket is fine
    except BaseException:
        _drop_thread_socket()   # it may hold half a reply: the next call opens a new one
        raise
    finally:
        _LOCAL.busy = False


def _index(name):
    """The link's index in the calling thread's namespace (that of every socket used with it).

    One SIOCGIFINDEX ioctl: pyroute2's lookup by name dumped every link on the host, which made
    each start and stop slower as the number of containers grew.
    """
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def exists(name):
    return _index(name) is not None


SIOCGIFMTU = 0x8921


def mtu(name):
    """The link's MTU in the calling thread's namespace (one SIOCGIFMTU ioctl), None if absent.

    liblxc, when a veth's lxc.net.N.mtu is not set, reads the bridge's MTU by dumping every
    link of the host: with 1000 containers, a third of the start (see nic.py).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            request = struct.pack('16si', name.encode(), 0)
            return struct.unpack('16si', fcntl.ioctl(sock, SIOCGIFMTU, request))[1]
        except OSError:
            return None


def random_hwaddr():
    """A MAC in LXD's (Xensource) OUI, 00:16:3e, as LXD generates them."""
    return '00:16:3e:%02x:%02x:%02x' % tuple(random.randint(0, 255) for _ in range(3))


def random_name(prefix):
    return '%s%08x' % (prefix, random.getrandbits(32))


def link_info(name):
    """One link's attributes as a plain dict, or None if absent."""
    with iproute() as ipr:
        index = _index(name)
        if index is None:
            return None
        link = ipr.get_links(index)[0]
        return _link_dict(ipr, link)


def _link_dict(ipr, link):
    linkinfo = link.get_attr('IFLA_LINKINFO')
    kind = linkinfo.get_attr('IFLA_INFO_KIND') if linkinfo else None
    stats = link.get_attr('IFLA_STATS64') or {}
    master = link.get_attr('IFLA_MASTER')
    return {
        'index': link['index'],
        'name': link.get_attr('IFLA_IFNAME'),
        'kind': kind,
        'hwaddr': link.get_attr('IFLA_ADDRESS') or '',
        'mtu': link.get_attr('IFLA_MTU'),
        'up': bool(link['flags'] & 1),
        'oper_state': link.get_attr('IFLA_OPERSTATE'),
        'master': master,
        'loopback': bool(link['flags'] & 8),
        'stats': {k: stats.get(k, 0)
                  for k in ('rx_bytes', 'tx_bytes', 'rx_packets', 'tx_packets')},
    }


def all_links():
    with iproute() as ipr:
        return [_link_dict(ipr, link) for link in ipr.get_links()]


def addresses(name=None):
    """[(ifname, family, address, prefixlen, scope)] for one link or all."""
    with iproute() as ipr:
        names = {link['index']: link.get_attr('IFLA_IFNAME') for link in ipr.get_links()}
        kwargs = {}
        if name is not None:
            index = _index(name)
            if index is None:
                return []
            kwargs['index'] = index
        return [(names.get(a['index']), a['family'], a.get_attr('IFA_ADDRESS'),
                 a['prefixlen'], a['scope']) for a in ipr.get_addr(**kwargs)]


def routes():
    """[(ifname, family, dst or None, dst_len)] of every route in every table of this namespace."""
    with iproute() as ipr:
        names = {link['index']: link.get_attr('IFLA_IFNAME') for link in ipr.get_links()}
        result = []
        for family in (2, 10):
            for route in ipr.get_routes(family=family):
                result.append((names.get(route.get_attr('RTA_OIF')), family,
                               route.get_attr('RTA_DST'), route['dst_len']))
        return result


def create_bridge(name, hwaddr=None, mtu=None):
    with iproute() as ipr:
        kwargs = {'ifname': name, 'kind': 'bridge', 'br_forward_delay': 0}
        if hwaddr:
            kwargs['address'] = hwaddr
        if mtu:
            kwargs['mtu'] = int(mtu)
        ipr.link('add', **kwargs)


def set_up(name, up=True):
    with iproute() as ipr:
        ipr.link('set', index=_index(name), state='up' if up else 'down')


def set_mtu(name, mtu):
    with iproute() as ipr:
        ipr.link('set', index=_index(name), mtu=int(mtu))


def set_hwaddr(name, hwaddr):
    with iproute() as ipr:
        ipr.link('set', index=_index(name), address=hwaddr)


def set_master(name, master):
    with iproute() as ipr:
        ipr.link('set', index=_index(name), master=_index(master) if master else 0)


def flush_addresses(name):
    with iproute() as ipr:
        index = _index(name)
        if index is not None:
            for address in ipr.get_addr(index=index):
                if address['family'] == 10 and address['scope'] == 253:
                    continue   # keep the IPv6 link-local address
                ipr.addr('del', index=index, address=address.get_attr('IFA_ADDRESS'),
                         prefixlen=address['prefixlen'])


def add_address(name, address, prefixlen):
    with iproute() as ipr:
        try:
            ipr.addr('add', index=_index(name), address=address, prefixlen=prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise


def delete(name):
    """Remove a link if it exists (a veth takes its peer with it)."""
    with iproute() as ipr:
        index = _index(name)
        if index is not None:
            try:
                ipr.link('del', index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise


def create_vxlan(name, vni, local=None, remote=None, group=None, port=None, dev=None,
                 ttl=None, master=None, mtu=None):
    with iproute() as ipr:
        kwargs = {'ifname': name, 'kind': 'vxlan', 'vxlan_id': int(vni),
                  'vxlan_port': int(port or 4789), 'vxlan_learning': 1}
        if local:
            kwargs['vxlan_local'] = local
        if remote:
            kwargs['vxlan_group'] = remote
        if group:
            kwargs['vxlan_group'] = group
        if dev:
            index = _index(dev)
            if index is None:
                raise ValueError('interface %r does not exist' % dev)
            kwargs['vxlan_link'] = index
        if ttl:
            kwargs['vxlan_ttl'] = int(ttl)
        if mtu:
            kwargs['mtu'] = int(mtu)
        ipr.link('add', **kwargs)
        index = _index(name)
        if master:
            ipr.link('set', index=index, master=_index(master))
        ipr.link('set', index=index, state='up')


def disable_ipv6(name):
    """Take IPv6 off a link of the host; False if the host has no IPv6 or the link is gone.

    No address, routes, MLD or router solicitations of its own: a bridge port needs none (LXD
    does the same). With 900 containers on a bridge, theirs were 3,600 of the host's IPv6
    routes.
    """
    if '/' in name or name in ('', '.', '..'):
        raise ValueError('not an interface name: %r' % name)
    try:
        with open('/proc/sys/net/ipv6/conf/%s/disable_ipv6' % name, 'w') as f:
            f.write('1')
        return True
    except FileNotFoundError:
        return False


def create_veth(host_name, peer_name, hwaddr=None, mtu=None, master=None, host_ipv6=True):
    """A veth pair; the peer (the container's end) gets hwaddr, the host end joins master.

    Unless host_ipv6, the host end has IPv6 taken off before it goes up.
    """
    with iproute() as ipr:
        peer = {'ifname': peer_name}
        if hwaddr:
            peer['address'] = hwaddr
        if mtu:
            peer['mtu'] = int(mtu)
        kwargs = {'ifname': host_name, 'kind': 'veth', 'peer': peer}
        if mtu:
            kwargs['mtu'] = int(mtu)
        ipr.link('add', **kwargs)
        try:
            index = _index(host_name)
            if not host_ipv6:
                disable_ipv6(host_name)
            if master:
                ipr.link('set', index=index, master=_index(master))
            ipr.link('set', index=index, state='up')
        except Exception:
            ipr.link('del', index=_index(host_name))
            raise


def create_macvlan(name, parent, mode='bridge', hwaddr=None, mtu=None):
    with iproute() as ipr:
        parent_index = _index(parent)
        if parent_index is None:
            raise ValueError('parent interface %r does not exist' % parent)
        kwargs = {'ifname': name, 'kind': 'macvlan', 'link': parent_index,
                  'macvlan_mode': mode}
        if hwaddr:
            kwargs['address'] = hwaddr
        if mtu:
            kwargs['mtu'] = int(mtu)
        ipr.link('add', **kwargs)


def move_to_netns(name, pid, new_name=None):
    """Move a host link into the netns of process `pid` (a container's init).

    There it is renamed to new_name and brought up.
    """
    with iproute() as ipr:
        index = _index(name)
        if index is None:
            raise ValueError('interface %r does not exist' % name)
        ipr.link('set', index=index, state='down')
        ipr.link('set', index=index, net_ns_pid=int(pid))

    def finish(ns):
        inner = _index(name)
        if new_name:
            ns.link('set', index=inner, ifname=new_name)
        ns.link('set', index=inner, state='up')
    in_netns(pid, finish)


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(pid, func):
    """Run func(ipr) with an IPRoute inside the network namespace of process `pid`.

    A throwaway thread enters the namespace (setns affects only the calling thread) and opens
    the netlink socket there. pyroute2's own netns support forks a helper process, which is not
    safe in this threaded daemon.
    """
    result, error = [], []

    def work():
        fd = os.open('/proc/%d/ns/net' % int(pid), os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, 'setns into the netns of %s: %s' % (pid, os.strerror(err)))
        finally:
            os.close(fd)
        with _fresh_iproute() as ipr:
            result.append(func(ipr))

    def guarded():
        try:
            work()
        except BaseException as exc:
            error.append(exc)
    thread = threading.Thread(target=guarded, name='netns-%s' % pid)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def move_from_netns(pid, name, new_name=None, up=False):
    """Move a link out of a container's namespace back to the host (ours), optionally renamed."""
    def work(ns):
        index = _index(name)
        if index is None:
            return False
        ns.link('set', index=index, state='down')
        if new_name and new_name != name:
            ns.link('set', index=index, ifname=new_name)
        ns.link('set', index=index, net_ns_pid=os.getpid())
        return True
    moved = in_netns(pid, work)
    if moved and up:
        set_up(new_name or name)
    return moved


def delete_in_netns(pid, name):
    def work(ns):
        index = _index(name)
        if index is not None:
            ns.link('del', index=index)
            return True
        return False
    return in_netns(pid, work)


def links_in_netns(pid):
    return in_netns(pid, lambda ns: [link.get_attr('IFLA_IFNAME') for link in ns.get_links()])


class Unsupported(Exception):
    """The running kernel lacks a feature (a tc action or classifier)."""


def limit_transmit(name, bits_per_second):
    """Shape what leaves `name` (a token bucket: root tbf qdisc)."""
    rate = max(1, int(bits_per_second) // 8)
    burst = max(rate // 10, 16384)    # 100 ms worth of traffic, at least 16 KiB
    with iproute() as ipr:
        index = _index(name)
        try:
            ipr.tc('del', index=index, handle=0x10000, parent=0xffffffff)
        except NetlinkError:
            pass
        ipr.tc('add', 'tbf', index=index, handle=0x10000, rate=rate, burst=burst,
               latency='50ms')


def police_receive(name, bits_per_second):
    """Police what arrives on `name` (ingress qdisc + u32 match-all + police drop)."""
    rate = max(1, int(bits_per_second) // 8)
    burst = max(rate // 10, 16384)
    with iproute() as ipr:
        index = _index(name)
        try:
            ipr.tc('add', 'ingress', index=index, handle=0xffff0000)
            ipr.tc('add-filter', 'u32', index=index, parent=0xffff0000, protocol=0x0003,
                   prio=1, target=0x1, keys=['0x0/0x0+0'],
                   action={'kind': 'police', 'rate': rate, 'burst': burst, 'mtu': 65535,
                           'action': 'drop'})
        except NetlinkError as exc:
            try:
                ipr.tc('del', 'ingress', index=index, handle=0xffff0000)
            except NetlinkError:
                pass
            if exc.code == errno.ENOENT:
                raise Unsupported('this kernel has no tc u32 classifier or police action')
            raise


def qdiscs(name):
    """[(kind, handle)] of the qdiscs on a link."""
    with iproute() as ipr:
        index = _index(name)
        return [(q.get_attr('TCA_KIND'), q['handle']) for q in ipr.get_qdiscs(index=index)]


def clear_limits(name):
    """Remove our shaping (root tbf) and policing (ingress qdisc) from a link."""
    with iproute() as ipr:
        index = _index(name)
        if index is None:
            return
        try:
            ipr.tc('del', index=index, handle=0x10000, parent=0xffffffff)
        except NetlinkError:
            pass
        try:
            ipr.tc('del', 'ingress', index=index, handle=0xffff0000)
        except NetlinkError:
            pass


# -- pyroute2's synchronous API cannot run on a thread whose asyncio loop is running (it drives
# its own loop). The daemon calls us from worker threads, but start-up reconciliation may run
# on the loop's thread: there, each call moves to a short-lived thread of its own.
def _off_the_loop(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return func(*args, **kwargs)
        result, error = [], []

        def work():
            try:
                result.append(func(*args, **kwargs))
            except BaseException as exc:
                error.append(exc)
        thread = threading.Thread(target=work, name='netlink')
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]
    return wrapper


_PURE = ('iproute', 'random_hwaddr', 'random_name', 'mtu')
for _name, _func in list(globals().items()):
    if inspect.isfunction(_func) and not _name.startswith('_') and \
            _func.__module__ == __name__ and _name not in _PURE:
        globals()[_name] = _off_the_loop(_func)
del _name, _func
