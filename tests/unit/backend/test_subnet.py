"""Subnet choice and network config validation: pure functions, no root, no daemon."""
import ipaddress
import os
import random

import pytest

from nova_lxd.backend import daemon
from nova_lxd.backend.config import DaemonConfig
from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.instances.devices.nic import parse_rate
from nova_lxd.backend.network import service, subnet
from nova_lxd.backend.network.dnsmasq import Dnsmasq

HOST_ADDRESSES = [('eth0', 2, '192.0.2.2', 24, 0), ('lo', 2, '127.0.0.1', 8, 254),
                  ('br9', 2, '10.7.7.1', 24, 0), ('eth0', 10, 'fe80::1', 64, 253)]
HOST_ROUTES = [('eth0', 2, None, 0), ('eth0', 2, '192.0.2.0', 24),
               ('tun0', 2, '10.128.0.0', 9)]


def test_used_networks_ignores_the_default_route_and_one_interface():
    used = subnet.used_networks(HOST_ADDRESSES, HOST_ROUTES, ignore_interface='br9')
    assert ipaddress.ip_network('0.0.0.0/0') not in used
    assert ipaddress.ip_network('10.128.0.0/9') in used
    assert ipaddress.ip_network('10.7.7.0/24') not in used
    assert ipaddress.ip_network('192.0.2.0/24') in used


def test_choice_avoids_every_used_network():
    used = subnet.used_networks(HOST_ADDRESSES, HOST_ROUTES)
    rng = random.Random(1)
    for _ in range(300):
        chosen = ipaddress.ip_interface(subnet.choose_ipv4(used, rng))
        assert chosen.network.prefixlen == 24 and chosen.ip == chosen.network[1]
        assert chosen.network.subnet_of(ipaddress.ip_network('10.0.0.0/9'))
        assert not any(chosen.network.overlaps(net) for net in used)


def test_choice_fails_when_everything_is_taken():
    with pytest.raises(LookupError):
        subnet.choose_ipv4([ipaddress.ip_network('10.0.0.0/8')], random.Random(0), attempts=50)


def test_ipv6_choice_is_a_ula_64():
    chosen = ipaddress.ip_interface(subnet.choose_ipv6([], random.Random(3)))
    assert chosen.network.prefixlen == 64 and chosen.network.subnet_of(subnet.IPV6_POOL)


@pytest.mark.parametrize('value', ['10.0.0.0/24', '10.0.0.255/24', '10.0.0.1', 'fd42::1/64'])
def test_gateway_must_be_a_host_address_with_prefix(value):
    with pytest.raises(ValueError):
        subnet.parse_cidr_gateway(value, 4)


def test_default_dhcp_range_skips_the_gateway():
    assert subnet.default_dhcp_range(ipaddress.ip_interface('10.1.2.1/24')) == \
        '10.1.2.2-10.1.2.254'
    assert subnet.default_dhcp_range(ipaddress.ip_interface('10.1.2.254/24')) == \
        '10.1.2.1-10.1.2.253'


@pytest.mark.parametrize('config', [
    {'ipv4.address': '10.1.2.1/24', 'ipv4.dhcp.ranges': '10.1.2.9-10.1.2.2'},
    {'ipv4.address': '10.1.2.1/24', 'ipv4.dhcp.ranges': '10.1.2.2-10.1.3.2'},
    {'ipv4.address': 'none', 'ipv4.dhcp.ranges': '10.1.2.2-10.1.2.9'},
    {'tunnel.a.protocol': 'vxlan', 'tunnel.a.remote': '10.0.0.300'},
    {'tunnel.a.protocol': 'vxlan', 'tunnel.a.remote': '10.0.0.3', 'tunnel.a.id': '16777216'},
    {'tunnel.a.bogus': '1'},
    {'bridge.mtu': '100'},
    {'ipv4.address': 5},
    {'ipv4.routing': 'false'},
    {'dns.mode': 'sometimes'},
])
def test_invalid_network_configs(config):
    with pytest.raises(BadRequest):
        service.validate_config(config)


def test_valid_network_config_and_tunnel_parsing():
    config = {'ipv4.address': '10.1.2.1/24', 'ipv4.dhcp.ranges': '10.1.2.10-10.1.2.20',
              'ipv4.nat': 'true', 'dns.domain': 'lxd', 'user.x': 'y',
              'tunnel.a.protocol': 'vxlan', 'tunnel.a.id': '9', 'tunnel.a.remote': '10.0.0.3',
              'tunnel.a.local': '10.0.0.2'}
    service.validate_config(config)
    assert service.tunnels(config) == {'a': {'protocol': 'vxlan', 'id': '9',
                                             'remote': '10.0.0.3', 'local': '10.0.0.2'}}
    one = service.tunnel_link_name('n', 'a', service.tunnels(config)['a'])
    changed = dict(service.tunnels(config)['a'], id='10')
    assert len(one) <= 15 and one != service.tunnel_link_name('n', 'a', changed)


