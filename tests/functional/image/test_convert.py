"""nova-lxd-image convert on real disk images built here (mkfs.ext4 -d, sfdisk, qemu-img), and
the refusals, each of which must leave no loop device, mount or temporary file behind."""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from nova_lxd.image import convert
from nova_lxd.image.errors import ConvertRefused
from tests import images
from tests.functional.image import disks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='loop devices and mounts need root')

OS_RELEASE = ('PRETTY_NAME="Testix 7 (nova-lxd test)"\nNAME="Testix"\nID=testix\n'
              'VERSION_ID="7"\nVERSION_CODENAME=seven\n')


@pytest.fixture(scope='module')
def busybox_tree(tmp_path_factory):
    """The busybox image's rootfs, shaped like a cloud image's root.

    Its os-release is in /usr/lib (linked from /etc, as Debian does) and its fstab names the
    root by UUID.
    """
    root = disks.extract_rootfs(images.busybox_image(),
                                str(tmp_path_factory.mktemp('tree') / 'rootfs'))
    os.makedirs(os.path.join(root, 'usr/lib'), exist_ok=True)
    with open(os.path.join(root, 'usr/lib/os-release'), 'w') as f:
        f.write(OS_RELEASE)
    os.unlink(os.path.join(root, 'etc/os-release'))
    os.symlink('../usr/lib/os-release', os.path.join(root, 'etc/os-release'))
    with open(os.path.join(root, 'etc/fstab'), 'w') as f:
        f.write('UUID=0b6e7f2c-0000-4000-8000-000000000000 / ext4 defaults 0 1\n')
    return root


@pytest.fixture
def work(tmp_path):
    yield tmp_path
    assert disks.leftovers(str(tmp_path)) == []


def _check_converted(out, fingerprint):
    assert fingerprint == images.fingerprint(out)
    members = disks.rootfs_members(out)
    assert members['rootfs/bin/busybox'].isfile()
    assert members['rootfs/sbin/init'].issym()
    assert members['rootfs/etc/os-release'].linkname == '../usr/lib/os-release'
    assert {'templates/hostname.tpl', 'templates/hosts.tpl'} <= set(members)
    meta = yaml.safe_load(disks.read_member(out, 'metadata.yaml'))
    assert meta['architecture'] == 'x86_64'
    props = meta['properties']
    assert props['os'] == 'Testix' and props['release'] == 'seven'
    assert props['description'].startswith('Testix 7 (nova-lxd test)')
    assert props['halt_signal'] == 'SIGUSR1'        # /sbin/init leads to busybox
    assert meta['templates']['/etc/hostname'] == {
        'when': ['create', 'copy'], 'template': 'hostname.tpl', 'create_only': False,
        'properties': {}}
    # the disk's fstab is kept aside; a container's mounts come from its devices
    assert b'UUID=0b6e7f2c' in disks.read_member(out, 'rootfs/etc/fstab.disk-image')
    assert b'UUID' not in disks.read_member(out, 'rootfs/etc/fstab')
    return meta


@pytest.mark.parametrize('table', ['gpt', 'mbr', 'mbr-logical'])
def test_partitioned_qcow2_converts(work, busybox_tree, table):
    fs = disks.make_ext4(str(work / 'root.ext4'), busybox_tree, 24)
    # an empty partition first, so the root is not simply the first one
    raw = disks.make_disk(str(work / 'disk.raw'), [(None, 4), (fs, 24)], table)
    os.unlink(fs)
    qcow2 = disks.to_qcow2(raw, str(work / 'disk.qcow2'))
    os.unlink(raw)
    out = str(work / 'out.tar.gz')
    fingerprint = convert.disk_to_unified(qcow2, out, properties={'variant': 'cloud'})
    meta = _check_converted(out, fingerprint)
    assert meta['properties']['variant'] == 'cloud'
    assert os.listdir(work) == ['disk.qcow2', 'out.tar.gz'] or \
        sorted(os.listdir(work)) == ['disk.qcow2', 'out.tar.gz']


