"""The busybox image's DHCP client script configures a NIC from a lease.

The image's own udhcpc and default.script run chrooted in its extracted rootfs, in a network
namespace plugged into a bundled-backend network (a bridge with dnsmasq): the same programs a
container runs at boot, until the backend's nic device lands for a whole-container test.
"""
import contextlib
import ipaddress
import random
import subprocess

import pytest

from tests import images
from tests.functional.backend import netns
from tests.functional.image import disks


@pytest.fixture
def network(client):
    name = 'nlxim%05x' % random.getrandbits(20)
    client.networks.create(name)
    try:
        yield client.networks.get(name)
    finally:
        if client.networks.exists(name):
            client.networks.get(name).delete()


def test_udhcpc_script_sets_address_route_and_dns(network, tmp_path):
    rootfs = disks.extract_rootfs(images.busybox_image(), str(tmp_path / 'rootfs'))
    gateway = ipaddress.ip_interface(network.config['ipv4.address'])
    with netns.namespace('nlxi') as ns:
        with contextlib.ExitStack() as stack:
            host_end = netns.plug(ns, network.name)
            stack.callback(subprocess.run, ['ip', 'link', 'del', host_end],
                           stderr=subprocess.DEVNULL)
            proc = netns.in_ns(ns, 'chroot', rootfs, '/sbin/udhcpc', '-f', '-q', '-n',
                               '-t', '10', '-T', '1', '-i', 'eth0',
                               '-s', '/usr/share/udhcpc/default.script', check=False)
            assert proc.returncode == 0, proc.stderr
            address = netns.ipv4_of(ns, 'eth0')
            assert ipaddress.ip_address(address) in gateway.network
            routes = netns.in_ns(ns, 'ip', '-4', 'route', 'show', 'default').stdout
            assert 'default via %s dev eth0' % gateway.ip in routes
            with open('%s/etc/resolv.conf' % rootfs) as f:
                assert 'nameserver %s' % gateway.ip in f.read()
