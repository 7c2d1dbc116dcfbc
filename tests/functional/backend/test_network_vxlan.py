"""Two daemons, each playing a host (the second in its own network namespace), whose bridges are
joined by a VXLAN tunnel over a private veth underlay: endpoints on both get DHCP from the first
daemon's dnsmasq and reach each other. Nothing leaves the machine."""
import contextlib
import ipaddress
import os
import random
import sys
import tempfile

import pytest

from tests.backend_fixture import BackendDaemon
from tests.functional.backend import netns


@pytest.fixture(scope='module', autouse=True)
def _sweep_leftover_networks(backend):
    yield
    netns.sweep_test_networks(backend.client())


@contextlib.contextmanager
def daemon_in_namespace(ns, monkeypatch):
    """A BackendDaemon whose process runs inside network namespace `ns`.

    The fixture starts `sys.executable`; a wrapper that execs it under `nsenter --net` keeps
    the same pid, so the fixture stops it as usual. Only the network namespace changes (not
    `ip netns exec`, which also unshares mounts): the daemon's storage mounts stay visible.
    """
    fd, wrapper = tempfile.mkstemp(prefix='nlxt-nspython-', dir='/var/tmp')
    with os.fdopen(fd, 'w') as f:
        f.write('#!/bin/sh\nexec nsenter --net=/run/netns/%s %s "$@"\n' % (ns, sys.executable))
    os.chmod(wrapper, 0o755)
    daemon = BackendDaemon()
    try:
        with monkeypatch.context() as m:
            m.setattr(sys, 'executable', wrapper)
            daemon.start()
        yield daemon
    finally:
        daemon.destroy()
        os.unlink(wrapper)


@contextlib.contextmanager
def underlay(ns):
    """host <-> ns veth with 10.254.77.1/30 (host) and .2 (ns): the hosts' network."""
    host_end, ns_end = 'nlxu%06x' % random.getrandbits(24), 'nlxu%06x' % random.getrandbits(24)
    netns.run('ip', 'link', 'add', host_end, 'type', 'veth', 'peer', 'name', ns_end)
    try:
        netns.run('ip', 'link', 'set', ns_end, 'netns', ns)
        netns.run('ip', 'addr', 'add', '10.254.77.1/30', 'dev', host_end)
        netns.run('ip', 'link', 'set', host_end, 'up')
        netns.in_ns(ns, 'ip', 'addr', 'add', '10.254.77.2/30', 'dev', ns_end)
        netns.in_ns(ns, 'ip', 'link', 'set', ns_end, 'up')
        yield
    finally:
        netns.run('ip', 'link', 'del', host_end, check=False)


def tunnel(local, remote):
    return {'tunnel.hostb.protocol': 'vxlan', 'tunnel.hostb.id': '4242',
            'tunnel.hostb.local': local, 'tunnel.hostb.remote': remote}


def test_endpoints_on_two_daemons_share_a_vxlan_tunnelled_bridge(backend, monkeypatch):
    client_a = backend.client()
    name = 'nlxtvx%04x' % random.getrandbits(16)
    subnet = '10.254.%d.1/24' % random.randint(100, 199)
    with netns.namespace('nlxthb') as host_b, underlay(host_b), \
            daemon_in_namespace(host_b, monkeypatch) as daemon_b:
        client_b = daemon_b.client()
        client_a.networks.create(name, config=dict(
            tunnel('10.254.77.1', '10.254.77.2'), **{'ipv4.address': subnet,
                                                     'ipv4.nat': 'false'}))
        try:
            client_b.networks.create(name, config=dict(
                tunnel('10.254.77.2', '10.254.77.1'), **{'ipv4.address': 'none'}))
            state = client_b.api.networks[name].state.get().json()['metadata']
            assert len(state['bridge']['upper_devices']) == 1   # the vxlan link
            assert netns.link_exists(name, ns=host_b)
            with netns.namespace() as ep_a, netns.namespace() as ep_b:
                netns.plug(ep_a, name)
                netns.plug(ep_b, name, bridge_ns=host_b)
                a = netns.dhcp(ep_a)
                b = netns.dhcp(ep_b)    # served by host A's dnsmasq, through the tunnel
                network = ipaddress.ip_interface(subnet).network
                assert ipaddress.ip_address(a) in network
                assert ipaddress.ip_address(b) in network and a != b
                assert netns.ping(ep_a, b)
                assert netns.ping(ep_b, a)
            client_b.networks.get(name).delete()
            assert not netns.link_exists(name, ns=host_b)
            assert not netns.nft_table_exists('novalxd_' + name, ns=host_b)
        finally:
            client_a.networks.get(name).delete()
    assert not netns.link_exists(name)
    vxlans = [line for line in netns.run('ip', '-d', 'link', 'show', 'type', 'vxlan').stdout
              .splitlines() if 'vxlan id 4242 ' in line]
    assert vxlans == []


