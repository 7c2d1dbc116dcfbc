"""`nic`: network interfaces of a container: bridged, macvlan, p2p and physical.

bridged and p2p: liblxc makes the veth pair at the start (host end `host_name`, joined to the
bridge for bridged), creating the container's end right in the container's network namespace
(see _liblxc_makes_veth: moving a link between namespaces costs 20-50 ms). With limits, the
daemon makes the pair itself before the start (tc needs the host end) and hands the other end to
LXC as a `phys` link, as LXD does; hot-plug is that code too, moving the end into the running
container's netns. macvlan is made by LXC at start (and by us on hot-plug); physical moves an
existing host interface in, and back out on stop or unplug.

Generated values are stable and recorded like LXD's: volatile.<dev>.hwaddr (00:16:3e:xx:xx:xx),
volatile.<dev>.host_name, and volatile.<dev>.last_state.created for the link we made.

After a stop, a veth liblxc did not delete itself is deleted in the background
(instances/deferred.py: it costs ~16 ms in the kernel and nothing of it shows in the API); its
DHCP entry goes at once. A forced stop begins deleting the veth liblxc made before the kill,
so that liblxc's monitor does not wait for the kernel (pre_kill). The next start of the
instance waits for that deletion first.
"""
import hashlib
import ipaddress
import logging
import re
import time

from nova_lxd.backend.errors import BadRequest, NotFound
from nova_lxd.backend.instances import deferred
from nova_lxd.backend.instances.devices import DeviceType, register
from nova_lxd.backend.network import netlink

LOG = logging.getLogger(__name__)

NICTYPES = ('bridged', 'macvlan', 'p2p', 'physical')
# how long a forced stop waits for the kernel to unlist a veth it is deleting (pre_kill)
UNLIST_WAIT = 0.02
KEYS = {
    'bridged': {'network', 'parent', 'host_name', 'hwaddr', 'mtu', 'ipv4.address',
                'ipv6.address', 'limits.ingress', 'limits.egress', 'limits.max'},
    'p2p': {'host_name', 'hwaddr', 'mtu', 'limits.ingress', 'limits.egress', 'limits.max'},
    'macvlan': {'network', 'parent', 'hwaddr', 'mtu', 'mode', 'vlan'},
    'physical': {'parent', 'hwaddr', 'mtu'},
}
COMMON = {'type', 'nictype', 'name', 'boot.priority'}
IFNAME_RE = re.compile(r'^[A-Za-z0-9_.:-]{1,15}$')
MAC_RE = re.compile(r'^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$')
RATE_RE = re.compile(r'^(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|tbit)?$', re.IGNORECASE)
RATE_UNITS = {'bit': 1, 'kbit': 10 ** 3, 'mbit': 10 ** 6, 'gbit': 10 ** 9, 'tbit': 10 ** 12}


def parse_rate(value):
    """'10Mbit' -> bits per second (LXD's limits.ingress/egress syntax)."""
    match = RATE_RE.match(str(value).strip())
    if not match:
        raise ValueError(value)
    return int(float(match.group(1)) * RATE_UNITS[(match.group(2) or 'bit').lower()])


def nictype(dev):
    if dev.get('nictype'):
        return dev['nictype']
    return 'bridged' if dev.get('network') else None


def _identity(dev):
    return nictype(dev), dev.get('network') or dev.get('parent'), dev.get('hwaddr')


def _volatile(name, key):
    return 'volatile.%s.%s' % (name, key)


def _stable_name(prefix, ctx, name):
    """A link name stable for (instance, device) and short enough for IFNAMSIZ."""
    digest = hashlib.sha1(('%s/%s' % (ctx.name, name)).encode()).hexdigest()
    return prefix + digest[:15 - len(prefix)]


def _job_key(ctx, name):
    """The background job deleting this (instance, device)'s veth after a stop."""
    return 'nic %s/%s' % (ctx.name, name)


