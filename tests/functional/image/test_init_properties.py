"""Image properties for the container's init, honoured by the bundled backend (pylxd).

init_cmd becomes lxc.init.cmd, reboot_signal lxc.signal.reboot (a clean restart reboots the init
in place with it), halt_signal lxc.signal.halt. The test image is the busybox one with a shell
script as its init that records which signal it got; the properties arrive from the image's
metadata.yaml as `image.*` config keys of the instance, as LXD does with image properties.
"""
import io
import tarfile
import time
import uuid

import pylxd.exceptions
import pytest
import yaml

from tests import images

# PID 1 of the test image: says it ran (with its arguments), records the signals it handles
TEST_INIT = """#!/bin/sh
echo "$$ $*" > /init-ran
trap 'echo halt >> /signals; exit 0' USR1
trap 'echo reboot >> /signals; exec /bin/busybox reboot -f' USR2
while :; do sleep 1 & wait $!; done
"""
PROPERTIES = {'init_cmd': '/sbin/nova-test-init from-the-image',
              'halt_signal': 'SIGUSR1', 'reboot_signal': 'SIGUSR2'}


def _add(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _test_image():
    """The busybox unified tarball with the test init and PROPERTIES, as bytes."""
    out = io.BytesIO()
    with tarfile.open(images.busybox_image()) as src, \
            tarfile.open(fileobj=out, mode='w:gz') as dst:
        for member in src:
            data = src.extractfile(member) if member.isfile() else None
            if member.name == 'metadata.yaml':
                meta = yaml.safe_load(data)
                meta['properties'].update(PROPERTIES)
                meta['properties']['description'] = 'busybox with a test init'
                _add(dst, 'metadata.yaml', yaml.safe_dump(meta).encode())
                continue
            dst.addfile(member, data)
        _add(dst, 'rootfs/sbin/nova-test-init', TEST_INIT.encode(), 0o755)
    return out.getvalue()


@pytest.fixture(scope='module')
def test_image(backend):
    client = backend.client()
    image = client.images.create(_test_image(), wait=True)
    yield image
    image.delete(wait=True)


@pytest.fixture
def instance(client, test_image):
    created = []

    def create(devices=None, **config):
        inst = client.instances.create(
            {'name': 'initp-%s' % uuid.uuid4().hex[:8], 'config': config,
             'devices': devices or {},
             'source': {'type': 'image', 'fingerprint': test_image.fingerprint}}, wait=True)
        created.append(inst)
        return inst
    yield create
    for inst in created:
        inst.sync()
        if inst.status != 'Stopped':
            inst.stop(force=True, wait=True)
        inst.delete(wait=True)


def _read(inst, path):
    result = inst.execute(['cat', path])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _wait_for(inst, path):
    for _ in range(200):
        result = inst.execute(['cat', path])
        if result.exit_code == 0:
            return result.stdout
        time.sleep(0.05)
    raise AssertionError('%s never appeared' % path)


def test_init_cmd_from_the_image_runs_as_pid_1(instance):
    inst = instance()
    assert inst.config['image.init_cmd'] == PROPERTIES['init_cmd']
    inst.start(wait=True)
    # the script wrote its own PID (1 in the container) and the image's arguments
    assert _wait_for(inst, '/init-ran') == '1 from-the-image\n'
    assert _read(inst, '/proc/1/cmdline').split('\0')[:3] == [
        '/bin/sh', '/sbin/nova-test-init', 'from-the-image']


def test_clean_restart_uses_the_reboot_signal_and_stop_the_halt_signal(client, instance):
    # with a NIC: LXC hands it back to the host between the two boots and takes it again
    inst = instance(devices={'eth0': {'type': 'nic', 'nictype': 'p2p', 'name': 'eth0',
                                      'hwaddr': '00:16:3e:aa:bb:cc'}})
    inst.start(wait=True)
    _wait_for(inst, '/init-ran')
    pid = inst.state().pid
    inst.restart(force=False, timeout=30, wait=True)
    inst.sync()
    assert inst.status == 'Running'
    assert inst.state().pid != pid                       # a new init ...
    assert _wait_for(inst, '/init-ran') == '1 from-the-image\n'
    assert _read(inst, '/signals') == 'reboot\n'         # ... after the reboot signal, no halt
    assert _read(inst, '/sys/class/net/eth0/address') == '00:16:3e:aa:bb:cc\n'
    inst.stop(force=False, timeout=30, wait=True)
    inst.sync()
    assert inst.status == 'Stopped'
    assert client.instances.get(inst.name).files.get('/signals') == b'reboot\nhalt\n'


def test_an_unknown_signal_refuses_the_start_and_leaves_it_stopped(client, instance):
    inst = instance(**{'image.reboot_signal': 'SIGNOTONE'})
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        inst.start(wait=True)
    assert 'image.reboot_signal' in str(err.value) and 'SIGNOTONE' in str(err.value)
    inst.sync()
    assert inst.status == 'Stopped'
    # a relative init command is refused the same way
    inst.config['image.reboot_signal'] = 'SIGUSR2'
    inst.config['image.init_cmd'] = 'sbin/nova-test-init'
    inst.save(wait=True)
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        inst.start(wait=True)
    assert 'image.init_cmd' in str(err.value)
    inst.sync()
    assert inst.status == 'Stopped'


def test_clean_restart_of_a_systemd_image_reboots_it_in_place(client):
    """The Debian image says reboot_signal SIGINT: systemd goes through reboot.target."""
    path = images.debian_image()
    # another test of this session's backend may hold it already: then it is theirs to delete
    ours = not client.images.exists(images.fingerprint(path))
    if ours:
        with open(path, 'rb') as f:
            client.images.create(f.read(), wait=True)
    image = client.images.get(images.fingerprint(path))
    inst = None
    try:
        assert image.properties['reboot_signal'] == 'SIGINT'
        inst = client.instances.create(
            {'name': 'initp-sd-%s' % uuid.uuid4().hex[:8],
             'source': {'type': 'image', 'fingerprint': image.fingerprint}}, wait=True)
        inst.start(wait=True)
        assert _systemd_state(inst) in ('running', 'degraded')
        pid = inst.state().pid
        inst.restart(force=False, timeout=60, wait=True)
        inst.sync()
        assert inst.status == 'Running' and inst.state().pid != pid
        assert _systemd_state(inst) in ('running', 'degraded')
        # the previous boot ended the way a clean reboot does
        journal = inst.execute(['journalctl', '-b', '-1', '--no-pager', '-o', 'cat']).stdout
        assert 'Reached target reboot.target' in journal
    finally:
        if inst is not None:
            inst.sync()
            if inst.status != 'Stopped':
                inst.stop(force=True, wait=True)
            inst.delete(wait=True)
        if ours:
            image.delete(wait=True)


def _systemd_state(inst):
    """systemctl is-system-running --wait, once systemd's bus answers."""
    for _ in range(300):
        result = inst.execute(['systemctl', 'is-system-running', '--wait'])
        if result.stdout.strip() not in ('', 'offline'):
            return result.stdout.strip()
        time.sleep(0.2)
    return result.stdout + result.stderr
