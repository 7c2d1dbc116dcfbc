"""Managed bridges through the API: lifecycle, dnsmasq, nftables, DHCP, restarts (real kernel)."""
import ipaddress
import os
import random
import subprocess

import pytest

from nova_lxd.backend.network import netlink
from tests.backend_fixture import BackendDaemon
from tests.functional.backend import netns
from tests.functional.backend.busybox_rootfs import cleanup, create_busybox
from tests.functional.backend.dns_responder import responder
from tests.functional.backend.instance_net import dhcp, run
from tests.functional.backend.terminal import wait_until


@pytest.fixture(scope='module', autouse=True)
def _sweep_leftover_networks(backend):
    yield
    netns.sweep_test_networks(backend.client())


def raw(node, method, **kwargs):
    """The HTTP response of a pylxd API node, without pylxd raising on errors."""
    return getattr(node.session, method)(node._api_endpoint, **kwargs)


def _name():
    return 'nlxtn%05x' % random.getrandbits(20)


@pytest.fixture
def network(client):
    name = _name()
    client.networks.create(name)
    yield client.networks.get(name)
    if client.networks.exists(name):
        client.networks.get(name).delete()


def _dnsmasq(name):
    """{pid: command line} of the network's dnsmasq processes.

    The DHCP one's script helper, its child, has the same command line.
    """
    return {p: c for p, c in netns.dnsmasq_pids() if '--interface=%s ' % name in c + ' '}


def _pids(name):
    """{'dhcp': pids, 'dns': pids} of the network's dnsmasq processes."""
    pids = {'dhcp': set(), 'dns': set()}
    for pid, cmd in _dnsmasq(name).items():
        pids['dns' if '/dns.pid' in cmd else 'dhcp'].add(pid)
    return pids


def _leftovers(name):
    """What of a network is on the host; its dnsmasq by role: {'dhcp': cmd, 'dns': cmd}."""
    roles = {}
    for cmd in _dnsmasq(name).values():
        roles['dns' if '/dns.pid' in cmd else 'dhcp'] = cmd
    return {'bridge': netns.link_exists(name),
            'nft': netns.nft_table_exists('novalxd_' + name), 'dnsmasq': roles}


def test_create_without_subnet_gets_free_private_24_and_delete_leaves_nothing(client):
    name = _name()
    before = [ipaddress.ip_interface('%s/%d' % (a, p)).network
              for _, fam, a, p, _ in netlink.addresses() if fam == 2]
    client.networks.create(name)
    net = client.networks.get(name)
    assert net.managed is True and net.type == 'bridge'
    gateway = ipaddress.ip_interface(net.config['ipv4.address'])
    assert gateway.network.prefixlen == 24 and gateway.network.is_private
    assert not any(gateway.network.overlaps(other) for other in before)
    assert net.config['ipv4.nat'] == 'true'
    left = _leftovers(name)
    assert left['bridge'] and left['nft'] and set(left['dnsmasq']) == {'dhcp', 'dns'}
    for cmd in left['dnsmasq'].values():
        assert '--listen-address=%s' % gateway.ip in cmd
    assert '--dhcp-leasefile=' in left['dnsmasq']['dhcp']
    assert '--port=0' in left['dnsmasq']['dhcp'] and '--hostsdir=' in left['dnsmasq']['dns']
    state = client.api.networks[name].state.get().json()['metadata']
    assert {'family': 'inet', 'address': str(gateway.ip), 'netmask': '24',
            'scope': 'global'} in state['addresses']
    assert state['state'] == 'up' and state['bridge'] is not None
    net.delete()
    assert _leftovers(name) == {'bridge': False, 'nft': False, 'dnsmasq': {}}
    assert not client.networks.exists(name)


