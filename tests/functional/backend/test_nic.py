"""NIC devices on real containers: bridged with DHCP, reservations and limits, hot-plug and
unplug, physical (a host veth end moved in and back), macvlan, p2p; nothing left behind."""
import ipaddress
import os
import random

import pytest

from nova_lxd.backend.network import netlink
from tests.functional.backend import netns
from tests.functional.backend.busybox_rootfs import cleanup, create_busybox
from tests.functional.backend.instance_net import dhcp, inet, run
from tests.functional.backend.terminal import wait_until


@pytest.fixture(scope='module', autouse=True)
def _sweep_leftover_networks(backend):
    yield
    netns.sweep_test_networks(backend.client())


def raw(node, method, **kwargs):
    return getattr(node.session, method)(node._api_endpoint, **kwargs)


@pytest.fixture(scope='module')
def network(backend):
    client = backend.client()
    name = 'nlxtnic%04x' % random.getrandbits(16)
    client.networks.create(name)
    yield client.networks.get(name)
    client.networks.get(name).delete()


def fresh(client, instance):
    # pylxd's sync() keeps a stale config here; a new GET does not
    return client.instances.get(instance.name)


def _leases(client, network):
    return client.api.networks[network.name].leases.get().json()['metadata']


def _leased(client, network):
    return {lease['hwaddr'] for lease in _leases(client, network)}


def _host_ipv6(link):
    """Whether a host link has IPv6 of its own (a bridge port needs none, as in LXD)."""
    with open('/proc/sys/net/ipv6/conf/%s/disable_ipv6' % link) as f:
        if f.read().strip() == '1':
            return False
    return any(family == 10 for _, family, *_ in netlink.addresses(link))


def links(instance):
    return sorted((instance.state().network or {}).keys())


def test_bridged_nic_gets_dhcp_and_reaches_another_container(backend, network):
    client = backend.client()
    base = ipaddress.ip_interface(network.config['ipv4.address'])
    reserved = str(base.ip + 77)
    nic = {'type': 'nic', 'network': network.name, 'name': 'eth0'}
    a = create_busybox(client, backend, devices={'eth0': dict(nic)})
    b = create_busybox(client, backend, devices={'eth0': dict(nic, **{'ipv4.address': reserved})})
    try:
        a.start(wait=True)
        b.start(wait=True)
        hwaddr = fresh(client, a).config['volatile.eth0.hwaddr']
        host_name = fresh(client, a).config['volatile.eth0.host_name']
        assert hwaddr.startswith('00:16:3e:')
        assert a.state().network['eth0']['hwaddr'] == hwaddr
        assert netlink.link_info(host_name)['master'] == netlink.link_info(network.name)['index']
        assert not _host_ipv6(host_name)      # liblxc made it; the daemon took IPv6 off
        assert '/1.0/instances/%s' % a.name in client.networks.get(network.name).used_by
        address_a = dhcp(a)
        address_b = dhcp(b)
        assert ipaddress.ip_address(address_a) in base.network
        assert address_b == reserved
        code, out = run(a, 'ping', '-c', '2', '-W', '2', address_b)
        assert code == 0, out
        # the network's dnsmasq knows the instances by name
        code, out = run(a, 'nslookup', b.name, str(base.ip))
        assert code == 0 and reserved in out, out
        code, out = run(b, 'nslookup', a.name, str(base.ip))
        assert code == 0 and address_a in out, out
        leases = _leases(client, network)
        fresh_b_hwaddr = fresh(client, b).config['volatile.eth0.hwaddr']
        assert {(lease['hwaddr'], lease['address']) for lease in leases} >= {
            (hwaddr, address_a), (fresh_b_hwaddr, reserved)}
        assert {(lease['hwaddr'], lease['hostname']) for lease in leases} >= {
            (hwaddr, a.name), (fresh_b_hwaddr, b.name)}
        # with a domain the names answer with it too (a restart of both dnsmasq: the leases
        # and their DNS entries are read back)
        domain = {'config': {'dns.domain': 'nlxt.test'}}
        assert raw(client.api.networks[network.name], 'patch', json=domain).status_code == 200
        try:
            code, out = run(a, 'nslookup', '%s.nlxt.test' % b.name, str(base.ip))
            assert code == 0 and reserved in out, out
            code, out = run(b, 'nslookup', a.name, str(base.ip))
            assert code == 0 and address_a in out, out
        finally:
            raw(client.api.networks[network.name], 'patch',
                json={'config': {'dns.domain': None}})
        # the same MAC on the next start
        a.stop(force=True, wait=True)
        assert not netlink.exists(host_name)
        a.start(wait=True)
        assert fresh(client, a).config['volatile.eth0.hwaddr'] == hwaddr
        assert a.state().network['eth0']['hwaddr'] == hwaddr
    finally:
        for inst in (a, b):
            host = fresh(client, inst).config.get('volatile.eth0.host_name')
            cleanup(inst)
            assert host is None or not netlink.exists(host)
    # deleted instances give their leases back (a DHCPRELEASE to dnsmasq), not an hour later,
    # and their names with them
    macs = {hwaddr, fresh_b_hwaddr}
    assert wait_until(lambda: not macs & _leased(client, network))
    dns_entries = os.path.join(backend.data_dir, 'networks', network.name, 'dns.d')
    assert not macs & set(os.listdir(dns_entries))


