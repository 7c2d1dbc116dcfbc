"""Instance config -> validation, LXC config, cgroup values, id maps, templates, safe paths."""
import os

import pytest

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.instances import config as cfg
from nova_lxd.backend.instances import idmap, limits, lxcconf, templates
from nova_lxd.backend.instances import devices
from nova_lxd.backend.instances.paths import relative_mount_target, resolve_in_rootfs


# -- the key table -----------------------------------------------------------------------------

@pytest.mark.parametrize('key, value', [
    ('limits.memory', '512MiB'), ('limits.memory', '1GB'), ('limits.memory', '50%'),
    ('limits.cpu', '2'), ('limits.cpu', '0-1,3'), ('limits.cpu.allowance', '25ms/100ms'),
    ('limits.cpu.allowance', '50%'), ('limits.processes', '500'),
    ('security.privileged', 'true'), ('security.nesting', 'false'), ('user.anything', 'x'),
    ('environment.HTTP_PROXY', 'http://p'), ('boot.autostart', '1'), ('image.os', 'Debian'),
    ('raw.lxc', 'lxc.apparmor.profile = unconfined\n# comment\n'),
    ('limits.disk.priority', '5'), ('limits.memory.enforce', 'soft'),
    ('limits.kernel.nofile', '1024'), ('limits.kernel.core', 'unlimited:unlimited'),
    ('linux.kernel_modules', 'overlay,br_netfilter'),
])
def test_valid_keys(key, value):
    assert cfg.validate_config({key: value}) == {key: value}


@pytest.mark.parametrize('key, value', [
    ('limits.mem', '1'), ('limit.memory', '1'), ('user.', 'x'),
    ('security.privileged', 'yes please'),
    ('limits.memory', '12 parsecs'), ('limits.cpu', '0'), ('limits.cpu', 'a-b'),
    ('limits.cpu.allowance', '101%'), ('limits.cpu.allowance', '10/100'),
    ('limits.processes', '0'), ('raw.lxc', 'lxc.rootfs.path = /'), ('raw.lxc', 'garbage'),
    ('raw.lxc', 'lxc.idmap = u 0 0 1'), ('limits.disk.priority', '11'),
    ('limits.kernel.nofiles', '1'), ('limits.kernel.nofile', 'many'),
    ('linux.kernel_modules', 'a b'), ('security.syscalls.deny', 'mount'),
    ('raw.seccomp', 'x'), ('raw.idmap', 'both 1000 0'), ('security.devlxd', 'true'),
])
def test_invalid_keys_name_the_key(key, value):
    with pytest.raises(BadRequest) as err:
        cfg.validate_config({key: value})
    assert repr(key) in str(err.value)


def test_values_are_normalised_to_strings():
    assert cfg.validate_config({'limits.processes': 10, 'security.nesting': True,
                                'user.x': None}) == {'limits.processes': '10',
                                                     'security.nesting': 'true'}
    with pytest.raises(BadRequest):
        cfg.validate_config({'user.x': {'nested': 1}})


def test_sizes():
    assert cfg.parse_size('1KiB') == 1024 and cfg.parse_size('1kB') == 1000
    assert cfg.parse_size('2GiB') == 2 << 30 and cfg.parse_size('123') == 123
    with pytest.raises(ValueError):
        cfg.parse_size('1XB')


def test_expand_profiles_in_order_and_none_masks():
    profiles = [{'config': {'limits.memory': '1GiB', 'user.a': 'p1'},
                 'devices': {'root': {'type': 'disk', 'path': '/', 'pool': 'a'},
                             'eth0': {'type': 'nic', 'network': 'br'}}},
                {'config': {'user.a': 'p2'}, 'devices': {'root': {'type': 'disk', 'path': '/',
                                                                  'pool': 'b'}}}]
    doc = {'config': {'limits.memory': '2GiB'}, 'devices': {'eth0': {'type': 'none'}}}
    config, devs = cfg.expand(doc, profiles)
    assert config == {'limits.memory': '2GiB', 'user.a': 'p2'}
    assert devs == {'root': {'type': 'disk', 'path': '/', 'pool': 'b'}}
    assert cfg.root_disk(devs)[0] == 'root'


# -- limits -> cgroup values ----------------------------------------------------------------------

def test_cgroup_items():
    items = limits.cgroup_items({'limits.memory': '256MiB', 'limits.memory.swap': 'false',
                                 'limits.cpu': '1', 'limits.cpu.allowance': '20ms/50ms',
                                 'limits.processes': '42'})
    assert items['memory.limit_in_bytes'] == str(256 << 20)
    if limits.MEMSW:
        assert items['memory.memsw.limit_in_bytes'] == str(256 << 20)
    assert items['cpuset.cpus'] == str(limits.host_cpus()[0])
    assert (items['cpu.cfs_quota_us'], items['cpu.cfs_period_us']) == ('20000', '50000')
    assert items['pids.max'] == '42'
    soft = limits.cgroup_items({'limits.memory': '1GiB', 'limits.memory.enforce': 'soft'})
    assert soft['memory.soft_limit_in_bytes'] == str(1 << 30)
    assert soft['memory.limit_in_bytes'] == '-1'
    assert limits.cgroup_items({'limits.cpu.allowance': '25%'})['cpu.shares'] == '256'