def test_two_auto_networks_never_share_a_subnet(client):
    names = [_name(), _name()]
    try:
        for name in names:
            client.networks.create(name)
        subnets = [ipaddress.ip_interface(client.networks.get(n).config['ipv4.address']).network
                   for n in names]
        assert not subnets[0].overlaps(subnets[1])
    finally:
        for name in names:
            if client.networks.exists(name):
                client.networks.get(name).delete()


@pytest.mark.parametrize('config, message', [
    ({'ipv4.address': '10.0.0.0/24'}, 'network or broadcast'),
    ({'ipv4.address': 'banana'}, 'ipv4.address'),
    ({'bogus.key': '1'}, 'bogus.key'),
    ({'ipv4.address': '10.251.3.1/24', 'ipv4.dhcp.ranges': '10.9.9.2-10.9.9.9'}, 'DHCP range'),
    ({'ipv4.nat': 'maybe'}, 'ipv4.nat'),
    ({'tunnel.t.protocol': 'gre', 'tunnel.t.remote': '10.1.1.1'}, 'vxlan'),
    ({'tunnel.t.protocol': 'vxlan'}, 'remote'),
])
def test_bad_config_is_refused_and_nothing_is_left(client, config, message):
    name = _name()
    resp = raw(client.api.networks, 'post', json={'name': name, 'config': config})
    assert resp.status_code == 400
    assert resp.json()['type'] == 'error' and message in resp.json()['error']
    assert not client.networks.exists(name)
    assert _leftovers(name) == {'bridge': False, 'nft': False, 'dnsmasq': {}}


def test_subnet_used_by_the_host_is_refused(client):
    host_route = next(ipaddress.ip_network('%s/%d' % (dst, length))
                      for _, fam, dst, length in netlink.routes()
                      if fam == 2 and dst and 8 < length < 31)
    name = _name()
    resp = raw(client.api.networks, 'post', json={
        'name': name, 'config': {'ipv4.address': '%s/%d' % (host_route[1] + 5,
                                                            host_route.prefixlen)}})
    assert resp.status_code == 400 and 'overlaps' in resp.json()['error']
    assert not netns.link_exists(name)


def test_bad_names_and_duplicates(client, network):
    assert raw(client.api.networks, 'post', json={'name': '1abc'}).status_code == 400
    assert raw(client.api.networks, 'post', json={'name': 'x' * 16}).status_code == 400
    assert raw(client.api.networks, 'post', json={'name': network.name}).status_code == 409
    assert raw(client.api.networks, 'post', json={'name': 'lo'}).status_code == 409
    assert raw(client.api.networks['nope-none'], 'get').status_code == 404


def test_put_patch_restart_dnsmasq_with_new_ranges(client, network):
    base = network.config['ipv4.address'].rsplit('.', 1)[0]
    old = _dnsmasq(network.name)
    network.config['ipv4.dhcp.ranges'] = '%s.50-%s.60' % (base, base)
    network.config['dns.domain'] = 'novalxd.test'
    network.save()
    assert client.networks.get(network.name).config['ipv4.dhcp.ranges'] == '%s.50-%s.60' % (
        base, base)
    assert not set(_dnsmasq(network.name)) & set(old)       # both restarted
    roles = _leftovers(network.name)['dnsmasq']
    assert '--dhcp-range=%s.50,%s.60,1h' % (base, base) in roles['dhcp']
    assert '--domain=novalxd.test' in roles['dhcp'] and '--domain=novalxd.test' in roles['dns']
    # PATCH: a new subnet moves the bridge address and dnsmasq
    resp = raw(client.api.networks[network.name], 'patch', json={'config': {
        'ipv4.address': '10.252.%d.1/24' % random.randint(0, 255), 'ipv4.dhcp.ranges': None,
        'description': None}})
    assert resp.status_code == 200, resp.text
    new = client.networks.get(network.name)
    gateway = ipaddress.ip_interface(new.config['ipv4.address'])
    assert 'ipv4.dhcp.ranges' not in new.config and new.config['dns.domain'] == 'novalxd.test'
    assert [a for _, f, a, _, _ in netlink.addresses(network.name) if f == 2] == [str(gateway.ip)]
    # a bad PATCH changes nothing
    resp = raw(client.api.networks[network.name], 'patch',
               json={'config': {'ipv4.address': 'nope'}})
    assert resp.status_code == 400
    assert client.networks.get(network.name).config['ipv4.address'] == str(gateway)


