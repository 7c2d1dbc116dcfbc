"""Images made by nova-lxd-image boot on the bundled backend (imported and driven with pylxd)."""
import os
import time
import uuid

import pytest

from nova_lxd.image import convert
from tests import images
from tests.backend_fixture import BackendDaemon
from tests.functional.image import disks


@pytest.fixture(scope='module')
def backend():
    """A daemon of this module's own: an import must start from nothing.

    The session's shared daemon may hold these images already (other modules import the same
    cached tarballs).
    """
    daemon = BackendDaemon()
    daemon.start()
    yield daemon
    daemon.destroy()


def _name(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


def _import(client, path):
    with open(path, 'rb') as f:
        return client.images.create(f.read(), wait=True)


def _run(instance, *command):
    result = instance.execute(list(command))
    assert result.exit_code == 0, (command, result.stderr)
    return result.stdout.strip()


def _system_state(instance):
    """systemctl is-system-running --wait, once systemd's bus is up (early exec races it)."""
    for _ in range(300):
        result = instance.execute(['systemctl', 'is-system-running', '--wait'])
        if 'Failed to connect to bus' not in result.stderr:
            return result.stdout.strip()
        time.sleep(0.1)
    return result.stderr


def _console(backend, name):
    path = os.path.join(backend.data_dir, 'logs', name, 'console.log')
    with open(path, errors='replace') as f:
        return f.read()


def _boot(client, fingerprint, name):
    instance = client.instances.create(
        {'name': name, 'source': {'type': 'image', 'fingerprint': fingerprint}}, wait=True)
    instance.start(wait=True)
    instance.sync()
    assert instance.status == 'Running'
    return instance


def _destroy(client, instance, image):
    try:
        if instance is not None:
            instance.sync()
            if instance.status != 'Stopped':
                instance.stop(force=True, wait=True)
            instance.delete(wait=True)
    finally:
        if image is not None:
            image.delete(wait=True)


def test_busybox_image_boots_and_halts_with_its_signal(client, backend):
    path = images.busybox_image()
    image = instance = None
    try:
        image = _import(client, path)
        assert image.fingerprint == images.fingerprint(path)
        assert image.properties['os'] == 'BusyBox'
        name = _name('img-bb')
        instance = _boot(client, image.fingerprint, name)
        assert instance.config['image.halt_signal'] == 'SIGUSR1'
        # the hostname template was rendered into the rootfs, and init applied it
        assert _run(instance, 'cat', '/etc/hostname') == name
        assert _run(instance, 'hostname') == name
        assert name in _run(instance, 'cat', '/etc/hosts')
        assert _run(instance, 'cat', '/proc/1/comm') == 'init'
        assert 'busybox: booting %s' % name in _console(backend, name)
        # no getty or shell was started by init: only init (and udhcpc, with a NIC) run
        ps = _run(instance, 'ps')
        assert 'getty' not in ps and '-sh' not in ps
        instance.stop(force=False, wait=True)          # clean: busybox init only halts on SIGUSR1
        instance.sync()
        assert instance.status == 'Stopped'
        # init ran its shutdown action (rcK), which a forced kill would not
        assert 'busybox: shutting down' in _console(backend, name)
    finally:
        _destroy(client, instance, image)


def test_debian_systemd_image_boots(client, backend):
    path = images.debian_image()
    image = instance = None
    try:
        image = _import(client, path)
        assert image.properties['release'] == 'bookworm'
        name = _name('img-deb')
        instance = _boot(client, image.fingerprint, name)
        assert instance.config['image.halt_signal'] == 'SIGRTMIN+3'
        # the init's program (its name in /proc/1/comm reads `init` until systemd renames itself)
        assert _run(instance, 'readlink', '/proc/1/exe').endswith('/systemd/systemd')
        # systemd reaches its default target (degraded is acceptable in a container)
        assert _system_state(instance) in ('running', 'degraded')
        assert _run(instance, 'hostname') == name
        machine_id = _run(instance, 'cat', '/etc/machine-id')
        assert len(machine_id) == 32          # generated at first boot, not baked in
        assert _run(instance, 'systemctl', 'is-active', 'systemd-networkd') == 'active'
        # DNS from DHCP leases goes through resolved's stub
        assert _run(instance, 'systemctl', 'is-active', 'systemd-resolved') == 'active'
        assert 'nameserver 127.0.0.53' in _run(instance, 'cat', '/etc/resolv.conf')
        instance.stop(force=False, wait=True)
        instance.sync()
        assert instance.status == 'Stopped'
    finally:
        _destroy(client, instance, image)


def test_converted_qcow2_boots(client, backend, tmp_path):
    root = disks.extract_rootfs(images.busybox_image(), str(tmp_path / 'rootfs'))
    fs = disks.make_ext4(str(tmp_path / 'root.ext4'), root, 24)
    raw = disks.make_disk(str(tmp_path / 'disk.raw'), [(fs, 24)], 'gpt')
    qcow2 = disks.to_qcow2(raw, str(tmp_path / 'disk.qcow2'))
    out = str(tmp_path / 'converted.tar.gz')
    convert.disk_to_unified(qcow2, out)
    image = instance = None
    try:
        image = _import(client, out)
        assert 'converted from disk.qcow2' in image.properties['description']
        name = _name('img-cv')
        instance = _boot(client, image.fingerprint, name)
        assert _run(instance, 'hostname') == name
        instance.stop(force=False, wait=True)
        instance.sync()
        assert instance.status == 'Stopped'
    finally:
        _destroy(client, instance, image)
    assert disks.leftovers(str(tmp_path)) == []


def test_converted_debian_cloud_disk_boots_with_systemd(client, backend, tmp_path):
    """A Debian root on a GPT disk, converted, boots to systemd's default target.

    Its fstab is a cloud image's (root and EFI partition by UUID, which no container has).
    """
    root = disks.extract_rootfs(images.debian_image(), str(tmp_path / 'rootfs'))
    with open(os.path.join(root, 'etc/fstab'), 'w') as f:
        f.write('UUID=6f1b2c3d-0000-4000-8000-000000000001 / ext4 rw,discard 0 1\n'
                'UUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n')
    fs = disks.make_ext4(str(tmp_path / 'root.ext4'), root, 400)
    disks.run('rm', '-rf', root)
    # raw this time (qcow2 is covered by the busybox case): a 400 MiB qcow2 round trip
    # would only add minutes
    raw = disks.make_disk(str(tmp_path / 'debian.raw'), [(None, 8), (fs, 400)], 'gpt')
    os.unlink(fs)
    out = str(tmp_path / 'converted.tar.gz')
    convert.disk_to_unified(raw, out)
    image = instance = None
    try:
        image = _import(client, out)
        assert image.properties['os'] == 'Debian' and image.properties['release'] == 'bookworm'
        name = _name('img-cvd')
        instance = _boot(client, image.fingerprint, name)
        # recognised from /sbin/init -> systemd while converting
        assert instance.config['image.halt_signal'] == 'SIGRTMIN+3'
        assert _system_state(instance) in ('running', 'degraded')
        failed = _run(instance, 'systemctl', '--failed', '--plain', '--no-legend')
        assert 'boot-efi.mount' not in failed          # the disk's fstab is not in force
        assert _run(instance, 'hostname') == name
        instance.stop(force=False, wait=True)
        instance.sync()
        assert instance.status == 'Stopped'
    finally:
        _destroy(client, instance, image)
    assert disks.leftovers(str(tmp_path)) == []
