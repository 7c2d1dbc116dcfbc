"""limits.* from instance and profile config: in the cgroup files and seen from inside (lxcfs)."""
import json

import pylxd
import pytest

from nova_lxd.backend.instances import blkio
from tests.functional.backend.busybox_rootfs import (attach, cleanup, create_busybox,
                                                     rootfs_path, unique)

MiB = 1024 * 1024


def cgroup_value(pid, controller, key):
    with open('/proc/%d/cgroup' % pid) as f:
        for line in f:
            _, controllers, path = line.rstrip('\n').split(':', 2)
            if controller in controllers.split(','):
                with open('/sys/fs/cgroup/%s%s/%s' % (controller, path, key)) as value:
                    return value.read().strip()
    raise AssertionError('no %s cgroup for %d' % (controller, pid))


def meminfo_total_kib(backend, name):
    for line in attach(backend, name, 'cat', '/proc/meminfo').splitlines():
        if line.startswith('MemTotal:'):
            return int(line.split()[1])


@pytest.fixture
def limited(client, backend):
    inst = create_busybox(client, backend, config={
        'limits.memory': '256MiB', 'limits.memory.swap': 'false', 'limits.cpu': '1',
        'limits.cpu.allowance': '25ms/100ms', 'limits.processes': '100'})
    inst.start(wait=True)
    yield inst
    cleanup(inst)


def test_limits_applied_at_start(backend, limited):
    pid = limited.state().pid
    assert cgroup_value(pid, 'memory', 'memory.limit_in_bytes') == str(256 * MiB)
    assert cgroup_value(pid, 'memory', 'memory.memsw.limit_in_bytes') == str(256 * MiB)
    assert cgroup_value(pid, 'cpuset', 'cpuset.cpus') == '0'
    assert cgroup_value(pid, 'cpu', 'cpu.cfs_quota_us') == '25000'
    assert cgroup_value(pid, 'cpu', 'cpu.cfs_period_us') == '100000'
    assert cgroup_value(pid, 'pids', 'pids.max') == '100'
    # inside, lxcfs and the cpuset give the container's own view
    assert meminfo_total_kib(backend, limited.name) == 256 * 1024
    assert attach(backend, limited.name, 'nproc').strip() == '1'
    assert attach(backend, limited.name, 'grep', '-c', '^processor',
                  '/proc/cpuinfo').strip() == '1'
    container_uptime = float(attach(backend, limited.name, 'cat', '/proc/uptime').split()[0])
    with open('/proc/uptime') as f:
        assert container_uptime < float(f.read().split()[0])


def test_limits_changed_live(client, backend, limited):
    pid = limited.state().pid
    limited.config.update({'limits.memory': '128MiB', 'limits.cpu': '0-1',
                           'limits.processes': '50'})
    del limited.config['limits.cpu.allowance']
    limited.save(wait=True)
    assert limited.state().pid == pid            # no restart
    assert cgroup_value(pid, 'memory', 'memory.limit_in_bytes') == str(128 * MiB)
    assert cgroup_value(pid, 'memory', 'memory.memsw.limit_in_bytes') == str(128 * MiB)
    assert cgroup_value(pid, 'cpuset', 'cpuset.cpus') == '0-1'
    assert cgroup_value(pid, 'cpu', 'cpu.cfs_quota_us') == '-1'
    assert cgroup_value(pid, 'pids', 'pids.max') == '50'
    assert meminfo_total_kib(backend, limited.name) == 128 * 1024
    assert attach(backend, limited.name, 'nproc').strip() == '2'
    # raise memory again (memsw must grow first) and drop the limit entirely
    limited.config['limits.memory'] = '512MiB'
    limited.save(wait=True)
    assert cgroup_value(pid, 'memory', 'memory.limit_in_bytes') == str(512 * MiB)
    del limited.config['limits.memory']
    limited.save(wait=True)
    assert int(cgroup_value(pid, 'memory', 'memory.limit_in_bytes')) > 2 ** 40


def test_cpu_allowance_percentage_is_a_share(client, backend):
    inst = create_busybox(client, backend, config={'limits.cpu.allowance': '50%'})
    try:
        inst.start(wait=True)
        pid = inst.state().pid
        assert cgroup_value(pid, 'cpu', 'cpu.shares') == '512'
        assert cgroup_value(pid, 'cpu', 'cpu.cfs_quota_us') == '-1'
    finally:
        cleanup(inst)