def test_rename_moves_bridge_dnsmasq_and_table(client, network):
    old = network.name
    new = _name()
    try:
        resp = raw(client.api.networks[old], 'post', json={'name': new})
        assert resp.status_code == 201, resp.text
        assert _leftovers(old) == {'bridge': False, 'nft': False, 'dnsmasq': {}}
        left = _leftovers(new)
        assert left['bridge'] and left['nft'] and set(left['dnsmasq']) == {'dhcp', 'dns'}
        assert client.networks.get(new).config['ipv4.address'] == network.config['ipv4.address']
    finally:
        if client.networks.exists(new):
            client.networks.get(new).delete()


def test_unmanaged_host_interfaces_are_listed(client, network):
    nets = {n.name: n for n in client.networks.all()}
    assert nets['lo'].managed is False and nets['lo'].type == 'loopback'
    assert nets[network.name].managed is True
    resp = raw(client.api.networks['lo'], 'put', json={'config': {}})
    assert resp.status_code == 400 and 'not managed' in resp.json()['error']
    assert raw(client.api.networks['lo'], 'delete').status_code == 400
    assert netns.link_exists('lo')


def test_dhcp_leases_and_reachability_between_two_endpoints(client, network):
    gateway = ipaddress.ip_interface(network.config['ipv4.address'])
    with netns.namespace() as ns1, netns.namespace() as ns2:
        netns.plug(ns1, network.name, hwaddr='00:16:3e:00:aa:01')
        netns.plug(ns2, network.name, hwaddr='00:16:3e:00:aa:02')
        a1, a2 = netns.dhcp(ns1), netns.dhcp(ns2)
        assert ipaddress.ip_address(a1) in gateway.network
        assert ipaddress.ip_address(a2) in gateway.network and a1 != a2
        assert netns.ping(ns1, a2) and netns.ping(ns2, str(gateway.ip))
        leases = client.api.networks[network.name].leases.get().json()['metadata']
        by_mac = {lease['hwaddr']: lease for lease in leases}
        assert by_mac['00:16:3e:00:aa:01']['address'] == a1
        assert by_mac['00:16:3e:00:aa:02']['type'] == 'dynamic'
        state = client.api.networks[network.name].state.get().json()['metadata']
        assert len(state['bridge']['upper_devices']) == 2
        assert state['counters']['packets_received'] > 0


def test_delete_refused_while_a_profile_uses_it(backend, client, network):
    # profiles belong to another service; the db document is what used_by reads
    from nova_lxd.backend.db import Database
    db = Database(backend.data_dir + '/nova-lxd.db')
    try:
        db.put('profile', 'nlxt-user', {'name': 'nlxt-user', 'devices': {
            'eth0': {'type': 'nic', 'network': network.name, 'name': 'eth0'}}})
        assert client.networks.get(network.name).used_by == ['/1.0/profiles/nlxt-user']
        resp = raw(client.api.networks[network.name], 'delete')
        assert resp.status_code == 400 and 'in use' in resp.json()['error']
        assert netns.link_exists(network.name)
    finally:
        db.delete('profile', 'nlxt-user')
        db.close()


def _destroy(daemon, name):
    """A private daemon's end: its network `name` deleted if it is still there, then itself.

    A test that failed while the daemon was stopped left the network on the host: the daemon
    is started again to delete it.
    """
    try:
        client = daemon.client() if daemon.process else daemon.start()
        if client.networks.exists(name):
            client.networks.get(name).delete()
    except Exception:
        pass
    daemon.destroy()


