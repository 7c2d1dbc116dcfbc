"""Test helpers: network namespaces playing containers or other hosts (nothing leaves the host)."""
import contextlib
import os
import random
import subprocess
import tempfile

from pyroute2 import netns as pyroute2_netns

UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc hook: configure the leased address
case "$1" in
  bound|renew) busybox ip addr add "$ip/$mask" dev "$interface" ;;
esac
"""


def run(*cmd, check=True, timeout=60):
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def in_ns(ns, *cmd, check=True, timeout=60):
    return run('ip', 'netns', 'exec', ns, *cmd, check=check, timeout=timeout)


@contextlib.contextmanager
def namespace(prefix='nlxt'):
    name = '%s%06x' % (prefix, random.getrandbits(24))
    pyroute2_netns.create(name)
    try:
        in_ns(name, 'ip', 'link', 'set', 'lo', 'up')
        yield name
    finally:
        pyroute2_netns.remove(name)


def plug(ns, bridge, ifname='eth0', bridge_ns=None, hwaddr=None):
    """A veth from `bridge` (in the host or in namespace bridge_ns) into `ns` as `ifname`."""
    host_end = 'nlxh%06x' % random.getrandbits(24)
    peer = 'nlxp%06x' % random.getrandbits(24)
    run('ip', 'link', 'add', host_end, 'type', 'veth', 'peer', 'name', peer)
    if bridge_ns:
        run('ip', 'link', 'set', host_end, 'netns', bridge_ns)
        in_ns(bridge_ns, 'ip', 'link', 'set', host_end, 'master', bridge, 'up')
    else:
        run('ip', 'link', 'set', host_end, 'master', bridge, 'up')
    run('ip', 'link', 'set', peer, 'netns', ns)
    in_ns(ns, 'ip', 'link', 'set', peer, 'name', ifname)
    if hwaddr:
        in_ns(ns, 'ip', 'link', 'set', ifname, 'address', hwaddr)
    in_ns(ns, 'ip', 'link', 'set', ifname, 'up')
    return host_end


def dhcp(ns, ifname='eth0'):
    """Run busybox udhcpc once in `ns`; returns the address it got (configured on ifname)."""
    fd, script = tempfile.mkstemp(prefix='udhcpc-', suffix='.sh')
    with os.fdopen(fd, 'w') as f:
        f.write(UDHCPC_SCRIPT)
    os.chmod(script, 0o755)
    try:
        in_ns(ns, 'busybox', 'udhcpc', '-f', '-q', '-n', '-t', '10', '-T', '1',
              '-i', ifname, '-s', script, timeout=60)
    finally:
        os.unlink(script)
    return ipv4_of(ns, ifname)


def ipv4_of(ns, ifname='eth0'):
    from pyroute2 import NetNS
    with contextlib.closing(NetNS(ns)) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        for address in ipr.get_addr(index=index, family=2):
            return address.get_attr('IFA_ADDRESS')
    return None


def ping(ns, address, count=2):
    proc = in_ns(ns, 'busybox', 'ping', '-c', str(count), '-W', '2', address, check=False)
    return proc.returncode == 0


def dnsmasq_pids():
    pids = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/cmdline' % entry, 'rb') as f:
                    cmd = f.read().split(b'\0')
            except OSError:
                continue
            if cmd and cmd[0].endswith(b'dnsmasq'):
                pids.append((int(entry), b' '.join(cmd).decode()))
    return pids


def nft_table_exists(table, ns=None):
    cmd = ('nft', 'list', 'table', 'inet', table)
    proc = in_ns(ns, *cmd, check=False) if ns else run(*cmd, check=False)
    return proc.returncode == 0


def link_exists(name, ns=None):
    cmd = ('ip', 'link', 'show', name)
    proc = in_ns(ns, *cmd, check=False) if ns else run(*cmd, check=False)
    return proc.returncode == 0


def sweep_test_networks(client, prefix='nlxt'):
    """Delete managed networks a failed test left behind (dnsmasq outlives the daemon)."""
    # by name first: reading `managed` fetches the network, and a host veth can vanish meanwhile
    for net in client.networks.all():
        if net.name.startswith(prefix) and net.managed:
            try:
                net.delete()
            except Exception:
                pass
