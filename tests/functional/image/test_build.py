"""nova-lxd-image build: busybox (built afresh in each run) and Debian (the cached build)."""
import hashlib
import http.server
import os
import re
import subprocess
import sys
import tarfile
import threading

import pytest
import yaml

from nova_lxd.image import debian
from nova_lxd.image.errors import BuildError
from tests import images
from tests.functional.image import disks


def _cli(*args, env=None):
    return subprocess.run([sys.executable, '-m', 'nova_lxd.image.cli'] + list(args),
                          capture_output=True, text=True, env=env, timeout=600)


def _meta(path):
    return yaml.safe_load(disks.read_member(path, 'metadata.yaml'))


@pytest.mark.parametrize('compression', ['gz', 'xz'])
def test_build_busybox(tmp_path, compression):
    env = dict(os.environ, SOURCE_DATE_EPOCH='1700000000')
    proc = _cli('build', 'busybox', '-o', str(tmp_path), '--compression', compression, env=env)
    assert proc.returncode == 0, proc.stderr
    path, fp_line = proc.stdout.splitlines()
    assert re.fullmatch(r'busybox-[0-9.]+-x86_64\.tar\.' + compression, os.path.basename(path))
    with open(path, 'rb') as f:
        assert fp_line == 'fingerprint: ' + hashlib.sha256(f.read()).hexdigest()
    assert 'packed' in proc.stderr                      # progress was shown
    assert os.listdir(tmp_path) == [os.path.basename(path)]   # no work dirs left

    meta = _meta(path)
    assert meta['architecture'] == 'x86_64'
    assert meta['creation_date'] == 1700000000
    props = meta['properties']
    assert props['os'] == 'BusyBox' and props['variant'] == 'default'
    assert props['release'] and props['description'].startswith('BusyBox ')
    assert (props['halt_signal'], props['reboot_signal'], props['init_cmd']) == (
        'SIGUSR1', 'SIGTERM', '/sbin/init')
    assert meta['templates']['/etc/hosts']['when'] == ['create', 'copy']
    assert disks.read_member(path, 'templates/hostname.tpl') == b'{{ container.name }}\n'
    assert b'{{ container.name }}' in disks.read_member(path, 'templates/hosts.tpl')

    members = disks.rootfs_members(path)
    assert members['rootfs/bin/busybox'].isfile() and members['rootfs/bin/busybox'].mode & 0o111
    for applet in ('sbin/init', 'bin/sh', 'sbin/udhcpc', 'sbin/ip', 'sbin/halt'):
        assert members['rootfs/' + applet].linkname == '/bin/busybox'
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert members['rootfs/tmp'].mode & 0o7777 == 0o1777
    inittab = disks.read_member(path, 'rootfs/etc/inittab').decode()
    entries = [line for line in inittab.splitlines() if line and not line.startswith('#')]
    # no getty, no respawned or askfirst shell: just boot and shutdown scripts
    assert entries == ['::sysinit:/etc/init.d/rcS', '::shutdown:/etc/init.d/rcK']
    assert members['rootfs/usr/share/udhcpc/default.script'].mode & 0o111
    rcs = disks.read_member(path, 'rootfs/etc/init.d/rcS').decode()
    assert 'udhcpc -b -i "$name"' in rcs
    assert disks.read_member(path, 'rootfs/etc/passwd').startswith(b'root:x:0:0:')
    assert disks.read_member(path, 'rootfs/etc/group').startswith(b'root:x:0:')
    assert disks.read_member(path, 'rootfs/etc/hostname') == b'busybox\n'
    # the udhcpc script is valid shell
    script = disks.read_member(path, 'rootfs/usr/share/udhcpc/default.script')
    assert subprocess.run(['/bin/busybox', 'sh', '-n'], input=script).returncode == 0


def test_busybox_build_is_reproducible(tmp_path):
    """Same inputs, same file name: callers can cache by it (the bytes are not promised)."""
    env = dict(os.environ, SOURCE_DATE_EPOCH='1700000000')
    a = _cli('build', 'busybox', '-q', '-o', str(tmp_path / 'a'), env=env)
    b = _cli('build', 'busybox', '-q', '-o', str(tmp_path / 'b'), env=env)
    assert a.returncode == b.returncode == 0
    assert a.stderr == '' and b.stderr == ''            # -q: no progress lines
    assert os.listdir(tmp_path / 'a') == os.listdir(tmp_path / 'b')