def test_restart_adopts_dnsmasq_and_recreates_a_missing_bridge():
    daemon = BackendDaemon()
    name = _name()
    try:
        client = daemon.start()
        client.networks.create(name, config={'ipv4.address': '10.253.%d.1/24'
                                             % random.randint(0, 255)})
        pids = set(_dnsmasq(name))
        assert len(pids) == 3         # DHCP, its script helper, DNS
        daemon.stop()
        # like LXD: stopping the daemon leaves networking up for running containers
        assert netns.link_exists(name)
        assert set(_dnsmasq(name)) == pids
        client = daemon.start()
        assert set(_dnsmasq(name)) == pids
        daemon.stop()
        # as after a reboot: bridge and firewall gone, dnsmasq gone
        netns.run('kill', *map(str, pids))
        netns.run('ip', 'link', 'del', name)
        netns.run('nft', 'delete', 'table', 'inet', 'novalxd_' + name)
        client = daemon.start()
        left = _leftovers(name)
        assert left['bridge'] and left['nft'] and set(left['dnsmasq']) == {'dhcp', 'dns'}
        assert client.networks.get(name).status == 'Created'
        client.networks.get(name).delete()
        assert _leftovers(name) == {'bridge': False, 'nft': False, 'dnsmasq': {}}
    finally:
        _destroy(daemon, name)


def test_an_earlier_version_s_single_dnsmasq_and_its_entries_are_taken_over():
    """An upgrade: the network's dnsmasq and entries as the version before pass 10 left them.

    One dnsmasq (dnsmasq.pid) served DHCP and held port 53, and every instance's name was an
    entry of its DHCP hosts directory.
    """
    daemon = BackendDaemon()
    name = _name()
    old = None
    try:
        client = daemon.start()
        gateway = ipaddress.ip_interface('10.253.%d.1/24' % random.randint(0, 255))
        client.networks.create(name, config={'ipv4.address': str(gateway)})
        daemon.stop()
        netns.run('kill', *map(str, _dnsmasq(name)))
        assert wait_until(lambda: not _dnsmasq(name))    # port 53 free for the old one
        directory = os.path.join(daemon.data_dir, 'networks', name)
        for entry in ('names.d', 'dns.d', 'lease-event', 'dns.pid'):
            netns.run('rm', '-rf', os.path.join(directory, entry))
        hosts = os.path.join(directory, 'dnsmasq.hosts.d')
        pinned = str(gateway.ip + 50)
        for mac, line in (('00-16-3e-00-00-07', '00:16:3e:00:00:07,oldname'),
                          ('00-16-3e-00-00-08', '00:16:3e:00:00:08,%s,pinned' % pinned)):
            with open(os.path.join(hosts, mac), 'w') as f:
                f.write(line + '\n')
        old = subprocess.Popen([
            'dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--strict-order',
            '--bind-interfaces', '--except-interface=lo',
            '--pid-file=%s/dnsmasq.pid' % directory, '--no-ping', '--interface=%s' % name,
            '--dhcp-no-override', '--dhcp-authoritative', '--no-resolv',
            '--dhcp-leasefile=%s/dnsmasq.leases' % directory, '--dhcp-hostsdir=%s' % hosts,
            '--listen-address=%s' % gateway.ip,
            '--dhcp-range=%s,%s,1h' % (gateway.ip + 2, gateway.ip + 200),
            '--domain-needed', '--local=//'], start_new_session=True, stderr=subprocess.PIPE)
        assert wait_until(lambda: len(_dnsmasq(name)) == 1 or old.poll() is not None), \
            old.stderr.read() if old.poll() is not None else _dnsmasq(name)
        client = daemon.start()
        assert client.networks.get(name).status == 'Created'
        roles = _leftovers(name)['dnsmasq']
        assert set(roles) == {'dhcp', 'dns'} and '--port=0' in roles['dhcp']
        assert old.wait(timeout=10) is not None          # the old one was stopped
        with open(os.path.join(directory, 'names.d', '00:16:3e:00:00:07')) as f:
            assert f.read() == 'oldname\n\n'
        with open(os.path.join(directory, 'names.d', '00:16:3e:00:00:08')) as f:
            assert f.read() == 'pinned\n\n'
        assert os.listdir(hosts) == ['00-16-3e-00-00-08']
        with open(os.path.join(hosts, '00-16-3e-00-00-08')) as f:
            assert f.read() == '00:16:3e:00:00:08,%s\n' % pinned
        client.networks.get(name).delete()
        assert _leftovers(name) == {'bridge': False, 'nft': False, 'dnsmasq': {}}
    finally:
        if old is not None and old.poll() is None:
            old.kill()
            old.wait()
        _destroy(daemon, name)