def test_bare_filesystem_raw_converts_with_the_cli(work, busybox_tree):
    raw = disks.make_ext4(str(work / 'root.img'), busybox_tree, 24)
    out = str(work / 'out.tar.xz')
    proc = subprocess.run([sys.executable, '-m', 'nova_lxd.image.cli', 'convert', raw, out,
                           '--compression', 'xz'], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    fingerprint = proc.stdout.split('fingerprint: ')[1].strip()
    _check_converted(out, fingerprint)
    assert 'extracting the root filesystem of the whole disk' in proc.stderr


def test_xfs_root_in_an_mbr_partition(work, busybox_tree):
    fs = disks.make_xfs(str(work / 'root.xfs'), busybox_tree)
    raw = disks.make_disk(str(work / 'disk.raw'), [(fs, 320)], 'mbr')
    os.unlink(fs)
    out = str(work / 'out.tar.gz')
    _check_converted(out, convert.disk_to_unified(raw, out))


def test_btrfs_root_in_a_subvolume_directory(work, busybox_tree):
    source = str(work / 'src')
    disks.copytree(busybox_tree, os.path.join(source, '@'))
    raw = disks.make_btrfs(str(work / 'btrfs.img'), source, 128)
    out = str(work / 'out.tar.gz')
    _check_converted(out, convert.disk_to_unified(raw, out))
    assert 'rootfs/@' not in disks.rootfs_members(out)


def test_prefers_the_root_with_os_release(work, busybox_tree):
    bare = str(work / 'bare')
    for d in ('etc', 'bin'):
        os.makedirs(os.path.join(bare, d))
    first = disks.make_ext4(str(work / 'a.ext4'), bare, 8, label='other')
    second = disks.make_ext4(str(work / 'b.ext4'), busybox_tree, 24)
    raw = disks.make_disk(str(work / 'disk.raw'), [(first, 8), (second, 24)], 'gpt')
    os.unlink(first)
    os.unlink(second)
    out = str(work / 'out.tar.gz')
    _check_converted(out, convert.disk_to_unified(raw, out))


def _refuse(work, path, reason):
    out = str(work / 'out.tar.gz')
    with pytest.raises(ConvertRefused, match=reason):
        convert.disk_to_unified(path, out)
    assert not os.path.exists(out)
    proc = subprocess.run([sys.executable, '-m', 'nova_lxd.image.cli', 'convert', path, out],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith('nova-lxd-image: ')
    assert 'Traceback' not in proc.stderr
    assert not os.path.exists(out)


def test_refuses_filesystem_without_linux_root(work):
    src = str(work / 'data')
    os.makedirs(os.path.join(src, 'photos'))
    fs = disks.make_ext4(str(work / 'data.ext4'), src, 8)
    raw = disks.make_disk(str(work / 'disk.raw'), [(fs, 8)], 'mbr')
    os.unlink(fs)
    qcow2 = disks.to_qcow2(raw, str(work / 'disk.qcow2'))
    _refuse(work, qcow2, r'no Linux root filesystem found .*no /etc with /usr or /bin')


def test_refuses_partitions_without_linux_filesystem(work):
    raw = disks.make_disk(str(work / 'disk.raw'), [(None, 8)], 'gpt')
    _refuse(work, raw, r'no Linux root filesystem: no ext2/3/4, xfs or btrfs filesystem '
                       r'\(found partition 1 \(unknown contents, 8 MiB\)\)')


def test_refuses_garbage_partition_table(work):
    path = str(work / 'garbage.img')
    with open(path, 'wb') as f:
        block = bytearray(os.urandom(512))
        block[446] = 0x42                       # not a boot flag: not an MBR entry
        block[510:512] = b'\x55\xaa'
        f.write(bytes(block) + os.urandom(4 << 20))
    _refuse(work, path, 'no partition table .* and no filesystem signature found')


def test_refuses_corrupt_gpt(work):
    raw = disks.make_disk(str(work / 'disk.raw'), [(None, 8)], 'gpt')
    with open(raw, 'r+b') as f:
        f.seek(512 + 40)
        f.write(b'\xff\xff')                    # first usable LBA: breaks the header CRC
    _refuse(work, raw, 'corrupt GPT: header checksum mismatch')


def test_refuses_encrypted_partition(work):
    raw = disks.make_disk(str(work / 'disk.raw'), [(None, 8)], 'gpt')
    with open(raw, 'r+b') as f:
        f.seek(1 << 20)
        f.write(b'LUKS\xba\xbe\x00\x02')        # a LUKS2 header where the root would be
    _refuse(work, raw, 'encrypted \\(LUKS\\)')


def test_refuses_non_image_files(work):
    text = work / 'notes.txt'
    text.write_text('just some text\n' * 1000)
    _refuse(work, str(text), 'no partition table')
    tarball = images.busybox_image()
    with pytest.raises(ConvertRefused, match='gzip data.*already a unified tarball'):
        convert.disk_to_unified(tarball, str(work / 'out.tar.gz'))
    tiny = work / 'tiny.img'
    tiny.write_bytes(b'\0' * 100)
    _refuse(work, str(tiny), 'too small to be a disk image')
    _refuse(work, str(work), 'not a regular file')


def test_refuses_qcow2_with_backing_file(work, busybox_tree):
    """A backing file could name any file on this host; it is never followed."""
    base = disks.make_ext4(str(work / 'base.img'), busybox_tree, 24)
    overlay = disks.to_qcow2(None, str(work / 'overlay.qcow2'), backing=base)
    _refuse(work, overlay, 'backing file')


def test_refuses_truncated_qcow2(work, busybox_tree):
    raw = disks.make_ext4(str(work / 'root.img'), busybox_tree, 24)
    qcow2 = disks.to_qcow2(raw, str(work / 'disk.qcow2'))
    with open(qcow2, 'r+b') as f:
        f.truncate(64)                          # the header itself is cut
    _refuse(work, qcow2, 'not a readable qcow2 image')
    # header intact, clusters gone: qemu-img reads zeros, which hold no partition table
    disks.to_qcow2(raw, qcow2 + '.2')
    with open(qcow2 + '.2', 'r+b') as f:
        f.truncate(4096)
    _refuse(work, qcow2 + '.2', 'no partition table')


def test_interrupt_while_mounted_leaves_nothing(work, busybox_tree):
    """SIGINT (Ctrl-C) and SIGTERM while the root is mounted and being packed.

    The loop device, the mount, the temporary raw copy and the partial tarball all go away.
    """
    src = disks.copytree(busybox_tree, str(work / 'big'))
    with open(os.path.join(src, 'var/filler'), 'wb') as f:
        f.write(os.urandom(96 << 20))           # incompressible: packing takes a while
    raw = disks.make_ext4(str(work / 'root.img'), src, 160)
    qcow2 = disks.to_qcow2(raw, str(work / 'disk.qcow2'))
    os.unlink(raw)
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = str(work / 'out.tar.xz')
        proc = subprocess.Popen([sys.executable, '-m', 'nova_lxd.image.cli', 'convert', qcow2,
                                 out, '--compression', 'xz'],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            while not any(m.startswith(str(work)) for m in _mount_points()):
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.01)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, err
        assert b'interrupted; cleaned up' in err
        assert disks.leftovers(str(work)) == []
        assert not os.path.exists(out)


def _mount_points():
    with open('/proc/self/mounts') as f:
        return [line.split()[1] for line in f]