def test_cpu_count_beyond_host_refused():
    with pytest.raises(BadRequest) as err:
        limits.cgroup_items({'limits.cpu': str(len(limits.host_cpus()) + 1)})
    assert 'limits.cpu' in str(err.value)


def test_memory_percentage_of_host():
    assert int(limits.cgroup_items({'limits.memory': '50%'})['memory.limit_in_bytes']) == \
        limits.host_memory() // 2


class _FakeContainer:
    def __init__(self):
        self.calls = []

    def set_cgroup_item(self, key, value):
        self.calls.append((key, value))
        return True


def test_live_memory_order_keeps_memsw_above_limit():
    if not limits.MEMSW:
        pytest.skip('no memsw accounting on this kernel')
    grow, shrink = _FakeContainer(), _FakeContainer()
    small = {'limits.memory': '100MiB', 'limits.memory.swap': 'false'}
    big = {'limits.memory': '200MiB', 'limits.memory.swap': 'false'}
    limits.apply_live(grow, small, big)
    limits.apply_live(shrink, big, small)
    keys = [k for k, _ in grow.calls if k.startswith('memory.')]
    assert keys.index('memory.memsw.limit_in_bytes') < keys.index('memory.limit_in_bytes')
    keys = [k for k, _ in shrink.calls if k.startswith('memory.')]
    assert keys.index('memory.limit_in_bytes') < keys.index('memory.memsw.limit_in_bytes')


# -- the LXC config -------------------------------------------------------------------------------

def _build(config, init_kind='busybox', device_lines=()):
    return lxcconf.build('c1', '/pool/c1/rootfs', config,
                         [('u', 0, 1000000, 65536), ('g', 0, 1000000, 65536)],
                         '/logs/console.log', '/logs/lxc.log', init_kind, '/data/lxcfs',
                         list(device_lines))


def test_lxc_config_basics():
    text = _build({'limits.memory': '64MiB', 'environment.FOO': 'bar',
                   'limits.kernel.nofile': '2048'})
    lines = text.splitlines()
    assert 'lxc.rootfs.path = /pool/c1/rootfs' in lines        # a plain path, no dir: prefix
    assert 'lxc.uts.name = c1' in lines and 'lxc.autodev = 1' in lines
    assert 'lxc.idmap = u 0 1000000 65536' in lines and 'lxc.idmap = g 0 1000000 65536' in lines
    assert 'lxc.signal.halt = 10' in lines                      # busybox: SIGUSR1
    assert 'lxc.cgroup.memory.limit_in_bytes = %d' % (64 << 20) in lines
    assert 'lxc.environment = FOO=bar' in lines
    assert 'lxc.prlimit.nofile = 2048' in lines
    assert 'lxc.net.0.type = empty' in lines
    assert 'lxc.console.logfile = /logs/console.log' in lines
    assert any(line.startswith('lxc.mount.entry = /data/lxcfs/proc/meminfo proc/meminfo')
               for line in lines)
    assert 'lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed' in lines


def test_lxc_config_halt_signals_and_raw():
    assert 'lxc.signal.halt = %d' % (int(__import__('signal').SIGRTMIN) + 3) in \
        _build({}, 'systemd').splitlines()
    assert 'lxc.signal.halt = 30' in _build({}, '').splitlines()                   # SIGPWR
    assert 'lxc.signal.halt = 10' in _build({'image.halt_signal': 'SIGUSR1'}, '').splitlines()
    assert _build({'raw.lxc': 'lxc.apparmor.profile = unconfined'}).endswith(
        'lxc.apparmor.profile = unconfined\n')


def test_devices_own_the_network_lines():
    text = _build({}, device_lines=[('lxc.net.0.type', 'phys')])
    assert 'lxc.net.0.type = empty' not in text and 'lxc.net.0.type = phys' in text


# -- id maps --------------------------------------------------------------------------------------

def test_wanted_maps():
    (ustart, ucount), _ = idmap.host_ranges()
    shared, base = idmap.wanted_map({}, [])
    assert shared[0] == ('u', 0, ustart, shared[0][3]) and base == 0
    assert idmap.wanted_map({'security.privileged': 'true'}, []) == ([], None)
    first, b1 = idmap.wanted_map({'security.idmap.isolated': 'true'}, [])
    second, b2 = idmap.wanted_map({'security.idmap.isolated': 'true'}, [b1])
    assert b1 != b2 and first[0][3] == second[0][3] == 65536
    assert abs(b1 - b2) >= 65536
    assert (first[0][2], second[0][2]) == (b1, b2)          # absolute host ids, as LXD keeps
    assert idmap.wanted_map({'security.idmap.isolated': 'true'}, [b1, b2])[1] not in (b1, b2)
    # an instance keeps its range while nobody else took it, even when a lower one is free
    assert idmap.wanted_map({'security.idmap.isolated': 'true'}, [], current=b2)[1] == b2
    assert idmap.wanted_map({'security.idmap.isolated': 'true'}, [b2], current=b2)[1] != b2
    assert idmap.from_json(idmap.to_json(first)) == first