def test_outside_names_are_forwarded_to_the_resolv_file_and_the_network_s_own_never():
    """As on an LXD bridge, a container resolves outside names through its network's DNS.

    The daemon's dns_resolv_file names the upstream: here a responder of the test's own on
    loopback, answering one name. Instance names and the network's domain are answered by the
    network's dnsmasq and never reach it. The daemon first forwards nothing (an empty setting:
    the DNS dnsmasq exactly as versions before forwarding ran it), then starts again with a
    resolv file, as after an upgrade: the DNS dnsmasq is restarted, the DHCP one adopted. The
    file is empty at first; the responder written into it is taken up without a restart.
    """
    outside = 'mirror.nlxt-upstream.test'
    daemon = BackendDaemon(config={'dns_resolv_file': ''})
    name = _name()
    instance = None
    with responder(outside, '192.0.2.77') as upstream:
        try:
            client = daemon.start()
            gateway = ipaddress.ip_interface('10.253.%d.1/24' % random.randint(0, 255))
            client.networks.create(name, config={'ipv4.address': str(gateway),
                                                 'dns.domain': 'nlxt.test'})
            assert '--no-resolv' in _leftovers(name)['dnsmasq']['dns']
            before = _pids(name)
            daemon.stop()
            daemon.config['dns_resolv_file'] = daemon.resolv_file
            client = daemon.start()
            after = _pids(name)
            assert after['dhcp'] == before['dhcp'] and len(after['dns']) == 1, daemon.log()
            assert not after['dns'] & before['dns']
            command = _leftovers(name)['dnsmasq']['dns']
            assert '--resolv-file=%s' % daemon.resolv_file in command
            assert '--no-resolv' not in command and '--local=//' not in command

            instance = create_busybox(client, daemon, devices={
                'eth0': {'type': 'nic', 'network': name, 'name': 'eth0'}})
            instance.start(wait=True)
            address = dhcp(instance)

            def lookup(queried):
                return run(instance, 'nslookup', queried, str(gateway.ip))

            code, out = lookup(outside)          # no server in the file yet
            assert code != 0 and '192.0.2.77' not in out and not upstream.queries, out
            with open(daemon.resolv_file, 'w') as f:
                f.write('nameserver %s\n' % upstream.listen_address)
            # dnsmasq looks at the file's mtime at most once a second
            assert wait_until(lambda: '192.0.2.77' in lookup(outside)[1]), lookup(outside)
            assert (outside, 'A') in upstream.queries and _pids(name)['dns'] == after['dns']
            for own in (instance.name, '%s.nlxt.test' % instance.name):
                code, out = lookup(own)
                assert code == 0 and address in out, out
            code, out = lookup('missing.nlxt.test')
            assert "can't find missing.nlxt.test" in out, out
            assert not [queried for queried in upstream.names()
                        if instance.name.lower() in queried or 'nlxt.test' in queried]
        finally:
            if instance is not None:
                cleanup(instance)
            _destroy(daemon, name)


