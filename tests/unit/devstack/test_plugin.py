"""The devstack plugin (devstack/plugin.sh), phase by phase, against a stand-in for devstack.

devstack's own shell functions (iniset, is_service_enabled, run_process, setup_develop, ...)
need a full devstack checkout, systemd and a running cloud, none of which exist here.
tests/unit/devstack/stubs.sh stands in for them with devstack's signatures: it records each call
and writes real ini files, so these tests check what the plugin writes to nova.conf,
glance-api.conf, backend.conf and tempest.conf, and which services it starts and stops.  The
`lxd`, `openstack`, `nova-lxd-image` and `nova-lxd-backend` commands are recording stand-ins too
(tests/unit/devstack/bin/record).  The Python facts the plugin derives (tempest flags, Glance
formats) come from the real driver and image modules.
"""
import pathlib
import subprocess
import sys

import pytest
import yaml

from nova_lxd.backend import config as backend_config
from nova_lxd.image import formats

from tests.unit.devstack.stack import DEVSTACK, REPO, STUBS, Stack

SCRIPTS = [DEVSTACK / 'plugin.sh', DEVSTACK / 'settings', DEVSTACK / 'override-defaults',
           STUBS / 'stubs.sh', STUBS / 'bin' / 'record']
IMAGE_ID = '5a1d7c6e-0000-4000-8000-00000000cafe'

sys.path.insert(0, str(DEVSTACK / 'tools'))
import driver_facts  # noqa: E402


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