def test_shift_rootfs_round_trip(tmp_path):
    if os.geteuid() != 0:
        pytest.skip('chown needs root')
    root = tmp_path / 'rootfs'
    (root / 'bin').mkdir(parents=True)
    tool = root / 'bin' / 'tool'
    tool.write_text('x')
    os.chmod(tool, 0o4755)
    os.symlink('/etc/passwd', root / 'link')
    target = [('u', 0, 2000000, 65536), ('g', 0, 2000000, 65536)]
    idmap.shift_rootfs(str(root), [], target)
    assert os.stat(tool).st_uid == 2000000 and os.stat(tool).st_mode & 0o4000
    assert os.lstat(root / 'link').st_uid == 2000000
    assert os.stat('/etc/passwd').st_uid == 0                  # the link was not followed
    idmap.shift_rootfs(str(root), target, [])
    assert os.stat(tool).st_uid == 0 and os.stat(root).st_uid == 0


# -- templates and paths --------------------------------------------------------------------------

def test_render_text():
    instance = {'name': 'web1', 'config': {'user.role': 'db'}}
    text = '{{ container.name }} {{instance.name}} {{ config_get("user.role", "x") }} ' \
           '{{ config_get("user.none", "dflt") }} {{ properties.p }} {% if x %}{{ trigger }}'
    assert templates.render_text(text, instance, 'start', {'p': 'v'}) == \
        'web1 web1 db dflt v start'


def test_paths_cannot_escape_the_rootfs(tmp_path):
    root = tmp_path / 'rootfs'
    (root / 'etc').mkdir(parents=True)
    os.symlink('/etc/shadow', root / 'etc' / 'evil')
    os.symlink('../../../../..', root / 'up')
    assert resolve_in_rootfs(str(root), '/etc/evil') == str(root / 'etc' / 'shadow')
    assert resolve_in_rootfs(str(root), '/up/etc/passwd') == str(root / 'etc' / 'passwd')
    assert resolve_in_rootfs(str(root), '/../../etc/hostname') == str(root / 'etc' / 'hostname')
    assert relative_mount_target('/mnt/data') == 'mnt/data'
    with pytest.raises(BadRequest):
        relative_mount_target('/mnt/../../etc')
    with pytest.raises(BadRequest):
        relative_mount_target('relative')


# -- device validation ----------------------------------------------------------------------------

@pytest.mark.parametrize('dev, word', [
    ({'type': 'disk', 'path': '/'}, 'pool'),
    ({'type': 'disk', 'path': '/', 'pool': 'p', 'size': 'big'}, 'size'),
    ({'type': 'disk', 'path': '/', 'pool': 'p', 'source': '/x'}, 'source'),
    ({'type': 'disk', 'path': '/mnt', 'source': '/x', 'limits.read': 'fast'}, 'limits.read'),
    ({'type': 'unix-char', 'path': '/dev/x', 'major': 'one'}, 'major'),
    ({'type': 'unix-block'}, 'source or a path'),
    ({'type': 'hologram'}, 'hologram'),
    ({'path': '/'}, 'type'),
])
def test_bad_devices(dev, word):
    with pytest.raises(BadRequest) as err:
        devices.validate_devices({'d': dev})
    assert word in str(err.value)


def test_good_devices():
    devices.validate_devices({
        'root': {'type': 'disk', 'path': '/', 'pool': 'default', 'size': '10GiB',
                 'limits.read': '20MB', 'limits.write': '100iops'},
        'data': {'type': 'disk', 'path': '/srv', 'source': '/var/tmp', 'readonly': 'true'},
        'null': {'type': 'unix-char', 'source': '/dev/null', 'path': '/dev/null2'},
        'masked': {'type': 'none'}})


def test_nesting_mounts():
    plain = _build({}).splitlines()
    nested = _build({'security.nesting': 'true'}).splitlines()
    assert 'lxc.mount.auto = proc:rw sys:rw cgroup:rw' in nested
    assert any('dev/.lxc/proc' in line for line in nested)
    assert not any('dev/.lxc/proc' in line for line in plain)


def test_lxc_log_rotation(tmp_path):
    from nova_lxd.backend.instances import lifecycle
    log = tmp_path / 'lxc.log'
    log.write_text('x' * 100)
    lifecycle._rotate(str(log), limit=50)
    assert not log.exists() and (tmp_path / 'lxc.log.1').read_text() == 'x' * 100
    lifecycle._rotate(str(log), limit=50)       # nothing to rotate: no error


def test_missing_lxcfs_is_not_fatal(tmp_path):
    from nova_lxd.backend.lxcfs import Lxcfs
    fs = Lxcfs(str(tmp_path), binary=str(tmp_path / 'no-lxcfs'))
    assert fs.ensure() is False and fs.dir is None     # containers get no lxcfs mounts