def test_hotplug_and_unplug_a_bridged_nic(backend, network):
    client = backend.client()
    inst = create_busybox(client, backend)
    try:
        inst.start(wait=True)
        assert 'eth1' not in links(inst)
        inst.devices['eth1'] = {'type': 'nic', 'nictype': 'bridged', 'parent': network.name,
                                'name': 'eth1', 'host_name': 'nlxtplug0'}
        inst.save(wait=True)
        assert 'eth1' in links(inst)
        assert netlink.link_info('nlxtplug0')['master'] == \
            netlink.link_info(network.name)['index']
        assert not _host_ipv6('nlxtplug0')    # the daemon made it without
        assert dhcp(inst, 'eth1') is not None
        # the MAC it was given is recorded, as at a start, and holds the lease
        hwaddr = fresh(client, inst).config['volatile.eth1.hwaddr']
        assert inst.state().network['eth1']['hwaddr'] == hwaddr
        assert hwaddr in _leased(client, network)
        inst = fresh(client, inst)
        del inst.devices['eth1']
        inst.save(wait=True)
        assert 'eth1' not in links(inst)
        assert not netlink.exists('nlxtplug0')
        # removed for good: its lease is given back and its volatile keys are gone
        assert wait_until(lambda: hwaddr not in _leased(client, network))
        assert not [key for key in fresh(client, inst).config
                    if key.startswith('volatile.eth1.')]
    finally:
        cleanup(inst)


def _static(client, network):
    return {(lease['hwaddr'], lease['address']) for lease in _leases(client, network)
            if lease['type'] == 'static'}


def test_a_stopped_instance_keeps_its_address_until_its_nic_goes(backend, network):
    client = backend.client()
    pinned = str(ipaddress.ip_interface(network.config['ipv4.address']).ip + 88)
    nic = {'type': 'nic', 'network': network.name, 'name': 'eth0'}
    inst = create_busybox(client, backend, devices={'eth0': dict(nic)})
    other = create_busybox(client, backend, devices={'eth0': dict(nic, **{
        'ipv4.address': pinned})})
    try:
        inst.start(wait=True)
        assert dhcp(inst) is not None
        hwaddr = fresh(client, inst).config['volatile.eth0.hwaddr']
        other.start(wait=True)
        other_hwaddr = fresh(client, other).config['volatile.eth0.hwaddr']
        inst.stop(force=True, wait=True)
        other.stop(force=True, wait=True)
        # a stop keeps the lease and the reservation, as in LXD: the address stays theirs
        assert hwaddr in _leased(client, network)
        assert (other_hwaddr, pinned) in _static(client, network)
        inst = fresh(client, inst)
        inst.devices['eth0'] = dict(nic, **{'ipv4.address': pinned})
        with pytest.raises(Exception, match='already reserved'):
            inst.save(wait=True)
            inst.start(wait=True)
        # the NIC removed from the stopped instance: its lease goes, its volatile keys too
        inst = fresh(client, inst)
        del inst.devices['eth0']
        inst.save(wait=True)
        assert wait_until(lambda: hwaddr not in _leased(client, network))
        assert not [key for key in fresh(client, inst).config
                    if key.startswith('volatile.eth0.')]
    finally:
        cleanup(inst)
        cleanup(other)
    assert (other_hwaddr, pinned) not in _static(client, network)   # deleted: it is free


