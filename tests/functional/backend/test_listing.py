"""GET /1.0/instances?recursion=1|2: the batched listing must say what the single GETs say.

The listing reads the records, profiles and snapshots once, asks liblxc once which containers
run, and reads each running container's netns over one plain netlink socket; these tests hold it
to the per-instance answers (GET .../{name}, .../state, .../snapshots), to `ip` run inside the
container's netns, and to the stock `lxc list` client, on real containers.
"""
import json
import os
import subprocess

import pytest

from tests.functional.backend.busybox_rootfs import attach, cleanup, create_busybox

# an unattached veth from raw LXC config: an eth0 with a fixed MAC and address, no bridge needed
VETH = '\n'.join(['lxc.net.0.type = veth', 'lxc.net.0.name = eth0', 'lxc.net.0.flags = up',
                  'lxc.net.0.hwaddr = 00:16:3e:aa:bb:%02x', 'lxc.net.0.ipv4.address = '
                  '10.254.252.%d/24'])
STATE_KEYS = {'status', 'status_code', 'pid', 'processes', 'cpu', 'memory', 'network', 'disk'}
MEMORY_KEYS = {'usage', 'usage_peak', 'swap_usage', 'swap_usage_peak'}


def _get(client, path, **params):
    reply = client.api.session.get(client.api._api_endpoint + path, params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()['metadata']


def _ip_addr(pid):
    """`ip -j -s addr` inside the netns of pid: the kernel's own view, by the iproute2 tool."""
    out = subprocess.run(['nsenter', '-t', str(pid), '-n', 'ip', '-j', '-s', 'addr'],
                         capture_output=True, text=True, timeout=30, check=True)
    return {link['ifname']: link for link in json.loads(out.stdout)}


@pytest.fixture
def trio(client, backend):
    """A running instance with an eth0, a frozen one, and a stopped one with a snapshot."""
    made = []
    try:
        for i, name in enumerate(('running', 'frozen', 'stopped')):
            made.append(create_busybox(client, backend, config={
                'raw.lxc': VETH % (i + 1, i + 1)}))
        made[0].start(wait=True)
        made[1].start(wait=True)
        made[1].freeze(wait=True)
        made[2].snapshots.create('snap0', wait=True)
        yield dict(zip(('running', 'frozen', 'stopped'), made))
    finally:
        for instance in made:
            instance.sync()
            if instance.status == 'Frozen':
                instance.unfreeze(wait=True)
            cleanup(instance)


def test_recursion_1_and_2_say_what_each_get_says(client, trio):
    names = {instance.name for instance in trio.values()}
    level1 = {v['name']: v for v in _get(client, '/instances', recursion=1) if v['name'] in names}
    level2 = {v['name']: v for v in _get(client, '/instances', recursion=2) if v['name'] in names}
    assert set(level1) == set(level2) == names
    for role, instance in trio.items():
        single = _get(client, '/instances/%s' % instance.name)
        assert level1[instance.name] == single, role
        listed = dict(level2[instance.name])
        listed_state = listed.pop('state')
        snapshots, backups = listed.pop('snapshots'), listed.pop('backups')
        assert listed == single, role
        assert backups is None
        assert [s['name'] for s in snapshots] == \
            [s['name'] for s in _get(client, '/instances/%s/snapshots' % instance.name,
                                     recursion=1)]
        state = _get(client, '/instances/%s/state' % instance.name)
        assert set(listed_state) == set(state) == STATE_KEYS, role
        assert set(listed_state['memory']) == MEMORY_KEYS, role
        for key in ('status', 'status_code', 'pid'):
            assert listed_state[key] == state[key], (role, key)
    assert level2[trio['running'].name]['status'] == 'Running'
    assert level2[trio['frozen'].name]['status'] == 'Frozen'
    assert level2[trio['stopped'].name]['status'] == 'Stopped'
    assert [s['name'] for s in level2[trio['stopped'].name]['snapshots']] == ['snap0']
    assert level2[trio['stopped'].name]['state']['network'] is None
    for role in ('running', 'frozen'):
        listed_state = level2[trio[role].name]['state']
        assert listed_state['pid'] > 0 and listed_state['processes'] >= 1, role
        assert listed_state['memory']['usage'] > 0 and listed_state['cpu']['usage'] > 0, role
        assert set(listed_state['network']) == {'lo', 'eth0'}, role


def test_network_state_is_the_kernels(client, backend, trio):
    instance = trio['running']
    attach(backend, instance.name, 'ping', '-c', '2', '-W', '1', '127.0.0.1')
    pid = instance.state().pid
    before = _ip_addr(pid)
    listed = [v for v in _get(client, '/instances', recursion=2) if v['name'] == instance.name]
    network = listed[0]['state']['network']
    after = _ip_addr(pid)
    assert set(network) == set(before)
    for name, link in before.items():
        mine = network[name]
        assert mine['hwaddr'] == link['address'] and mine['mtu'] == link['mtu'], name
        assert mine['state'] == ('up' if 'UP' in link['flags'] else 'down'), name
        assert mine['type'] == ('loopback' if 'LOOPBACK' in link['flags'] else 'broadcast')
        assert sorted((a['family'], a['address'], a['netmask'], a['scope'])
                      for a in mine['addresses']) == sorted(
            (a['family'], a['local'], str(a['prefixlen']),
             a['scope'].replace('host', 'local')) for a in link['addr_info']), name
        for counter, (direction, field) in {
                'bytes_received': ('rx', 'bytes'), 'bytes_sent': ('tx', 'bytes'),
                'packets_received': ('rx', 'packets'), 'packets_sent': ('tx', 'packets'),
                'packets_dropped_inbound': ('rx', 'dropped'),
                'errors_sent': ('tx', 'errors')}.items():
            low = before[name]['stats64'][direction][field]
            high = after[name]['stats64'][direction][field]
            assert low <= mine['counters'][counter] <= high, (name, counter)
    assert network['lo']['counters']['packets_received'] >= 2
    assert {'family': 'inet', 'address': '10.254.252.1', 'netmask': '24',
            'scope': 'global'} in network['eth0']['addresses']


def _listed(client, instance):
    found = [v for v in _get(client, '/instances', recursion=2) if v['name'] == instance.name]
    assert len(found) == 1
    return found[0]


def test_state_follows_a_restart(client, backend, trio):
    """A container restarted between two listings shows its new init at once.

    The listing keeps each init it learnt from liblxc (pid and start time) and its cgroup paths.
    """
    instance = trio['running']
    first = _listed(client, instance)['state']        # learnt
    assert first['pid'] > 0
    instance.stop(force=True, wait=True)
    instance.start(wait=True)
    state = _listed(client, instance)['state']
    assert state['pid'] > 0 and state['pid'] != first['pid']
    assert state['pid'] == instance.state().pid
    assert os.path.exists('/proc/%d' % state['pid'])
    assert state['memory']['usage'] > 0 and state['processes'] >= 1
    assert state['network']['eth0']['hwaddr'] == '00:16:3e:aa:bb:01'
    instance.stop(force=True, wait=True)
    stopped = _listed(client, instance)
    assert stopped['status'] == 'Stopped' and stopped['state']['pid'] == 0
    assert stopped['state']['memory']['usage'] == 0 and stopped['state']['network'] is None


def test_freeze_and_unfreeze_show_at_once(client, trio):
    instance = trio['running']
    assert _listed(client, instance)['status'] == 'Running'       # its init learnt
    instance.freeze(wait=True)
    assert _listed(client, instance)['status'] == 'Frozen'
    assert _listed(client, instance)['state']['status'] == 'Frozen'
    instance.unfreeze(wait=True)
    listed = _listed(client, instance)
    assert listed['status'] == 'Running' and listed['state']['status'] == 'Running'


def test_stock_lxc_list_reads_it(backend, trio):
    out = subprocess.run(['lxc', 'list', '--format', 'json'],
                         env=dict(os.environ, LXD_DIR=backend.data_dir),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = {v['name']: v for v in json.loads(out.stdout)}
    running = listed[trio['running'].name]
    assert running['status'] == 'Running'
    assert running['state']['network']['eth0']['addresses'][0]['address'] == '10.254.252.1'
    assert listed[trio['frozen'].name]['status'] == 'Frozen'
    assert [s['name'] for s in listed[trio['stopped'].name]['snapshots']] == ['snap0']


def test_a_filter_narrows_the_listing(client, trio):
    names = [v for v in _get(client, '/instances', recursion=1,
                             filter='name eq %s' % trio['frozen'].name)]
    assert [v['name'] for v in names] == [trio['frozen'].name]
    urls = _get(client, '/instances', filter='name eq %s and status eq Frozen'
                % trio['frozen'].name)
    assert urls == ['/1.0/instances/%s' % trio['frozen'].name]


def test_next_listing_sees_new_addresses_and_traffic(client, backend, trio):
    """What changed in a container since the last listing shows in the next one.

    The listing keeps its socket into each netns between listings: a new address and counters.
    """
    instance = trio['running']
    first = _listed(client, instance)['state']['network']
    attach(backend, instance.name, 'ip', 'addr', 'add', '10.254.253.9/24', 'dev', 'eth0')
    attach(backend, instance.name, 'ping', '-c', '3', '-W', '1', '127.0.0.1')
    second = _listed(client, instance)['state']['network']
    assert {'family': 'inet', 'address': '10.254.253.9', 'netmask': '24',
            'scope': 'global'} in second['eth0']['addresses']
    assert not any(a['address'] == '10.254.253.9' for a in first['eth0']['addresses'])
    # three echo requests and their replies, all received on lo
    assert second['lo']['counters']['packets_received'] >= \
        first['lo']['counters']['packets_received'] + 6
    assert second['lo']['counters']['bytes_sent'] > first['lo']['counters']['bytes_sent']
    attach(backend, instance.name, 'ip', 'addr', 'del', '10.254.253.9/24', 'dev', 'eth0')
    third = _listed(client, instance)['state']['network']
    assert not any(a['address'] == '10.254.253.9' for a in third['eth0']['addresses'])


_SIOCGSKNS = 0x894C     # a socket's network namespace, as an fd
_SYS_PIDFD_GETFD = 438


def _netns_of_sockets(pid):
    """The netns inodes of every socket the process `pid` holds (pidfd_getfd + SIOCGSKNS)."""
    import ctypes
    import fcntl
    libc = ctypes.CDLL(None, use_errno=True)
    found = set()
    pidfd = os.pidfd_open(pid)
    try:
        for fd in os.listdir('/proc/%d/fd' % pid):
            try:
                if not os.readlink('/proc/%d/fd/%s' % (pid, fd)).startswith('socket:'):
                    continue
            except OSError:
                continue
            mine = libc.syscall(_SYS_PIDFD_GETFD, pidfd, int(fd), 0)
            if mine < 0:
                continue
            try:
                netns = fcntl.ioctl(mine, _SIOCGSKNS)
                found.add(os.fstat(netns).st_ino)
                os.close(netns)
            except OSError:
                pass
            finally:
                os.close(mine)
    finally:
        os.close(pidfd)
    return found


def test_a_stop_lets_the_netns_go(client, backend, trio):
    """The socket a listing keeps in a container's netns is closed when the container stops.

    It would otherwise keep that namespace (and what is in it) alive.
    """
    instance = trio['running']
    pid = instance.state().pid
    netns = os.stat('/proc/%d/ns/net' % pid).st_ino
    _listed(client, instance)
    assert netns in _netns_of_sockets(backend.process.pid)      # the kept socket
    instance.stop(force=True, wait=True)
    assert netns not in _netns_of_sockets(backend.process.pid)
