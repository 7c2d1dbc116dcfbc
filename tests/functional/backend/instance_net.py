"""A busybox container's side of its network: commands in it, an IPv4 lease by DHCP."""

# udhcpc's script: it only adds the address (the NIC tests need no route or resolv.conf)
DHCP_SCRIPT = b"""#!/bin/sh
case "$1" in
  bound|renew) ip addr add "$ip/$mask" dev "$interface" ;;
esac
"""


def run(instance, *cmd):
    """(exit code, stdout) of a command in a running instance."""
    result = instance.execute(list(cmd))
    return result.exit_code, result.stdout


def dhcp(instance, ifname='eth0'):
    """Lease an address for `ifname` from its network's dnsmasq; the address."""
    instance.files.put('/dhcp.sh', DHCP_SCRIPT, mode='0755')
    code, out = run(instance, 'udhcpc', '-f', '-q', '-n', '-t', '10', '-T', '1', '-i', ifname,
                    '-s', '/dhcp.sh')
    assert code == 0, out
    return inet(instance, ifname)


def inet(instance, ifname):
    """The IPv4 address of `ifname` as the API reports it, or None."""
    state = instance.state()
    for address in (state.network or {}).get(ifname, {}).get('addresses', []):
        if address['family'] == 'inet':
            return address['address']
    return None