def test_physical_nic_moves_a_host_veth_end_in_and_back(backend):
    client = backend.client()
    netns.run('ip', 'link', 'add', 'nlxtphy0', 'type', 'veth', 'peer', 'name', 'nlxtphy1')
    # as the Nova driver describes an OVS/tap port: the port's MAC and the network's MTU
    inst = create_busybox(client, backend, devices={
        'eth0': {'type': 'nic', 'nictype': 'physical', 'parent': 'nlxtphy0', 'name': 'eth0',
                 'hwaddr': 'fa:16:3e:00:00:11', 'mtu': '1450'}})
    try:
        inst.start(wait=True)
        assert 'eth0' in links(inst) and not netlink.exists('nlxtphy0')
        eth0 = inst.state().network['eth0']
        assert (eth0['hwaddr'], eth0['mtu']) == ('fa:16:3e:00:00:11', 1450)
        # the host end (nova's side of the pair) still works with the container's end
        assert netlink.exists('nlxtphy1')
        inst.stop(force=True, wait=True)
        assert netlink.exists('nlxtphy0')
        inst.start(wait=True)
        # unplug while running: back on the host under its own name; hot-plug: in again
        del inst.devices['eth0']
        inst.save(wait=True)
        assert 'eth0' not in links(inst) and netlink.exists('nlxtphy0')
        inst.devices['net9'] = {'type': 'nic', 'nictype': 'physical', 'parent': 'nlxtphy0',
                                'name': 'eth9', 'hwaddr': 'fa:16:3e:00:00:99', 'mtu': '1400'}
        inst.save(wait=True)
        assert 'eth9' in links(inst) and not netlink.exists('nlxtphy0')
        eth9 = inst.state().network['eth9']
        assert (eth9['hwaddr'], eth9['mtu'], eth9['state']) == ('fa:16:3e:00:00:99', 1400, 'up')
        inst.stop(force=True, wait=True)
        assert netlink.exists('nlxtphy0')
    finally:
        cleanup(inst)
        netns.run('ip', 'link', 'del', 'nlxtphy1', check=False)


def test_macvlan_and_p2p(backend):
    client = backend.client()
    netns.run('ip', 'link', 'add', 'nlxtmv0', 'type', 'veth', 'peer', 'name', 'nlxtmv1')
    netns.run('ip', 'link', 'set', 'nlxtmv0', 'up')
    inst = create_busybox(client, backend, devices={
        'eth0': {'type': 'nic', 'nictype': 'macvlan', 'parent': 'nlxtmv0', 'name': 'eth0'},
        'eth1': {'type': 'nic', 'nictype': 'p2p', 'name': 'eth1', 'host_name': 'nlxtp2p0'}})
    try:
        inst.start(wait=True)
        assert {'eth0', 'eth1'} <= set(links(inst))
        assert netlink.link_info('nlxtp2p0')['master'] is None
        assert _host_ipv6('nlxtp2p0')         # routed: its link-local address stays
        inst.devices['eth2'] = {'type': 'nic', 'nictype': 'macvlan', 'parent': 'nlxtmv0',
                                'name': 'eth2'}
        inst.save(wait=True)
        assert 'eth2' in links(inst)
        del inst.devices['eth2']
        inst.save(wait=True)
        assert 'eth2' not in links(inst)
        inst.stop(force=True, wait=True)
        assert not netlink.exists('nlxtp2p0')
    finally:
        cleanup(inst)
        netns.run('ip', 'link', 'del', 'nlxtmv0', check=False)


def test_limits_ingress_shapes_the_host_end(backend, network):
    client = backend.client()
    inst = create_busybox(client, backend, devices={
        'eth0': {'type': 'nic', 'network': network.name, 'name': 'eth0',
                 'host_name': 'nlxtlim0', 'limits.ingress': '10Mbit'}})
    try:
        inst.start(wait=True)
        assert ('tbf', 0x10000) in netlink.qdiscs('nlxtlim0')
        assert not _host_ipv6('nlxtlim0')
        hwaddr = inst.state().network['eth0']['hwaddr']
        # a limits change is applied live, without re-plugging the interface
        inst.devices['eth0'] = dict(inst.devices['eth0'], **{'limits.ingress': '20Mbit'})
        inst.save(wait=True)
        assert ('tbf', 0x10000) in netlink.qdiscs('nlxtlim0')
        assert inst.state().network['eth0']['hwaddr'] == hwaddr
        inst.devices['eth0'] = {k: v for k, v in inst.devices['eth0'].items()
                                if k != 'limits.ingress'}
        inst.save(wait=True)
        assert ('tbf', 0x10000) not in netlink.qdiscs('nlxtlim0')
    finally:
        cleanup(inst)
    # the daemon-made veth (tc needs its host end) is deleted in the background after the stop
    assert wait_until(lambda: not netlink.exists('nlxtlim0'))


def test_limits_egress_is_policed_or_refused_by_name(backend, network):
    """Policing needs the kernel's u32 classifier and police action.

    Without them (as on the development VM) the start is refused with the reason and nothing
    is left.
    """
    client = backend.client()
    inst = create_busybox(client, backend, devices={
        'eth0': {'type': 'nic', 'network': network.name, 'name': 'eth0',
                 'host_name': 'nlxtlim1', 'limits.egress': '5Mbit'}})
    try:
        try:
            inst.start(wait=True)
        except Exception as exc:
            assert 'limits.egress cannot be enforced here' in str(exc)
            assert 'police' in str(exc)
            assert not netlink.exists('nlxtlim1')
        else:
            assert ('ingress', 0xffff0000) in netlink.qdiscs('nlxtlim1')
    finally:
        cleanup(inst)
    assert wait_until(lambda: not netlink.exists('nlxtlim1'))   # as above: in the background