def _delete_veth(host, peer):
    if host:
        netlink.delete(host)     # takes its peer with it
    netlink.delete(peer)         # a peer without its host end (a crash)


class Nic(DeviceType):
    type = 'nic'

    # -- validation -------------------------------------------------------------------------
    def validate(self, name, dev):
        kind = nictype(dev)
        if kind not in NICTYPES:
            raise BadRequest('Device %r: nictype must be one of %s (or give a network)'
                             % (name, ', '.join(NICTYPES)))
        for key in dev:
            if key not in COMMON and key not in KEYS[kind]:
                raise BadRequest('Device %r: key %r is not valid for a %s nic' % (name, key,
                                                                                  kind))
        for key in ('name', 'host_name', 'parent'):
            if key in dev and not IFNAME_RE.match(dev[key]):
                raise BadRequest('Device %r: invalid interface name %r for %s'
                                 % (name, dev[key], key))
        if 'hwaddr' in dev and not MAC_RE.match(dev['hwaddr']):
            raise BadRequest('Device %r: invalid hwaddr %r' % (name, dev['hwaddr']))
        if 'mtu' in dev and not (dev['mtu'].isdigit() and 68 <= int(dev['mtu']) <= 65535):
            raise BadRequest('Device %r: invalid mtu %r' % (name, dev['mtu']))
        for key in ('limits.ingress', 'limits.egress', 'limits.max'):
            if key in dev:
                try:
                    parse_rate(dev[key])
                except ValueError:
                    raise BadRequest('Device %r: invalid %s %r (e.g. 10Mbit)'
                                     % (name, key, dev[key]))
        if 'ipv4.address' in dev:
            try:
                if ipaddress.ip_address(dev['ipv4.address']).version != 4:
                    raise ValueError()
            except ValueError:
                raise BadRequest('Device %r: invalid ipv4.address %r'
                                 % (name, dev['ipv4.address']))
            if not dev.get('network'):
                raise BadRequest('Device %r: ipv4.address needs a managed network (network=)'
                                 % name)
        if kind in ('bridged', 'macvlan') and not (dev.get('network') or dev.get('parent')):
            raise BadRequest('Device %r: a %s nic needs a network or a parent' % (name, kind))
        if dev.get('network') and dev.get('parent'):
            raise BadRequest('Device %r: give either network or parent, not both' % name)
        if kind == 'physical' and not dev.get('parent'):
            raise BadRequest('Device %r: a physical nic needs a parent (the host interface)'
                             % name)
        if 'mode' in dev and dev['mode'] not in ('bridge', 'vepa', 'private', 'passthru'):
            raise BadRequest('Device %r: invalid macvlan mode %r' % (name, dev['mode']))

    # -- shared pieces --------------------------------------------------------------------
    def _hwaddr(self, ctx, name, dev):
        if dev.get('hwaddr'):
            return dev['hwaddr'].lower()
        key = _volatile(name, 'hwaddr')
        if not ctx.volatile.get(key):
            ctx.volatile[key] = netlink.random_hwaddr()
        return ctx.volatile[key]

    def _host_name(self, ctx, name, dev):
        key = _volatile(name, 'host_name')      # recorded even when given, as LXD does
        if dev.get('host_name'):
            ctx.volatile[key] = dev['host_name']
        elif not ctx.volatile.get(key):
            ctx.volatile[key] = netlink.random_name('veth')
        return ctx.volatile[key]

    def check_host(self, daemon, name, dev, links=True):
        # a missing network (as LXD) or host parent is refused at create/update, not at start
        if nictype(dev) in ('bridged', 'macvlan') and (links or dev.get('network')):
            self._host_parent(daemon, name, dev)

    def _parent(self, ctx, name, dev):
        return self._host_parent(ctx.daemon, name, dev)

    @staticmethod
    def _host_parent(daemon, name, dev):
        """The host link a bridged/macvlan nic hangs off: a managed network's bridge or parent."""
        if dev.get('network'):
            try:
                return daemon.networks.bridge_for(dev['network'])
            except NotFound:
                raise BadRequest('Device %r: network %r does not exist'
                                 % (name, dev['network']))
        link = netlink.link_info(dev['parent'])
        if link is None:
            raise BadRequest('Device %r: parent %r does not exist on the host'
                             % (name, dev['parent']))
        if nictype(dev) == 'bridged' and link['kind'] != 'bridge':
            raise BadRequest('Device %r: parent %r is not a bridge' % (name, dev['parent']))
        return dev['parent']

    @staticmethod
    def _managed_network(daemon, dev):
        """The managed network a bridged nic joins (by network, or parent naming one)."""
        if nictype(dev) != 'bridged':
            return None
        network = dev.get('network') or dev.get('parent')
        return network if daemon.networks.is_managed(network) else None

    @staticmethod
    def _inner_name(name, dev):
        return dev.get('name') or name

    @staticmethod
    def _liblxc_makes_veth(dev):
        """True when liblxc makes this nic's veth at the start (lxc.net.N.type = veth).

        liblxc creates the container's end right inside the container's network namespace; a
        veth made beforehand and handed over as `phys` must be moved there, which costs
        20-50 ms in the kernel at each start (and liblxc moves it back at the stop). A nic
        with limits keeps the daemon-made veth: tc needs its host end before the start.
        """
        return nictype(dev) in ('bridged', 'p2p') and not any(
            key in dev for key in ('limits.ingress', 'limits.egress', 'limits.max'))

    def _claim_host_end(self, ctx, name, dev):
        """The host end's name (free on the host) and the container end's MAC."""
        deferred.BACKGROUND.drain(_job_key(ctx, name))    # the last stop's veth goes first
        host = self._host_name(ctx, name, dev)
        hwaddr = self._hwaddr(ctx, name, dev)
        if netlink.exists(host):
            if dev.get('host_name'):
                raise BadRequest('Device %r: host interface %r already exists' % (name, host))
            # a name we generated and recorded for this device: our own veth, left by a daemon
            # that died before its background deletion ran
            netlink.delete(host)
        return host, hwaddr

    def _register_dhcp(self, ctx, dev, hwaddr):
        network = self._managed_network(ctx.daemon, dev)
        if dev.get('ipv4.address'):
            ctx.daemon.networks.reserve(dev['network'], hwaddr, dev['ipv4.address'], ctx.name)
        elif network:
            ctx.daemon.networks.register(network, hwaddr, ctx.name)

    def _plan_veth(self, ctx, name, dev):
        """Everything of a veth liblxc will make at the start, but the link itself."""
        if nictype(dev) == 'bridged':
            self._parent(ctx, name, dev)     # the network or bridge must exist
        host, hwaddr = self._claim_host_end(ctx, name, dev)
        self._register_dhcp(ctx, dev, hwaddr)
        ctx.volatile[_volatile(name, 'last_state.created')] = 'true'

    def _make_veth(self, ctx, name, dev):
        """Create the veth pair of a bridged/p2p nic (host end set up and limited)."""
        kind = nictype(dev)
        master = self._parent(ctx, name, dev) if kind == 'bridged' else None
        host, hwaddr = self._claim_host_end(ctx, name, dev)
        peer = _stable_name('nlxc', ctx, name)
        netlink.delete(peer)      # a leftover of a crash
        netlink.create_veth(host, peer, hwaddr=hwaddr, mtu=dev.get('mtu'), master=master,
                            host_ipv6=master is None)
        try:
            self._apply_limits(name, dev, host)
            self._register_dhcp(ctx, dev, hwaddr)
        except BaseException:
            netlink.delete(host)
            raise
        ctx.volatile[_volatile(name, 'last_state.created')] = 'true'
        return host, peer

    def _apply_limits(self, name, dev, host):
        # The host end's transmit is the container's receive, and the other way round.
        ingress = dev.get('limits.ingress') or dev.get('limits.max')
        egress = dev.get('limits.egress') or dev.get('limits.max')
        if ingress:
            netlink.limit_transmit(host, parse_rate(ingress))
        if egress:
            try:
                netlink.police_receive(host, parse_rate(egress))
            except netlink.Unsupported as exc:
                raise BadRequest('Device %r: limits.egress cannot be enforced here: %s'
                                 % (name, exc))

    def _remove_veth(self, ctx, name, dev, background=None):
        """Delete the veth, here or as a background job; its DHCP entry stays (see deleted).

        background: deferred.BACKGROUND.defer (queued) or .run_now (a thread of its own).
        Returns the host end's name (None if none was recorded).
        """
        host = dev.get('host_name') or ctx.volatile.get(_volatile(name, 'host_name'))
        peer = _stable_name('nlxc', ctx, name)
        ctx.volatile[_volatile(name, 'last_state.created')] = None
        if background:
            background(_job_key(ctx, name), lambda: _delete_veth(host, peer),
                       'deletion of veth %s of %s' % (host, ctx.name))
        else:
            _delete_veth(host, peer)
        return host

    # -- start / stop ---------------------------------------------------------------------
    def pre_start(self, ctx, name, dev):
        kind = nictype(dev)
        if self._liblxc_makes_veth(dev):
            self._plan_veth(ctx, name, dev)
        elif kind in ('bridged', 'p2p'):
            self._make_veth(ctx, name, dev)
        elif kind == 'macvlan':
            self._parent(ctx, name, dev)
            self._hwaddr(ctx, name, dev)
        elif kind == 'physical':
            if not netlink.exists(dev['parent']):
                raise BadRequest('Device %r: host interface %r does not exist'
                                 % (name, dev['parent']))

    def post_start(self, ctx, name, dev):
        if self._liblxc_makes_veth(dev) and nictype(dev) == 'bridged':
            # liblxc brought the host end up with IPv6; a bridge port needs none
            netlink.disable_ipv6(self._host_name(ctx, name, dev))

    def lxc_config(self, ctx, name, dev):
        index = ctx.next_net_index()
        key = 'lxc.net.%d.' % index
        kind = nictype(dev)
        lines = []
        if self._liblxc_makes_veth(dev):
            lines += [(key + 'type', 'veth'), (key + 'veth.pair', self._host_name(ctx, name, dev))]
            if kind == 'bridged':
                lines.append((key + 'link', self._parent(ctx, name, dev)))
        elif kind in ('bridged', 'p2p'):
            lines += [(key + 'type', 'phys'), (key + 'link', _stable_name('nlxc', ctx, name))]
        elif kind == 'macvlan':
            lines += [(key + 'type', 'macvlan'), (key + 'link', self._parent(ctx, name, dev)),
                      (key + 'macvlan.mode', dev.get('mode', 'bridge'))]
            if dev.get('vlan'):
                lines.append((key + 'macvlan.vlan', dev['vlan']))
        else:
            lines += [(key + 'type', 'phys'), (key + 'link', dev['parent'])]
        lines += [(key + 'name', self._inner_name(name, dev)), (key + 'flags', 'up')]
        if kind != 'physical' or dev.get('hwaddr'):
            lines.append((key + 'hwaddr', self._hwaddr(ctx, name, dev)))
        if dev.get('mtu'):
            lines.append((key + 'mtu', dev['mtu']))
        elif self._liblxc_makes_veth(dev) and kind == 'bridged':
            # the bridge's MTU, as liblxc would take it, but liblxc finds it by dumping every
            # link of the host: each start cost more as containers accumulated
            bridge_mtu = netlink.mtu(self._parent(ctx, name, dev))
            if bridge_mtu:
                lines.append((key + 'mtu', str(bridge_mtu)))
        return lines

    def pre_kill(self, ctx, name, dev):
        # liblxc's monitor deletes the veth it made once the init is dead, and waits ~20 ms
        # for the kernel to let go of it; deleted in the background first, the monitor finds
        # the link gone at once. The kernel unlists a link before that wait: only that is
        # waited for here.
        if self._liblxc_makes_veth(dev) and nictype(dev) in ('bridged', 'p2p'):
            host = self._remove_veth(ctx, name, dev, background=deferred.BACKGROUND.run_now)
            deadline = time.monotonic() + UNLIST_WAIT
            while host and netlink.exists(host) and time.monotonic() < deadline:
                time.sleep(0.0005)

    def post_stop(self, ctx, name, dev):
        # LXC hands phys links back to the host (with their old names) when the netns goes.
        if nictype(dev) in ('bridged', 'p2p') and not deferred.BACKGROUND.pending(
                _job_key(ctx, name)):
            self._remove_veth(ctx, name, dev, background=deferred.BACKGROUND.defer)

    # -- live -----------------------------------------------------------------------------
    def hotplug(self, ctx, name, dev):
        kind = nictype(dev)
        inner = self._inner_name(name, dev)
        if inner in netlink.links_in_netns(ctx.init_pid):
            raise BadRequest('Device %r: the instance already has an interface %r'
                             % (name, inner))
        if kind in ('bridged', 'p2p'):
            host, peer = self._make_veth(ctx, name, dev)
            try:
                netlink.move_to_netns(peer, ctx.init_pid, inner)
            except BaseException:
                self._remove_veth(ctx, name, dev)
                raise
        elif kind == 'macvlan':
            temp = _stable_name('nlxm', ctx, name)
            netlink.create_macvlan(temp, self._parent(ctx, name, dev), dev.get('mode', 'bridge'),
                                   hwaddr=self._hwaddr(ctx, name, dev), mtu=dev.get('mtu'))
            try:
                netlink.move_to_netns(temp, ctx.init_pid, inner)
            except BaseException:
                netlink.delete(temp)
                raise
        else:
            if not netlink.exists(dev['parent']):
                raise BadRequest('Device %r: host interface %r does not exist'
                                 % (name, dev['parent']))
            netlink.set_up(dev['parent'], False)    # a MAC changes only while down
            if dev.get('hwaddr'):
                netlink.set_hwaddr(dev['parent'], dev['hwaddr'])
            if dev.get('mtu'):
                netlink.set_mtu(dev['parent'], dev['mtu'])
            netlink.move_to_netns(dev['parent'], ctx.init_pid, inner)

    def update(self, ctx, name, old, new):
        """Limits change live on the host end; anything else re-plugs the interface."""
        changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
        if nictype(old) == nictype(new) in ('bridged', 'p2p') and \
                changed <= {'limits.ingress', 'limits.egress', 'limits.max'}:
            host = self._host_name(ctx, name, new)
            netlink.clear_limits(host)
            self._apply_limits(name, new, host)
            return
        super().update(ctx, name, old, new)

    def replaces(self, old, new):
        # on another network or with another MAC, the old interface's address is free
        return _identity(old) != _identity(new)

    def deleted(self, daemon, name, dev, volatile):
        """Its DHCP entry (DNS name, pinned address) and its lease go.

        A stop keeps both, as in LXD: the address stays the instance's, and a restart does not
        make dnsmasq read an entry again.
        """
        network = self._managed_network(daemon, dev)
        hwaddr = dev.get('hwaddr') or volatile.get(_volatile(name, 'hwaddr'))
        if network and hwaddr:
            daemon.networks.release(network, hwaddr)
            daemon.networks.release_lease(network, hwaddr)

    def unplug(self, ctx, name, dev):
        kind = nictype(dev)
        inner = self._inner_name(name, dev)
        if kind in ('bridged', 'p2p'):
            self._remove_veth(ctx, name, dev)     # the container's end goes with the host's
        elif kind == 'macvlan':
            netlink.delete_in_netns(ctx.init_pid, inner)
        else:
            if not netlink.move_from_netns(ctx.init_pid, inner, dev['parent']):
                LOG.warning('Device %s of %s: %s was not in the container', name, ctx.name,
                            inner)


register(Nic)