def test_rates():
    assert parse_rate('10Mbit') == 10_000_000
    assert parse_rate('1.5gbit') == 1_500_000_000
    assert parse_rate('800') == 800
    with pytest.raises(ValueError):
        parse_rate('10MB/s')


def test_dnsmasq_commands_and_reservations(tmp_path):
    server = Dnsmasq(str(tmp_path), 'n1', 'n1')
    dhcp, dns = server.commands(ipv4=ipaddress.ip_interface('10.1.2.1/24'),
                                dhcp_ranges=[('10.1.2.2', '10.1.2.9')], domain='lxd')
    for cmd in (dhcp, dns):
        for option in ('--strict-order', '--bind-interfaces', '--except-interface=lo',
                       '--interface=n1', '--listen-address=10.1.2.1', '--domain=lxd'):
            assert option in cmd
    # the DHCP one: no DNS of its own, the DNS one's address handed out, names by lease-event
    for option in ('--port=0', '--dhcp-range=10.1.2.2,10.1.2.9,1h',
                   '--dhcp-leasefile=%s/dnsmasq.leases' % tmp_path,
                   '--dhcp-hostsdir=%s/dnsmasq.hosts.d' % tmp_path,
                   '--dhcp-script=%s/lease-event' % tmp_path,
                   '--dhcp-option=option:dns-server,0.0.0.0',
                   '--pid-file=%s/dnsmasq.pid' % tmp_path):
        assert option in dhcp
    # the DNS one: the leases' names, nothing forwarded, no DHCP
    for option in ('--hostsdir=%s/dns.d' % tmp_path, '--expand-hosts', '--local=//',
                   '--local=/lxd/', '--no-resolv', '--pid-file=%s/dns.pid' % tmp_path):
        assert option in dns
    assert not [option for option in dns if option.startswith('--dhcp')]
    assert '--port=0' not in dns
    assert server.pin('00:16:3E:00:00:01', '10.1.2.50') is True
    assert server.pin('00:16:3e:00:00:01', '10.1.2.50') is False
    assert server.set_name('00:16:3e:00:00:01', 'c1') is True
    assert server.set_name('00:16:3e:00:00:02', 'c2', 'fd42::216:3eff:fe00:2') is True
    assert server.set_name('00:16:3e:00:00:02', 'c2', 'fd42::216:3eff:fe00:2') is False
    assert server.reservations() == {'00:16:3e:00:00:01': '10.1.2.50'}
    assert (server.name('00:16:3E:00:00:01'), server.name('00:16:3e:00:00:02')) == ('c1', 'c2')
    # one file per MAC in the directory the DHCP dnsmasq watches: pinned addresses only
    assert sorted(os.listdir(server.hosts_dir)) == ['00-16-3e-00-00-01']
    with open(os.path.join(server.hosts_dir, '00-16-3e-00-00-01')) as f:
        assert f.read() == '00:16:3e:00:00:01,10.1.2.50\n'
    server.forget('00:16:3e:00:00:01')
    server.forget('00:16:3e:00:00:02')
    server.forget('00:16:3e:00:00:02')
    assert server.reservations() == {} and server.name('00:16:3e:00:00:01') == ''
    assert os.listdir(server.hosts_dir) == [] and os.listdir(server.names_dir) == []
    assert server.dhcp.pid() is None and server.dns.pid() is None  # no pid file: none adopted
    dhcp, dns = server.commands(ipv4=ipaddress.ip_interface('10.1.2.1/24'), dns=False)
    assert dns is None and not [option for option in dhcp if 'dns-server' in option]


def test_dnsmasq_forwards_other_names_to_the_resolv_file_but_never_its_own():
    """Upstream servers from a resolv file (LXD's way); plain names and the domain stay local."""
    server = Dnsmasq('/n', 'n1', 'n1')
    gateway = ipaddress.ip_interface('10.1.2.1/24')
    closed_dhcp, closed = server.commands(ipv4=gateway, domain='lxd')
    dhcp, dns = server.commands(ipv4=gateway, domain='lxd', resolv_file='/etc/resolv.conf')
    assert '--resolv-file=/etc/resolv.conf' in dns
    assert '--no-resolv' not in dns and '--local=//' not in dns
    for option in ('--domain-needed', '--local=/lxd/', '--domain=lxd', '--expand-hosts'):
        assert option in dns
    # only the DNS one changes: an upgrade restarts it, not the DHCP one and its leases
    assert dhcp == closed_dhcp and not [option for option in dhcp if 'resolv' in option]
    assert set(closed) - set(dns) == {'--no-resolv', '--local=//'}
    assert set(dns) - set(closed) == {'--resolv-file=/etc/resolv.conf'}
    # forwarding nothing is the command of the versions before: adopted, not restarted
    assert closed == ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null',
                      '--strict-order', '--bind-interfaces', '--except-interface=lo',
                      '--interface=n1', '--pid-file=/n/dns.pid', '--no-resolv',
                      '--hostsdir=/n/dns.d', '--domain-needed', '--local=//',
                      '--listen-address=10.1.2.1', '--domain=lxd', '--expand-hosts',
                      '--local=/lxd/']
    # without a domain the instances' names are plain names: --domain-needed keeps them here
    _, dns = server.commands(ipv4=gateway, resolv_file='/etc/resolv.conf')
    assert '--domain-needed' in dns and not [option for option in dns
                                             if option.startswith('--local=')]