@pytest.mark.parametrize('device, message', [
    ({'type': 'nic', 'nictype': 'bogus'}, 'nictype'),
    ({'type': 'nic', 'nictype': 'bridged'}, 'network or a parent'),
    ({'type': 'nic', 'network': 'x', 'hwaddr': 'zz'}, 'hwaddr'),
    ({'type': 'nic', 'network': 'x', 'limits.ingress': 'fast'}, 'limits.ingress'),
    ({'type': 'nic', 'nictype': 'physical'}, 'parent'),
    ({'type': 'nic', 'nictype': 'p2p', 'ipv4.address': '10.0.0.2'}, 'ipv4.address'),
])
def test_bad_nic_devices_are_refused(backend, device, message):
    client = backend.client()
    resp = raw(client.api.instances, 'post', json={
        'name': 'nlxt-bad', 'source': {'type': 'none'}, 'devices': {'eth0': device}})
    assert resp.status_code == 400 and message in resp.json()['error'], resp.text
    assert not client.instances.exists('nlxt-bad')


def test_a_missing_network_is_refused_at_create(backend):
    # as LXD: refused before anything is made, not at start (test_nic_validation.py has more)
    client = backend.client()
    with pytest.raises(Exception) as err:
        create_busybox(client, backend, name='nlxt-nonet-inst', devices={
            'eth0': {'type': 'nic', 'network': 'nlxt-nonet', 'name': 'eth0',
                     'host_name': 'nlxtgone0'}})
    assert 'nlxt-nonet' in str(err.value)
    assert not client.instances.exists('nlxt-nonet-inst') and not netlink.exists('nlxtgone0')


def test_daemon_restart_keeps_a_running_containers_network():
    from tests.backend_fixture import BackendDaemon
    daemon = BackendDaemon()
    name = 'nlxtrst%04x' % random.getrandbits(16)
    inst = None
    try:
        client = daemon.start()
        client.networks.create(name)
        gateway = ipaddress.ip_interface(client.networks.get(name).config['ipv4.address']).ip
        inst = create_busybox(client, daemon, devices={
            'eth0': {'type': 'nic', 'network': name, 'name': 'eth0'}})
        inst.start(wait=True)
        address = dhcp(inst)
        host_name = fresh(client, inst).config['volatile.eth0.host_name']
        daemon.stop()
        assert netlink.exists(host_name)     # networking stays up without the daemon
        client = daemon.start()
        inst = client.instances.get(inst.name)
        assert inst.status == 'Running' and inet(inst, 'eth0') == address
        code, out = run(inst, 'ping', '-c', '1', '-W', '2', str(gateway))
        assert code == 0, out
        inst.stop(force=True, wait=True)
        assert not netlink.exists(host_name)
    finally:
        if daemon.process:
            if inst is not None:
                cleanup(inst)
            if daemon.client().networks.exists(name):
                daemon.client().networks.get(name).delete()
        daemon.destroy()
    assert not netlink.exists(name)


def test_bridged_nic_on_an_unmanaged_bridge_as_the_nova_driver_describes_it(backend):
    """Linux-bridge / hybrid-OVS ports: parent qbr bridge, host_name = the port's tap name."""
    client = backend.client()
    netns.run('ip', 'link', 'add', 'nlxtqbr0', 'type', 'bridge')
    inst = create_busybox(client, backend, devices={
        'eth0': {'type': 'nic', 'nictype': 'bridged', 'parent': 'nlxtqbr0', 'name': 'eth0',
                 'host_name': 'nlxttap0', 'hwaddr': 'fa:16:3e:00:00:22', 'mtu': '1450'}})
    try:
        inst.start(wait=True)
        assert netlink.link_info('nlxttap0')['master'] == netlink.link_info('nlxtqbr0')['index']
        eth0 = inst.state().network['eth0']
        assert (eth0['hwaddr'], eth0['mtu'], eth0['host_name']) == \
            ('fa:16:3e:00:00:22', 1450, 'nlxttap0')
        net = client.networks.get('nlxtqbr0')
        assert net.managed is False and net.used_by == ['/1.0/instances/%s' % inst.name]
        inst.stop(force=True, wait=True)
        assert not netlink.exists('nlxttap0') and netlink.exists('nlxtqbr0')
    finally:
        cleanup(inst)
        netns.run('ip', 'link', 'del', 'nlxtqbr0', check=False)