def test_shellcheck_clean():
    result = subprocess.run(['shellcheck', '-x', '--severity=style'] + [str(s) for s in SCRIPTS],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_override_defaults_selects_the_driver():
    out = subprocess.run(['bash', '-c', 'source %s; echo $VIRT_DRIVER'
                          % (DEVSTACK / 'override-defaults')], capture_output=True, text=True)
    assert out.stdout.strip() == 'lxd'


def test_package_list_is_bindeps_runtime_packages():
    listed = (DEVSTACK / 'files' / 'debs' / 'nova-lxd').read_text().split()
    # a compute node's packages: Debian ones with no profile beyond `compile` (test-only and
    # all-in-one packages are not a compute node's)
    runtime = []
    for line in (REPO / 'bindep.txt').read_text().splitlines():
        line = line.split('#')[0].strip()
        if not line:
            continue
        profiles = set(line.partition('[')[2].rstrip(']').split())
        if 'platform:dpkg' in profiles and profiles <= {'platform:dpkg', 'compile'}:
            runtime.append(line.split()[0])
    assert sorted(listed) == sorted(runtime)


def test_pre_install_installs_packages_and_adds_subids_once(stack):
    (stack.root / 'subgid').write_text('root:1000000:1000000000\n')
    stack.run('stack', 'pre-install')
    stack.run('stack', 'pre-install')
    installs = stack.calls('install_package')
    assert len(installs) == 2
    assert installs[0][1:] == (DEVSTACK / 'files/debs/nova-lxd').read_text().split()
    assert (stack.root / 'subuid').read_text() == 'root:1000000:1000000000\n'
    assert (stack.root / 'subgid').read_text() == 'root:1000000:1000000000\n'
    # only what stack added is remembered for clean
    assert (stack.root / 'etc-nova-lxd/devstack-subids').read_text().split() == \
        [str(stack.root / 'subuid')]


def test_pre_install_with_lxd_installs_lxd(tmp_path):
    stack = Stack(tmp_path, backend='lxd')
    stack.run('stack', 'pre-install')
    assert ['install_package', 'lxd', 'lxd-client'] in stack.calls()


def test_install_develops_the_project(stack):
    stack.run('stack', 'install')
    assert stack.calls('setup_develop') == [['setup_develop', str(stack.root / 'opt/nova-lxd')]]


def test_post_config_bundled_backend(stack):
    (stack.root / 'glance-api.conf').write_text(
        '[image_format]\ncontainer_formats = docker\ndisk_formats = vmdk,raw\n')
    stack.run('stack', 'post-config')

    nova = stack.ini('nova.conf')
    socket = stack.root / 'data/nova-lxd/unix.socket'
    assert nova.get('DEFAULT', 'compute_driver') == 'lxd.LXDDriver'
    assert nova.get('lxd', 'endpoint') == str(socket)
    assert nova.getint('lxd', 'timeout') == 300
    assert not nova.has_option('lxd', 'pool')     # the bundled backend's pool is `default`
    assert not nova.has_option('lxd', 'migration_endpoints')     # single node

    # the backend reads the file the plugin wrote, and serves the socket nova.conf names
    conf = backend_config.DaemonConfig.load(str(stack.root / 'etc-nova-lxd/backend.conf'))
    assert conf.socket_path == str(socket)
    assert conf.socket_group == 'root'
    assert conf.socket_mode == 0o660
    assert conf.bridge_subnet == ''      # no extra NATed eth0 beside Neutron's ports
    assert conf.debug is True

    assert stack.calls('run_process') == [[
        'run_process', 'n-lxd-backend',
        '%s/bin/nova-lxd-backend --config-file %s' % (STUBS,
                                                      stack.root / 'etc-nova-lxd/backend.conf'),
        '', 'root']]

    glance = stack.ini('glance-api.conf')
    disk = glance.get('image_format', 'disk_formats').split(',')
    container = glance.get('image_format', 'container_formats').split(',')
    assert disk[:2] == ['vmdk', 'raw']            # what was there stays, in order
    assert set(formats.CONVERTIBLE_DISK_FORMATS) | {formats.DISK_FORMAT} <= set(disk)
    assert container == ['docker', formats.CONTAINER_FORMAT]


def test_post_config_bundled_backend_with_its_own_bridge(stack):
    stack.env['NOVA_LXD_BACKEND_BRIDGE_SUBNET'] = '10.99.0.1/24'
    stack.run('stack', 'post-config')
    conf = backend_config.DaemonConfig.load(str(stack.root / 'etc-nova-lxd/backend.conf'))
    assert conf.bridge_subnet == '10.99.0.1/24'


def test_post_config_multinode_migration_endpoints(stack):
    endpoints = 'node1:https://10.0.0.11:8443,node2:https://10.0.0.12:8443'
    stack.env['NOVA_LXD_MIGRATION_ENDPOINTS'] = endpoints
    stack.run('stack', 'post-config')
    assert stack.ini('nova.conf').get('lxd', 'migration_endpoints') == endpoints


def test_post_config_glance_defaults_kept_when_unset(stack):
    stack.run('stack', 'post-config')
    glance = stack.ini('glance-api.conf')
    assert glance.get('image_format', 'container_formats') == \
        driver_facts.GLANCE_DEFAULT_CONTAINER_FORMATS
    assert glance.get('image_format', 'disk_formats') == driver_facts.GLANCE_DEFAULT_DISK_FORMATS


def test_post_config_existing_lxd(tmp_path):
    stack = Stack(tmp_path, backend='lxd')
    stack.env['NOVA_LXD_LXD_SOCKET'] = '/var/snap/lxd/common/lxd/unix.socket'
    stack.env['NOVA_LXD_STORAGE_DRIVER'] = 'btrfs'
    stack.run('stack', 'post-config')

    nova = stack.ini('nova.conf')
    assert nova.get('lxd', 'endpoint') == '/var/snap/lxd/common/lxd/unix.socket'
    assert nova.get('lxd', 'pool') == 'default'
    assert stack.calls('run_process') == []
    assert not (tmp_path / 'etc-nova-lxd/backend.conf').exists()
    assert ['lxd', 'waitready', '--timeout', '60'] in stack.calls('lxd')
    assert ['lxd', 'init', '--preseed'] in stack.calls('lxd')
    assert ['sudo', 'env', 'LXD_DIR=/var/snap/lxd/common/lxd', 'lxd', 'init', '--preseed'] \
        in stack.calls('sudo')
    assert ['add_user_to_group', 'root', 'lxd'] in stack.calls()

    preseed = yaml.safe_load((tmp_path / 'lxd-preseed.yaml').read_text())
    network, = preseed['networks']
    assert network['config']['ipv4.address'] == '10.236.17.1/24'
    assert network['config']['ipv6.address'] == 'none'
    pool, = preseed['storage_pools']
    assert pool == {'name': 'default', 'driver': 'btrfs'}
    profile, = preseed['profiles']
    assert profile['devices']['root'] == {'path': '/', 'pool': 'default', 'type': 'disk'}


def test_post_config_on_a_node_without_compute_or_glance(tmp_path):
    stack = Stack(tmp_path, services='tempest')
    stack.env['NOVA_LXD_BACKEND'] = 'lxd'
    stack.run('stack', 'post-config')
    assert not (tmp_path / 'nova.conf').exists()
    assert not (tmp_path / 'glance-api.conf').exists()
    assert stack.calls('lxd') == [] and stack.calls('run_process') == []


def test_extra_builds_and_uploads_the_image(stack):
    stack.run('stack', 'extra')
    out_dir = stack.root / 'data/nova-lxd-images/busybox'
    built = out_dir / 'image.tar.gz'          # the path nova-lxd-image printed
    assert built.exists()
    assert stack.calls('nova-lxd-image') == [
        ['nova-lxd-image', 'build', 'busybox', '--output-dir', str(out_dir), '--quiet'],
        ['nova-lxd-image', 'upload', str(built), '--name', 'nova-lxd-busybox', '--public',
         '--os-cloud', 'devstack-admin']]


def test_image_tool_accepts_the_plugins_arguments():
    """The arguments the plugin passes are the ones nova-lxd-image's real parser accepts."""
    from nova_lxd.image import cli
    parser = cli.make_parser()
    build = parser.parse_args(['build', 'busybox', '--output-dir', '/x', '--quiet'])
    assert (build.kind, build.output_dir, build.quiet) == ('busybox', '/x', True)
    debian = parser.parse_args(['build', 'debian', '--output-dir', '/x', '--quiet',
                                '--mirror', 'http://m/debian'])
    assert debian.mirror == 'http://m/debian'
    upload = parser.parse_args(['upload', '/x/i.tar.gz', '--name', 'n', '--public',
                                '--os-cloud', 'devstack-admin'])
    assert (upload.file, upload.name, upload.public, upload.os_cloud) == \
        ('/x/i.tar.gz', 'n', True, 'devstack-admin')


def test_extra_without_image(tmp_path):
    stack = Stack(tmp_path, image='none')
    stack.run('stack', 'extra')
    assert stack.calls('nova-lxd-image') == []


def test_test_config_writes_the_drivers_tempest_flags(stack):
    image = stack.root / 'data/nova-lxd-images/busybox/busybox.tar.gz'
    image.parent.mkdir(parents=True)
    image.write_bytes(b'')
    stack.run('stack', 'test-config')
    tempest = stack.ini('tempest.conf')
    expected = [line.split() for line in driver_facts.tempest_flags()]
    assert expected
    for section, option, value in expected:
        assert tempest.get(section, option) == value
    assert set(tempest.options('compute-feature-enabled')) == \
        {option for section, option, _ in expected if section == 'compute-feature-enabled'}
    assert tempest.get('compute', 'image_ref') == IMAGE_ID
    # scenario tests upload the container image, in the Glance convention of nova_lxd.image
    assert tempest.get('scenario', 'img_file') == str(image)
    assert tempest.get('scenario', 'img_container_format') == formats.CONTAINER_FORMAT
    assert tempest.get('scenario', 'img_disk_format') == formats.DISK_FORMAT
    assert dict(kv.split(':') for kv in tempest.get('scenario', 'img_properties').split(',')) \
        == {formats.PROP_IMAGE_FORMAT: formats.FORMAT_UNIFIED,
            'hypervisor_type': formats.HYPERVISOR_TYPE}
    assert ['openstack', 'image', 'show', 'nova-lxd-busybox', '-f', 'value', '-c', 'id'] in \
        stack.calls('openstack')


def test_unstack_stops_the_backend_and_clean_removes_what_stack_made(stack):
    (stack.root / 'subgid').write_text('stack:100000:65536\n')
    # (test-config only writes tempest.conf: left out, it imports nova and is tested above)
    for phase in ('pre-install', 'install', 'post-config', 'extra'):
        stack.run('stack', phase)
    (stack.root / 'data/nova-lxd').mkdir()       # what the backend creates when it runs
    stack.run('unstack')
    assert stack.calls('stop_process') == [['stop_process', 'n-lxd-backend']]

    stack.run('clean')
    assert sorted(p.name for p in (stack.root / 'data').iterdir()) == []
    assert not (stack.root / 'etc-nova-lxd').exists()
    assert (stack.root / 'subuid').read_text() == ''
    assert (stack.root / 'subgid').read_text() == 'stack:100000:65536\n'


def test_clean_releases_mounts_and_loop_devices_in_the_data_dir(stack):
    """As the bundled backend leaves them when it stops: a pool mounted from a loop file."""
    data = stack.root / 'data/nova-lxd'
    (data / 'disks').mkdir(parents=True)
    (data / 'storage-pools/default').mkdir(parents=True)
    image = data / 'disks/default.img'
    subprocess.run(['truncate', '-s', '8M', str(image)], check=True)
    loop = subprocess.run(['losetup', '-f', '--show', str(image)], check=True,
                          capture_output=True, text=True).stdout.strip()
    mounted = False
    try:
        subprocess.run(['mkfs.ext4', '-q', loop], check=True, capture_output=True)
        subprocess.run(['mount', loop, str(data / 'storage-pools/default')], check=True)
        mounted = True
        stack.run('clean')
        assert not data.exists()
        assert str(data) not in pathlib.Path('/proc/self/mountinfo').read_text()
        assert str(image) not in subprocess.run(['losetup', '-nl', '-O', 'BACK-FILE'],
                                                capture_output=True, text=True).stdout
    finally:      # only if clean failed to
        if mounted:
            subprocess.run(['umount', '-l', str(data / 'storage-pools/default')],
                           capture_output=True)
        subprocess.run(['losetup', '-d', loop], capture_output=True)


def test_clean_keeps_a_subid_range_stack_did_not_add(stack):
    (stack.root / 'subuid').write_text('root:1000000:1000000000\n')
    (stack.root / 'subgid').write_text('root:1000000:1000000000\n')
    stack.run('stack', 'pre-install')
    stack.run('clean')
    assert (stack.root / 'subuid').read_text() == 'root:1000000:1000000000\n'
    assert (stack.root / 'subgid').read_text() == 'root:1000000:1000000000\n'


def test_unstack_with_existing_lxd_stops_nothing(tmp_path):
    stack = Stack(tmp_path, backend='lxd')
    stack.run('unstack')
    assert stack.calls('stop_process') == []


def _flags(monkeypatch, cls):
    base, _ = driver_facts._driver_class()
    monkeypatch.setattr(driver_facts, '_driver_class', lambda: (base, cls))
    return {line.split()[1]: line.split()[2] for line in driver_facts.tempest_flags()}


def test_tempest_flags_follow_the_driver(monkeypatch):
    """A driver that implements pause/unpause gets pause = True, and nothing else changes."""
    lxd = driver_facts._driver_class()[1]

    class Pausing(lxd):
        def pause(self, instance):
            pass

        def unpause(self, instance):
            pass

    before, after = _flags(monkeypatch, lxd), _flags(monkeypatch, Pausing)
    assert after['pause'] == 'True'
    assert {k: v for k, v in after.items() if k != 'pause'} == \
        {k: v for k, v in before.items() if k != 'pause'}