def test_debian_image_cached():
    path = images.debian_image()
    assert os.path.basename(path) == 'debian-bookworm-systemd-x86_64.tar.gz'
    meta = _meta(path)
    props = meta['properties']
    assert meta['architecture'] == 'x86_64'
    assert (props['os'], props['release'], props['variant']) == ('Debian', 'bookworm', 'default')
    assert props['halt_signal'] == 'SIGRTMIN+3' and props['init_cmd'] == '/sbin/init'
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members['rootfs/sbin'].linkname == 'usr/sbin'        # merged /usr
        assert members['rootfs/usr/sbin/init'].linkname.endswith('/systemd')
        assert tar.extractfile('rootfs/etc/machine-id').read() == b''
        assert tar.extractfile('rootfs/etc/hostname').read() == b'debian\n'
        assert tar.extractfile('rootfs/etc/debian_version').read().startswith(b'12.')
        assert members['rootfs/etc/resolv.conf'].linkname == \
            '../run/systemd/resolve/stub-resolv.conf'
        assert b'DHCP=yes' in tar.extractfile(
            'rootfs/etc/systemd/network/90-nova-lxd-dhcp.network').read()
    names = set(members)
    assert 'rootfs/etc/systemd/system/multi-user.target.wants/systemd-networkd.service' in names
    assert not [n for n in names if n.startswith('rootfs/var/cache/apt/archives/')
                and n.endswith('.deb')]
    assert not [n for n in names if n.startswith('rootfs/var/lib/apt/lists/')
                and n.endswith('_Packages')]
    assert not [n for n in names if n.startswith('rootfs/dev/') and n != 'rootfs/dev/']
    assert not [m for m in members.values() if m.isdev()]


@pytest.fixture
def empty_mirror(tmp_path):
    """A local HTTP 'mirror' with nothing on it: debootstrap must fail, cleanly."""
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tmp_path / 'www'), **kw)
    os.makedirs(tmp_path / 'www')
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d/debian' % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_debian_build_failure_is_reported_and_cleaned_up(tmp_path, empty_mirror):
    out = tmp_path / 'out'
    proc = _cli('build', 'debian', '-o', str(out), '--mirror', empty_mirror)
    assert proc.returncode == 1
    assert 'nova-lxd-image: debootstrap failed' in proc.stderr
    assert 'Release' in proc.stderr                     # debootstrap's own reason is shown
    assert os.listdir(out) == []
    assert disks.leftovers(str(out)) == []


def test_debian_build_refuses_bad_arguments(tmp_path):
    with pytest.raises(BuildError, match='not a Debian package name'):
        debian.build(str(tmp_path), packages=['ok', '../../etc'])
    with pytest.raises(BuildError, match='unknown init'):
        debian.build(str(tmp_path), init='upstart')
    assert os.listdir(tmp_path) == []
    proc = _cli('build', 'debian', '--init', 'upstart')
    assert proc.returncode == 2 and "invalid choice: 'upstart'" in proc.stderr


def test_debian_cloud_init_image_cached():
    """Extra packages go in with the image's own apt.

    (debootstrap alone cannot resolve the virtual packages cloud-init's dependencies need.)
    """
    path = images.debian_image(cloud_init=True)
    assert os.path.basename(path) == 'debian-bookworm-systemd-x86_64-cloud-init.tar.gz'
    props = _meta(path)['properties']
    assert props['variant'] == 'cloud' and props['packages'] == 'cloud-init'
    with tarfile.open(path) as tar:
        status = tar.extractfile('rootfs/var/lib/dpkg/status').read().decode()
        names = set(tar.getnames())
        # cloud-init's locale module keeps a configured locale that needs no `locales` package
        locale = tar.extractfile('rootfs/etc/default/locale').read().decode()
    assert locale == 'LANG=C.UTF-8\n'
    installed = {block.split('\n')[0][len('Package: '):]: block for block in status.split('\n\n')
                 if block.startswith('Package: ')}
    for package in ('cloud-init', 'python3-cryptography', 'systemd-sysv'):
        assert 'Status: install ok installed' in installed[package], package
    assert 'rootfs/usr/sbin/policy-rc.d' not in names      # the build's own, removed
    assert not [n for n in names if n.endswith('.deb')]