@pytest.mark.parametrize('text, expected', [
    ('', '/etc/resolv.conf'),
    ('dns_resolv_file =\n', ''),
    ('dns_resolv_file = /run/upstream.conf\n', '/run/upstream.conf')])
def test_daemon_config_names_the_resolv_file_of_managed_networks(tmp_path, text, expected):
    conf = tmp_path / 'backend.conf'
    conf.write_text('[backend]\n' + text)
    assert DaemonConfig.load(str(conf)).dns_resolv_file == expected


def test_daemon_config_refuses_a_resolv_file_in_a_missing_directory(tmp_path):
    """dnsmasq would not start at all (it watches the directory): said at once, by name."""
    conf = tmp_path / 'backend.conf'
    conf.write_text('[backend]\ndns_resolv_file = %s/gone/resolv.conf\n' % tmp_path)
    with pytest.raises(ValueError, match='dns_resolv_file .*/gone/resolv.conf: there is no '
                                         'directory .*/gone$'):
        DaemonConfig.load(str(conf))
    conf.write_text('[backend]\ndns_resolv_file = %s/resolv.conf\n' % tmp_path)
    assert DaemonConfig.load(str(conf)).dns_resolv_file == '%s/resolv.conf' % tmp_path


def test_the_daemon_names_a_bad_config_value_and_exits(tmp_path, capsys):
    conf = tmp_path / 'backend.conf'
    conf.write_text('[backend]\ndns_resolv_file = %s/gone/resolv.conf\n' % tmp_path)
    assert daemon.main(['--config-file', str(conf), '--data-dir', str(tmp_path / 'd')]) == 1
    assert capsys.readouterr().err == (
        'nova-lxd-backend: %s: dns_resolv_file %s/gone/resolv.conf: there is no directory '
        '%s/gone\n' % (conf, tmp_path, tmp_path))
    assert not (tmp_path / 'd').exists()        # nothing made


def test_dnsmasq_migrates_the_entries_of_earlier_versions(tmp_path):
    """One file of all entries, then one per MAC with the names: now names and pinned files."""
    server = Dnsmasq(str(tmp_path), 'n1', 'n1')
    with open(server.old_hosts_file, 'w') as f:
        f.write('00:16:3e:00:00:01,10.1.2.50,c1\n00:16:3e:00:00:02,c2\n')
    os.makedirs(server.hosts_dir)
    for mac, entry in (('00-16-3e-00-00-03', '00:16:3e:00:00:03,c3'),
                       ('00-16-3e-00-00-04', '00:16:3e:00:00:04,10.1.2.60,c4'),
                       ('00-16-3e-00-00-05', '00:16:3e:00:00:05,10.1.2.70'),
                       ('.00-16-3e-00-00-06.tmp', '00:16:3e:00:00:06,c6')):
        with open(os.path.join(server.hosts_dir, mac), 'w') as f:
            f.write(entry + '\n')
    server._migrate()
    assert server.reservations() == {'00:16:3e:00:00:01': '10.1.2.50',
                                     '00:16:3e:00:00:04': '10.1.2.60',
                                     '00:16:3e:00:00:05': '10.1.2.70'}
    assert [server.name('00:16:3e:00:00:0%d' % i) for i in range(1, 7)] == [
        'c1', 'c2', 'c3', 'c4', '', '']
    assert sorted(os.listdir(server.hosts_dir)) == [
        '00-16-3e-00-00-01', '00-16-3e-00-00-04', '00-16-3e-00-00-05']
    assert not os.path.exists(server.old_hosts_file)


def test_the_slaac_address_is_named_where_dnsmasq_s_ra_names_did():
    """EUI-64 from the MAC in the network's /64, with ipv6.dhcp.stateful only."""
    config = {'ipv6.address': 'fd42:1::1/64', 'ipv6.dhcp.stateful': 'true'}
    mac = '00:16:3e:aa:bb:cc'
    assert service._slaac_address(config, mac) == 'fd42:1::216:3eff:feaa:bbcc'
    assert service._slaac_address(dict(config, **{'ipv6.dhcp.stateful': 'false'}), mac) is None
    assert service._slaac_address(dict(config, **{'ipv6.address': 'fd42:1::1/80'}), mac) is None
    assert service._slaac_address({'ipv6.dhcp.stateful': 'true'}, mac) is None
