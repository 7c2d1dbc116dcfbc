"""Containers stay contained: seccomp, memory and process limits, and the devices they are given.

Each test runs unprivileged busybox containers of the session's private daemon; the hogs are
bounded (a fixed-size allocation, a fixed number of sleepers) so a broken limit cannot hurt the
machine.
"""
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from nova_lxd.backend.instances import lxcconf
from tests.functional.backend.busybox_rootfs import attach, cleanup, create_busybox

# LXD's default deny list (lxd/seccomp): module loading, kexec, open_by_handle_at
LXD_DENIED = ['kexec_load', 'open_by_handle_at', 'init_module', 'finit_module', 'delete_module']


def _run_inside(backend, name, script, timeout=60):
    return subprocess.run(['lxc-attach', '-P', os.path.join(backend.data_dir, 'containers'),
                           '-n', name, '--clear-env', '--', '/bin/sh', '-c', script],
                          capture_output=True, text=True, timeout=timeout)


def _cgroup_file(pid, controller, key):
    with open('/proc/%d/cgroup' % pid) as f:
        for line in f:
            _, controllers, path = line.rstrip('\n').split(':', 2)
            if controller in controllers.split(','):
                return '/sys/fs/cgroup/%s%s/%s' % (controller, path, key)
    raise AssertionError('no %s cgroup for %d' % (controller, pid))


def _read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture
def bystander(client, backend):
    """Another running container that must not notice what its neighbour does."""
    inst = create_busybox(client, backend)
    inst.start(wait=True)
    yield inst
    cleanup(inst)


@pytest.fixture
def started(client, backend):
    made = []

    def start(config=None, devices=None):
        inst = create_busybox(client, backend, config=config, devices=devices)
        made.append(inst)
        inst.start(wait=True)
        return inst
    yield start
    for inst in made:
        cleanup(inst)


def _unharmed(client, backend, bystander):
    bystander.sync()
    assert bystander.status == 'Running'
    assert attach(backend, bystander.name, 'echo', 'alive') == 'alive\n'
    assert client.host_info['api_version'] == '1.0'
    assert backend.process.poll() is None


def test_default_seccomp_policy_denies_what_lxd_denies(client, backend, started):
    inst = started()
    config = _read(os.path.join(backend.data_dir, 'containers', inst.name, 'config'))
    assert 'lxc.seccomp.profile = %s\n' % lxcconf.SECCOMP in config
    policy = _read(lxcconf.SECCOMP)
    for syscall in LXD_DENIED:
        assert '\n%s errno 1' % syscall in policy
    # the filter is installed on the container's init and on anything attached to it
    status = _read('/proc/%d/status' % inst.state().pid)
    assert 'Seccomp:\t2' in status
    assert 'Seccomp:\t2' in attach(backend, inst.name, 'cat', '/proc/self/status')
    # loading a kernel module from inside fails with EPERM and loads nothing
    out = _run_inside(backend, inst.name,
                      'dd if=/dev/zero of=/tmp/evil.ko bs=1k count=4 2>/dev/null; '
                      'insmod /tmp/evil.ko; echo rc=$?; rmmod loop; echo rc=$?')
    assert out.stdout.count('rc=1') == 2, (out.stdout, out.stderr)
    assert 'Operation not permitted' in out.stderr, out.stderr


def test_memory_hog_is_killed_inside_its_container_only(client, backend, started, bystander):
    inst = started(config={'limits.memory': '64MiB', 'limits.memory.swap': 'false'})
    init_pid = inst.state().pid
    # dd allocates its whole block: 256MiB touched against a 64MiB limit
    out = _run_inside(backend, inst.name,
                      'dd if=/dev/zero of=/dev/null bs=256M count=1; echo survived=$?')
    assert 'survived=137' in out.stdout, out      # SIGKILLed by the OOM killer
    oom = dict(line.split() for line in
               _read(_cgroup_file(init_pid, 'memory', 'memory.oom_control')).splitlines())
    assert int(oom.get('oom_kill', 1)) > 0, oom     # (the field exists on kernels >= 4.13)
    assert int(_read(_cgroup_file(init_pid, 'memory', 'memory.max_usage_in_bytes'))) \
        <= 64 * 1024 * 1024
    # the container itself goes on, and nothing outside it noticed
    inst.sync()
    assert inst.status == 'Running' and inst.state().pid == init_pid
    assert attach(backend, inst.name, 'echo', 'still here') == 'still here\n'
    _unharmed(client, backend, bystander)


def test_process_limit_stops_a_fork_bomb(client, backend, started, bystander):
    inst = started(config={'limits.processes': '40'})
    init_pid = inst.state().pid
    # bounded "bomb": 200 sleepers against a limit of 40
    out = _run_inside(backend, inst.name,
                      'n=0; while [ $n -lt 200 ]; do sleep 300 >/dev/null 2>&1 & n=$((n+1)); '
                      'done 2>/dev/null; echo done', timeout=120)
    pids = _cgroup_file(init_pid, 'pids', 'pids.current')
    assert int(_read(pids)) <= 40
    assert int(_read(_cgroup_file(init_pid, 'pids', 'pids.max'))) == 40
    assert int(_read(_cgroup_file(init_pid, 'pids', 'pids.events')).split()[1]) > 0, out
    _unharmed(client, backend, bystander)
    # the host can still fork
    assert subprocess.run(['true']).returncode == 0


@pytest.fixture
def host_dir():
    # traversable by the container's mapped root (pytest's tmp_path is 0700)
    path = tempfile.mkdtemp(prefix='nova-lxd-hardening-', dir='/var/tmp')
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_root_cannot_write_host_files_through_its_devices(client, backend, started, host_dir):
    shared = host_dir / 'host-owned'
    shared.mkdir()
    canary = shared / 'canary'
    canary.write_text('host data\n')
    os.chmod(shared, 0o755)
    before = hashlib.sha256(canary.read_bytes()).hexdigest()
    inst = started(devices={'data': {'type': 'disk', 'source': str(shared),
                                     'path': '/mnt/host'}})
    out = _run_inside(backend, inst.name,
                      'cat /mnt/host/canary; '
                      'echo x > /mnt/host/canary; echo write=$?; '
                      'rm -f /mnt/host/canary; echo rm=$?; '
                      'touch /mnt/host/new; echo create=$?; '
                      'chmod 777 /mnt/host/canary; echo chmod=$?; '
                      # a block device node for the host's first disk / loop device
                      'mknod /tmp/sda b 8 0; echo mknod=$?; mknod /tmp/loop b 7 0; echo mknod=$?')
    assert out.stdout.startswith('host data\n'), out    # it can read what it was given
    for op in ('write', 'rm', 'create', 'chmod', 'mknod'):
        assert '%s=0' % op not in out.stdout, out.stdout
    assert hashlib.sha256(canary.read_bytes()).hexdigest() == before
    assert sorted(os.listdir(shared)) == ['canary']
    assert os.stat(canary).st_mode & 0o777 == 0o644
