"""The all-in-one cloud end to end: `aio/cloud.sh start`, a server's life through the `openstack`
client, a real container behind it, a subset of Tempest, and `aio/cloud.sh purge` leaving no
process behind.

Marker `aio`: tools/test.sh runs this module in a process of its own, alongside the main run
(minutes warm; a fresh host also installs OpenStack into the shared cache first, see
aio/install.sh). One module-scoped cloud; the steps run in order on one server, as an operator
would drive it, then Tempest runs against the same cloud.
"""
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import time

import pylxd
import pytest

# the first test also waits for the install of a fresh machine
pytestmark = [pytest.mark.aio, pytest.mark.timeout(3600)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CLOUD = os.path.join(REPO, 'aio', 'cloud.sh')
ROOT = '/var/tmp/nova-lxd-aio-test'
ENV = dict(os.environ, AIO_ROOT=ROOT)
SERVER = 'aio-test'
PORTS = (5000, 5672, 6640, 8774, 8775, 8778, 9292, 9696)


def _port_taken(port):
    with socket.socket() as s:
        return s.connect_ex(('127.0.0.1', port)) == 0


def _pids():
    """PID of each service the cloud started (its PID files)."""
    run = os.path.join(ROOT, 'run')
    pids = {}
    for name in os.listdir(run) if os.path.isdir(run) else ():
        with open(os.path.join(run, name)) as f:
            pids[name[:-4]] = int(f.read())
    return pids


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def openstack(*args, check=True, timeout=600):
    cmd = [os.path.join(REPO, '.venv-aio', 'bin', 'openstack'), '--os-cloud', 'aio'] + list(args)
    env = dict(ENV, OS_CLIENT_CONFIG_FILE=os.path.join(ROOT, 'clouds.yaml'))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError('%s failed (%d): %s' % (' '.join(args), proc.returncode, proc.stderr))
    return proc


def show(kind, name):
    return json.loads(openstack(kind, 'show', name, '-f', 'json').stdout)


def wait_status(name, wanted, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        server = show('server', name)
        if server['status'] in wanted:
            return server
        assert server['status'] != 'ERROR', server.get('fault')
        assert time.monotonic() < deadline, 'server %s stayed %s' % (name, server['status'])
        time.sleep(2)


def _interrupt(signum, frame):
    raise KeyboardInterrupt('signal %d' % signum)


@pytest.fixture(scope='module')
def cloud():
    # ports held by something else would make the cloud talk to a stranger
    taken = [p for p in PORTS if _port_taken(p)]
    assert not taken, 'ports %s are in use (another all-in-one cloud running?)' % taken
    # a TERM (a CI timeout, tools/test.sh interrupted) tears the cloud down as an interrupt does
    previous = signal.signal(signal.SIGTERM, _interrupt)
    pids, devices = {}, set()
    try:    # an interrupted start is torn down too
        up = subprocess.run([CLOUD, 'start'], env=ENV, capture_output=True, text=True,
                            timeout=3600)
        pids = _pids()
        assert up.returncode == 0, 'cloud.sh start failed:\n%s' % up.stderr[-5000:]
        yield pids
        # the host-side devices of every port (servers' and DHCP's): tap<port id prefix>,
        # and the container end tin<...> the driver pairs with it
        for port in openstack('port', 'list', '-f', 'value', '-c', 'ID').stdout.split():
            devices |= {'tap' + port[:11], 'tin' + port[:11]}
    finally:
        down = subprocess.run([CLOUD, 'purge'], env=ENV, capture_output=True, text=True,
                              timeout=600)
        signal.signal(signal.SIGTERM, previous)
        assert down.returncode == 0, down.stderr[-3000:]
        left = {name: pid for name, pid in pids.items() if _alive(pid)}
        assert not left, 'still running after down: %s' % left
        assert not os.path.exists(ROOT)
        assert not [line for line in open('/proc/mounts') if ROOT in line]
    # nothing of the cloud's network is left: OVS bridges, DHCP namespaces, port devices
    links = set(os.listdir('/sys/class/net'))
    assert not links & ({'br-int', 'br-phys', 'ovs-netdev'} | devices), links & devices
    namespaces = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True).stdout
    assert 'qdhcp-' not in namespaces, namespaces


@pytest.fixture(scope='module')
def backend(cloud):
    return pylxd.Client(endpoint=os.path.join(ROOT, 'data', 'backend', 'unix.socket'))


def _container(backend):
    name = show('server', SERVER)['OS-EXT-SRV-ATTR:instance_name']
    return backend.instances.get(name)


def test_status_lists_every_service_running(cloud):
    status = subprocess.run([CLOUD, 'status'], env=ENV, capture_output=True, text=True)
    assert status.returncode == 0, status.stdout
    for name in ('keystone', 'nova-compute', 'neutron-api', 'nova-lxd-backend', 'rabbitmq'):
        assert name + ' ' in status.stdout and 'stopped' not in status.stdout


def test_boot_runs_a_real_container_with_the_port_address(cloud, backend):
    openstack('server', 'create', '--wait', '--image', 'busybox', '--flavor', 'c1.tiny',
              '--network', 'demo-net', SERVER)
    server = wait_status(SERVER, {'ACTIVE'})
    port_ip = server['addresses']['demo-net'][0]
    container = _container(backend)
    assert container.status == 'Running'
    # the container really runs busybox's init as its PID 1
    result = container.execute(['cat', '/proc/1/cmdline'])
    assert result.stdout.split('\0')[0] in ('init', '/sbin/init'), result.stdout
    # and took Neutron's address by DHCP
    deadline = time.monotonic() + 60
    while port_ip not in container.execute(['ip', '-4', 'addr', 'show', 'eth0']).stdout:
        assert time.monotonic() < deadline, 'no DHCP lease for %s' % port_ip
        time.sleep(2)
    log = openstack('console', 'log', 'show', SERVER).stdout
    assert 'busybox: booting' in log


def test_metadata_through_neutron(cloud, backend):
    """Nova's metadata, through the proxy in the network's DHCP namespace and the agent."""
    ports = json.loads(openstack('port', 'list', '--network', 'demo-net', '--device-owner',
                                 'network:dhcp', '-f', 'json').stdout)
    dhcp_ip = ports[0]['Fixed IP Addresses'][0]['ip_address']
    container = _container(backend)
    # busybox's udhcpc script applies no classless static routes (DHCP option 121), which is
    # how dnsmasq hands out the route to 169.254.169.254: add it by hand
    container.execute(['ip', 'route', 'replace', '169.254.169.254', 'via', dhcp_ip])
    request = 'printf "GET /openstack/latest/meta_data.json HTTP/1.0\\r\\n\\r\\n" ' \
              '| nc -w 10 169.254.169.254 80'
    reply = container.execute(['sh', '-c', request]).stdout
    assert json.loads(reply.split('\r\n\r\n', 1)[1])['uuid'] == show('server', SERVER)['id']


def test_stop_and_start(cloud, backend):
    openstack('server', 'stop', SERVER)
    wait_status(SERVER, {'SHUTOFF'})
    assert _container(backend).status == 'Stopped'
    openstack('server', 'start', SERVER)
    wait_status(SERVER, {'ACTIVE'})
    assert _container(backend).status == 'Running'


def test_snapshot_makes_an_active_image(cloud):
    openstack('server', 'image', 'create', '--wait', '--name', SERVER + '-snap', SERVER)
    image = show('image', SERVER + '-snap')
    assert image['status'] == 'active'
    assert image['size'] > 0
    openstack('image', 'delete', SERVER + '-snap')


def _resize_action(deadline):
    """The server's resize action once Nova has finished it (successfully or not)."""
    while True:
        actions = json.loads(openstack('server', 'event', 'list', SERVER, '-f', 'json').stdout)
        resize = [a for a in actions if a['Action'] == 'resize']
        if resize:
            detail = json.loads(openstack('server', 'event', 'show', SERVER,
                                          resize[0]['Request ID'], '-f', 'json').stdout)
            if show('server', SERVER)['OS-EXT-STS:task_state'] is None:
                return detail
        assert time.monotonic() < deadline, 'resize did not finish'
        time.sleep(2)


def _flavor_name(server):
    # microversions >= 2.47 embed the flavor (a dict); older ones show "name (id)"
    flavor = server['flavor']
    return flavor.get('original_name', flavor.get('name')) if isinstance(flavor, dict) \
        else flavor.split(' ')[0]


def test_resize(cloud, backend):
    openstack('server', 'resize', '--flavor', 'c1.small', SERVER)
    action = _resize_action(time.monotonic() + 300)
    server = show('server', SERVER)
    if server['status'] == 'VERIFY_RESIZE':
        openstack('server', 'resize', 'confirm', SERVER)
        server = wait_status(SERVER, {'ACTIVE'})
        assert _flavor_name(server) == 'c1.small'
        assert _container(backend).config['limits.memory'].startswith('512')
    else:
        # the driver refused: the server is back on its old flavor, still running, and the
        # action is recorded as failed
        assert server['status'] == 'ACTIVE', server.get('fault')
        assert _flavor_name(server) == 'c1.tiny'
        assert action['message'] == 'Error', action


def test_delete_removes_the_container(cloud, backend):
    name = show('server', SERVER)['OS-EXT-SRV-ATTR:instance_name']
    openstack('server', 'delete', '--wait', SERVER)
    assert name not in [c.name for c in backend.instances.all()]
    assert openstack('server', 'show', SERVER, check=False).returncode != 0


def _tempest_exclusions():
    """aio/tempest_exclusions.py (aio/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        'tempest_exclusions', os.path.join(REPO, 'aio', 'tempest_exclusions.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Tempest's compute API in the default run: flavors, images of a server, server create, server
# actions (reboot, rebuild, stop/start, lock ...) and metadata; a few minutes. The whole subset
# (servers, flavors, images: 290 tests, about 35 minutes here) is `aio/cloud.sh tempest`.
TEMPEST_SUBSET = (r'^tempest\.api\.compute\.(flavors\.test_flavors\.'
                  r'|images\.test_images_oneserver\.'
                  r'|servers\.test_create_server\.ServersTestJSON\.'
                  r'|servers\.test_server_actions\.ServerActionsTestJSON\.'
                  r'|servers\.test_server_metadata\.)')
# a result line of `tempest run` (stestr): "{0} <test id>[attrs] [1.2s] ... FAILED"; a class
# whose set-up failed shows as "{0} setUpClass (<class id>) [0.0s] ... FAILED"
_FAILED = re.compile(r'^\{\d+\} (?:setUpClass \()?(tempest\.[^\s()]+)\)? .*\.\.\. FAILED$', re.M)


def test_tempest_failures_are_all_explained(cloud, capsys):
    run = subprocess.run([os.path.join(REPO, 'aio', 'tempest.sh'), TEMPEST_SUBSET], env=ENV,
                         capture_output=True, text=True, timeout=3000)
    output = run.stdout + run.stderr
    counts = re.search(r'^(\d+) passed, (\d+) failed, (\d+) skipped$', run.stdout, re.M)
    assert counts, 'tempest.sh printed no counts (exit %d):\n%s' % (run.returncode, output[-5000:])
    with capsys.disabled():
        print('\nTempest (%s): %s' % (TEMPEST_SUBSET, counts.group(0)))
    passed, failed = int(counts.group(1)), int(counts.group(2))
    assert passed > 0, output[-5000:]
    failures = _FAILED.findall(run.stdout)
    assert len(failures) == failed, (failures, output[-5000:])
    exclusions = _tempest_exclusions()
    reasons = exclusions.load()
    unexplained = [t for t in failures if exclusions.explained(t, reasons) is None]
    # the failures' tracebacks go into the message: the log goes with the cloud's purge
    assert not unexplained, 'Tempest failures not in the support matrix\'s ' \
        '[tempest-exclusions]: %s\n%s' % (unexplained,
                                          run.stdout.partition('- output below:')[2][:8000])
    # no failure, yet tempest failed: the run itself broke (configuration, a crashed worker)
    assert failures or run.returncode == 0, output[-5000:]
