"""Choosing a free private subnet for a bridge from what the host itself uses.

Never by probing the network: on some hosts (this one) every probe appears to succeed. The host's
own addresses and routes, plus the subnets of the other managed networks, are what is taken.
"""
import ipaddress
import random

# LXD draws from 10.0.0.0/8 too; fd42::/16 mirrors its ULA choice for IPv6.
IPV4_POOL = ipaddress.ip_network('10.0.0.0/8')
IPV6_POOL = ipaddress.ip_network('fd42::/16')


def used_networks(addresses, routes, ignore_interface=None):
    """Networks in use, from netlink.addresses() and netlink.routes() rows.

    ignore_interface: a bridge being reconfigured; its own addresses are not a conflict.
    """
    used = []
    for ifname, family, address, prefixlen, _scope in addresses:
        if address and family in (2, 10) and ifname != ignore_interface:
            used.append(ipaddress.ip_interface('%s/%d' % (address, prefixlen)).network)
    for ifname, family, dst, dst_len in routes:
        # the default route covers everything: it does not make a subnet "used"
        if dst and dst_len > 0 and ifname != ignore_interface:
            used.append(ipaddress.ip_network('%s/%d' % (dst, dst_len), strict=False))
    return used


def _overlaps(candidate, used):
    return any(candidate.version == net.version and candidate.overlaps(net) for net in used)


def choose_ipv4(used, rng=None, attempts=2000):
    """A free 10.x.y.0/24 as (gateway/24 string); random like LXD's, deterministic given rng."""
    rng = rng or random.SystemRandom()
    for _ in range(attempts):
        candidate = ipaddress.ip_network('10.%d.%d.0/24' % (rng.randint(0, 255),
                                                            rng.randint(0, 255)))
        if not _overlaps(candidate, used):
            return '%s/24' % candidate[1]
    raise LookupError('no free private IPv4 /24 found in %s' % IPV4_POOL)


def choose_ipv6(used, rng=None, attempts=2000):
    rng = rng or random.SystemRandom()
    for _ in range(attempts):
        prefix = (IPV6_POOL.network_address.packed[:2]
                  + bytes(rng.randint(0, 255) for _ in range(6)) + bytes(8))
        candidate = ipaddress.ip_network((prefix, 64))
        if not _overlaps(candidate, used):
            return '%s/64' % candidate[1]
    raise LookupError('no free IPv6 /64 found in %s' % IPV6_POOL)


def parse_cidr_gateway(value, version):
    """'10.1.2.1/24' -> IPv4Interface; BadRequest-worthy ValueError for anything else."""
    iface = ipaddress.ip_interface(value)
    if iface.version != version or '/' not in value:
        raise ValueError('expected an IPv%d address with a prefix length, e.g. %s' % (
            version, '10.0.3.1/24' if version == 4 else 'fd42::1/64'))
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address) \
            and iface.network.prefixlen < (31 if version == 4 else 127):
        raise ValueError('%s is the network or broadcast address of its subnet' % value)
    return iface


def default_dhcp_range(iface):
    """The largest run of host addresses on one side of the gateway (IPv4)."""
    net = iface.network
    first, last = net.network_address + 1, net.broadcast_address - 1
    if net.prefixlen >= 31:
        first, last = net.network_address, net.broadcast_address
    gateway = iface.ip
    if int(gateway) - int(first) > int(last) - int(gateway):
        return '%s-%s' % (first, gateway - 1)
    return '%s-%s' % (gateway + 1, last)
