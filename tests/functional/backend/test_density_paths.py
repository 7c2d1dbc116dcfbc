"""What keeps a start's cost flat as containers accumulate (density, issue 10), on real containers.

A bridged nic without an mtu of its own takes its bridge's MTU; the daemon writes it into the
LXC config, so liblxc does not find it by dumping every link of the host at each start.
"""
import os
import random

import pytest

from nova_lxd.backend.network import netlink
from tests.functional.backend import netns
from tests.functional.backend.busybox_rootfs import cleanup, create_busybox


def _lxc_config(backend, name):
    with open(os.path.join(backend.data_dir, 'containers', name, 'config')) as f:
        return [line.strip() for line in f]


@pytest.fixture
def bridge():
    """An unmanaged bridge with MTU 1420, removed after the test."""
    name = 'nlxtmtu%04x' % random.getrandbits(16)
    netns.run('ip', 'link', 'add', name, 'mtu', '1420', 'type', 'bridge')
    yield name
    netns.run('ip', 'link', 'del', name, check=False)


@pytest.fixture
def start_on(backend):
    """start_on(bridge, **nic): a running busybox with eth0 on the bridge; cleaned up after."""
    made = []

    def start(bridge, **nic):
        inst = create_busybox(backend.client(), backend, devices={'eth0': dict(
            {'type': 'nic', 'nictype': 'bridged', 'parent': bridge, 'name': 'eth0'}, **nic)})
        made.append(inst)
        inst.start(wait=True)
        return inst
    yield start
    for inst in made:
        cleanup(inst)


def test_bridged_nic_without_mtu_takes_the_bridges_from_the_lxc_config(backend, bridge,
                                                                       start_on):
    inst = start_on(bridge)
    assert 'lxc.net.0.mtu = 1420' in _lxc_config(backend, inst.name)
    eth0 = inst.state().network['eth0']
    assert eth0['mtu'] == 1420
    assert netlink.link_info(eth0['host_name'])['mtu'] == 1420
    assert netlink.mtu(bridge) == 1420


def test_an_explicit_nic_mtu_still_wins(backend, bridge, start_on):
    inst = start_on(bridge, mtu='1300')
    assert [line for line in _lxc_config(backend, inst.name)
            if line.startswith('lxc.net.0.mtu')] == ['lxc.net.0.mtu = 1300']
    assert inst.state().network['eth0']['mtu'] == 1300


def test_mtu_of_a_missing_link_is_none():
    assert netlink.mtu('nlxtabsent0') is None