def test_containers_on_two_daemons_reach_each_other_over_vxlan(backend, monkeypatch):
    from tests.functional.backend.busybox_rootfs import cleanup, create_busybox
    from tests.functional.backend.instance_net import dhcp
    client_a = backend.client()
    name = 'nlxtvx%04x' % random.getrandbits(16)
    subnet = ipaddress.ip_interface('10.254.%d.1/24' % random.randint(100, 199))
    nic = {'eth0': {'type': 'nic', 'network': name, 'name': 'eth0'}}
    with netns.namespace('nlxthb') as host_b, underlay(host_b), \
            daemon_in_namespace(host_b, monkeypatch) as daemon_b:
        client_b = daemon_b.client()
        client_a.networks.create(name, config=dict(
            tunnel('10.254.77.1', '10.254.77.2'), **{'ipv4.address': str(subnet),
                                                     'ipv4.nat': 'false'}))
        a = b = None
        try:
            client_b.networks.create(name, config=dict(
                tunnel('10.254.77.2', '10.254.77.1'), **{'ipv4.address': 'none'}))
            a = create_busybox(client_a, backend, devices=nic)
            b = create_busybox(client_b, daemon_b, devices=nic)
            a.start(wait=True)
            b.start(wait=True)
            address_a, address_b = dhcp(a), dhcp(b)
            assert ipaddress.ip_address(address_b) in subnet.network   # via the tunnel
            result = a.execute(['ping', '-c', '2', '-W', '2', address_b])
            assert result.exit_code == 0, result.stdout
            result = b.execute(['ping', '-c', '2', '-W', '2', address_a])
            assert result.exit_code == 0, result.stdout
        finally:
            for inst in (a, b):
                if inst is not None:
                    cleanup(inst)
            if client_b.networks.exists(name):
                client_b.networks.get(name).delete()
            client_a.networks.get(name).delete()
    assert not netns.link_exists(name)


def test_tunnel_config_change_replaces_the_vxlan_link(client):
    name = 'nlxtvx%04x' % random.getrandbits(16)
    client.networks.create(name, config=dict(tunnel('127.0.0.1', '127.0.0.2'),
                                             **{'ipv4.address': 'none'}))
    try:
        net = client.networks.get(name)
        first = client.api.networks[name].state.get().json()['metadata']['bridge'][
            'upper_devices']
        net.config['tunnel.hostb.id'] = '4343'
        net.config['tunnel.hostb.port'] = '4790'
        net.config['tunnel.hostb.interface'] = 'lo'
        net.save()
        second = client.api.networks[name].state.get().json()['metadata']['bridge'][
            'upper_devices']
        assert len(first) == len(second) == 1 and first != second
        assert not netns.link_exists(first[0])
        details = netns.run('ip', '-d', 'link', 'show', second[0]).stdout
        assert 'vxlan id 4343' in details and 'remote 127.0.0.2' in details
        assert 'dev lo' in details and 'dstport 4790' in details
        for key in ('port', 'interface'):
            del net.config['tunnel.hostb.' + key]
        del net.config['tunnel.hostb.protocol']
        del net.config['tunnel.hostb.id']
        del net.config['tunnel.hostb.local']
        del net.config['tunnel.hostb.remote']
        net.save()
        assert client.api.networks[name].state.get().json()['metadata']['bridge'][
            'upper_devices'] == []
        assert not netns.link_exists(second[0])
    finally:
        client.networks.get(name).delete()
