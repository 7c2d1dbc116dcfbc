"""NAT and the DHCP/DNS openings of one managed bridge: one nftables table per network.

The table is replaced atomically (`nft -f` of a ruleset that deletes and re-adds it), so a config
change never leaves a half-written firewall, and delete leaves nothing of ours behind.
"""
import subprocess

TABLE_PREFIX = 'novalxd_'


def table_name(network):
    return TABLE_PREFIX + network.replace('-', '_').replace('.', '_')


def _run(script):
    proc = subprocess.run(['nft', '-f', '-'], input=script, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError('nft failed: %s' % proc.stderr.strip())


def table_exists(network):
    proc = subprocess.run(['nft', 'list', 'table', 'inet', table_name(network)],
                          capture_output=True, text=True)
    return proc.returncode == 0


def apply(network, bridge, ipv4_subnet=None, ipv6_subnet=None, nat4=False, nat6=False):
    """(Re)write the network's table: masquerade leaving traffic, accept DHCP/DNS and forwarding."""
    table = table_name(network)
    rules = [
        'chain input { type filter hook input priority 0; policy accept;',
        '  iifname "%s" udp dport { 53, 67, 547 } accept' % bridge,
        '  iifname "%s" tcp dport 53 accept' % bridge,
        '}',
        'chain forward { type filter hook forward priority 0; policy accept;',
        '  iifname "%s" accept' % bridge,
        '  oifname "%s" accept' % bridge,
        '}',
        'chain postrouting { type nat hook postrouting priority 100; policy accept;',
    ]
    if nat4 and ipv4_subnet:
        rules.append('  ip saddr %s ip daddr != %s masquerade' % (ipv4_subnet, ipv4_subnet))
    if nat6 and ipv6_subnet:
        rules.append('  ip6 saddr %s ip6 daddr != %s masquerade' % (ipv6_subnet, ipv6_subnet))
    rules.append('}')
    script = 'table inet %s {}\ndelete table inet %s\ntable inet %s {\n%s\n}\n' % (
        table, table, table, '\n'.join(rules))
    _run(script)


def remove(network):
    table = table_name(network)
    _run('table inet %s {}\ndelete table inet %s\n' % (table, table))


def enable_forwarding(ipv6=False):
    """A routed bridge needs the host to forward (LXD sets the same sysctls)."""
    with open('/proc/sys/net/ipv4/ip_forward', 'w') as f:
        f.write('1')
    if ipv6:
        with open('/proc/sys/net/ipv6/conf/all/forwarding', 'w') as f:
            f.write('1')