def test_bridge_subnet_in_daemon_config_makes_the_default_network_and_eth0():
    if netns.link_exists('novalxdbr0'):
        pytest.fail('novalxdbr0 exists on this host already; cannot test the default network')
    daemon = BackendDaemon(config={'bridge_subnet': '10.253.%d.0/24' % random.randint(0, 255)})
    try:
        client = daemon.start()
        net = client.networks.get('novalxdbr0')
        assert net.managed and net.config['ipv4.address'].endswith('.1/24')
        assert net.config['ipv4.nat'] == 'true'
        profile = client.profiles.get('default')
        assert profile.devices['eth0'] == {'type': 'nic', 'name': 'eth0',
                                           'network': 'novalxdbr0'}
        assert net.used_by == ['/1.0/profiles/default']
        # an operator's removal of eth0 sticks across restarts
        del profile.devices['eth0']
        profile.save()
        daemon.stop()
        client = daemon.start()
        assert 'eth0' not in client.profiles.get('default').devices
        client.networks.get('novalxdbr0').delete()
        assert _leftovers('novalxdbr0') == {'bridge': False, 'nft': False, 'dnsmasq': {}}
    finally:
        _destroy(daemon, 'novalxdbr0')


def test_stock_lxc_client_manages_networks(backend):
    import os
    import subprocess
    name = _name()
    env = dict(os.environ, LXD_DIR=backend.data_dir)

    def lxc(*args):
        proc = subprocess.run(['lxc'] + list(args), env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    try:
        lxc('network', 'create', name)
        assert 'ipv4.address: 10.' in lxc('network', 'show', name)
        info = lxc('network', 'info', name)
        assert 'State: up' in info and 'Bridge:' in info
        lxc('network', 'set', name, 'ipv4.dhcp.expiry', '2h')
        dhcp = _leftovers(name)['dnsmasq']['dhcp']
        assert dhcp.endswith(',2h') or ',2h ' in dhcp
        assert 'HOSTNAME' in lxc('network', 'list-leases', name)
        assert '%s,bridge,YES,' % name in lxc('network', 'list', '--format', 'csv')
        lxc('network', 'delete', name)
        assert _leftovers(name) == {'bridge': False, 'nft': False, 'dnsmasq': {}}
    finally:
        if backend.client().networks.exists(name):
            backend.client().networks.get(name).delete()


def test_ipv6_auto_gets_a_ula_64_with_router_advertisements(client):
    name = _name()
    try:
        client.networks.create(name, config={'ipv6.address': 'auto', 'ipv6.nat': 'true'})
        gateway = ipaddress.ip_interface(client.networks.get(name).config['ipv6.address'])
        assert gateway.network.prefixlen == 64 and gateway.network.subnet_of(
            ipaddress.ip_network('fd42::/16'))
        assert (name, 10, str(gateway.ip), 64, 0) in netlink.addresses(name)
        roles = _leftovers(name)['dnsmasq']
        assert '--enable-ra' in roles['dhcp'] and '--dhcp-option=option6:dns-server,[::]' in \
            roles['dhcp']
        for cmd in roles.values():
            assert '--listen-address=%s' % gateway.ip in cmd
        table = netns.run('nft', 'list', 'table', 'inet', 'novalxd_' + name).stdout
        assert 'ip6 saddr %s' % gateway.network in table
    finally:
        if client.networks.exists(name):
            client.networks.get(name).delete()
    assert _leftovers(name) == {'bridge': False, 'nft': False, 'dnsmasq': {}}


def test_dns_mode_none_keeps_dhcp_without_dns(client):
    name = _name()
    try:
        client.networks.create(name, config={'dns.mode': 'none'})
        roles = _leftovers(name)['dnsmasq']
        assert set(roles) == {'dhcp'}
        assert '--port=0' in roles['dhcp'] and '--dhcp-range=' in roles['dhcp']
        assert 'dns-server' not in roles['dhcp']
    finally:
        if client.networks.exists(name):
            client.networks.get(name).delete()