def test_profile_limits_apply_and_follow_profile_updates(client, backend):
    profile = client.profiles.create(unique('limits'), config={'limits.memory': '200MiB'})
    inst = create_busybox(client, backend, profiles=['default', profile.name])
    try:
        assert inst.expanded_config['limits.memory'] == '200MiB'
        inst.start(wait=True)
        pid = inst.state().pid
        assert cgroup_value(pid, 'memory', 'memory.limit_in_bytes') == str(200 * MiB)
        profile.config['limits.memory'] = '300MiB'
        profile.save()
        assert cgroup_value(pid, 'memory', 'memory.limit_in_bytes') == str(300 * MiB)
        # the instance's own key wins over its profiles
        inst.config['limits.memory'] = '100MiB'
        inst.save(wait=True)
        assert cgroup_value(pid, 'memory', 'memory.limit_in_bytes') == str(100 * MiB)
    finally:
        cleanup(inst)
        profile.delete()


def test_root_disk_io_limits(client, backend):
    inst = create_busybox(client, backend, devices={'root': {
        'type': 'disk', 'path': '/', 'pool': client.profiles.get('default').devices['root']['pool'],
        'limits.read': '10MB', 'limits.write': '100iops'}})
    try:
        rootfs_device = blkio.block_device_of(rootfs_path(backend, inst.name))
        inst.start(wait=True)
        pid = inst.state().pid
        if rootfs_device is None:   # e.g. a tmpfs data dir: nothing to throttle, start still works
            assert cgroup_value(pid, 'blkio', 'blkio.throttle.read_bps_device') == ''
            return
        assert cgroup_value(pid, 'blkio', 'blkio.throttle.read_bps_device') == \
            '%s 10000000' % rootfs_device
        assert cgroup_value(pid, 'blkio', 'blkio.throttle.write_iops_device') == \
            '%s 100' % rootfs_device
    finally:
        cleanup(inst)


@pytest.mark.parametrize('config, key', [
    ({'limits.cpu': '64'}, 'limits.cpu'),
    ({'limits.cpu': '0-63'}, 'limits.cpu'),
    ({'limits.processes': '-1'}, 'limits.processes'),
    ({'limits.memory': '150%'}, 'limits.memory'),
    ({'limits.memory.enforce': 'sometimes'}, 'limits.memory.enforce'),
    ({'limits.disk.priority': '11'}, 'limits.disk.priority'),
    ({'limits.cpu.allowance': '10ms/0ms'}, 'limits.cpu.allowance'),
])
def test_malformed_limits_refused(client, config, key):
    resp = client.api.session.post(client.api._api_endpoint + '/instances', data=json.dumps(
        {'name': unique(), 'source': {'type': 'none'}, 'config': config}))
    assert resp.status_code == 400, resp.text
    assert key in resp.json()['error']


def test_live_update_refused_keeps_old_config(client, backend, limited):
    limited.config['limits.cpu'] = '7'
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        limited.save(wait=True)
    assert 'limits.cpu' in str(err.value)
    assert client.instances.get(limited.name).config['limits.cpu'] == '1'


def test_disk_priority_sets_the_blkio_weight(client, backend):
    inst = create_busybox(client, backend, config={'limits.disk.priority': '5'})
    try:
        inst.start(wait=True)
        pid = inst.state().pid
        weight = [key for key in blkio.priority_items('5')]
        assert weight, 'this kernel has a BFQ/CFQ blkio weight file'
        assert cgroup_value(pid, 'blkio', weight[0]).split()[-1] == '500'
        inst.config['limits.disk.priority'] = '10'
        inst.save(wait=True)
        assert cgroup_value(pid, 'blkio', weight[0]).split()[-1] == '1000'
        del inst.config['limits.disk.priority']
        inst.save(wait=True)
        assert cgroup_value(pid, 'blkio', weight[0]).split()[-1] == '100'
    finally:
        cleanup(inst)


def test_kernel_limits_on_init(client, backend):
    inst = create_busybox(client, backend, config={'limits.kernel.nofile': '777:888'})
    try:
        inst.start(wait=True)
        with open('/proc/%d/limits' % inst.state().pid) as f:
            line = [line for line in f if line.startswith('Max open files')][0]
        assert line.split()[3:5] == ['777', '888']
    finally:
        cleanup(inst)


def test_stateful_stop_refused(client, limited):
    resp = client.api.session.put(
        client.api._api_endpoint + '/instances/%s/state' % limited.name,
        data=json.dumps({'action': 'stop', 'stateful': True}))
    assert resp.status_code == 400 and 'CRIU' in resp.json()['error']
    assert client.instances.get(limited.name).status == 'Running'
