"""What keeps a start's cost flat as containers accumulate (density, issue 10), on real containers.

A bridged nic without an mtu of its own takes its bridge's MTU; the daemon writes it into the
LXC config, so liblxc does not find it by dumping every link of the host at each start.
"""
import os
import random

from nova_lxd.backend.network import netlink
from tests.functional.backend import netns
from tests.functional.backend.busybox_rootfs import cleanup, create_busybox


def _lxc_config(backend, name):
    with open(os.path.join(backend.data_dir, 'containers', name, 'config')) as f:
        return [line.strip() for line in f]


def test_bridged_nic_without_mtu_takes_the_bridges_from_the_lxc_config(backend):
    client = backend.client()
    bridge = 'nlxtmtu%04x' % random.getrandbits(16)
    netns.run('ip', 'link', 'add', bridge, 'mtu', '1420', 'type', 'bridge')
    inst = None
    try:
        inst = create_busybox(client, backend, devices={
            'eth0': {'type': 'nic', 'nictype': 'bridged', 'parent': bridge, 'name': 'eth0'}})
        inst.start(wait=True)
        assert 'lxc.net.0.mtu = 1420' in _lxc_config(backend, inst.name)
        eth0 = inst.state().network['eth0']
        assert eth0['mtu'] == 1420
        assert netlink.link_info(eth0['host_name'])['mtu'] == 1420
        assert netlink.mtu(bridge) == 1420
    finally:
        if inst is not None:
            cleanup(inst)
        netns.run('ip', 'link', 'del', bridge, check=False)


def test_an_explicit_nic_mtu_still_wins(backend):
    client = backend.client()
    bridge = 'nlxtmtu%04x' % random.getrandbits(16)
    netns.run('ip', 'link', 'add', bridge, 'mtu', '1420', 'type', 'bridge')
    inst = None
    try:
        inst = create_busybox(client, backend, devices={
            'eth0': {'type': 'nic', 'nictype': 'bridged', 'parent': bridge, 'name': 'eth0',
                     'mtu': '1300'}})
        inst.start(wait=True)
        assert [line for line in _lxc_config(backend, inst.name)
                if line.startswith('lxc.net.0.mtu')] == ['lxc.net.0.mtu = 1300']
        assert inst.state().network['eth0']['mtu'] == 1300
    finally:
        if inst is not None:
            cleanup(inst)
        netns.run('ip', 'link', 'del', bridge, check=False)


def test_mtu_of_a_missing_link_is_none():
    assert netlink.mtu('nlxtabsent0') is None
