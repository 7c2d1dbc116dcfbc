"""The read-only inspection helpers of nova_lxd.image.convert, on plain directories."""
import os
import shutil
import struct

import pytest

from nova_lxd.image import convert
from nova_lxd.image.errors import ConvertRefused


@pytest.fixture
def root(tmp_path):
    r = tmp_path / 'root'
    for d in ('etc', 'usr/lib', 'usr/bin', 'usr/sbin', 'lib/systemd'):
        os.makedirs(r / d)
    os.symlink('usr/bin', r / 'bin')
    os.symlink('usr/sbin', r / 'sbin')
    (r / 'usr/lib/os-release').write_text('ID=debian\nVERSION_CODENAME=bookworm\n')
    os.symlink('../usr/lib/os-release', r / 'etc/os-release')
    return str(r)


def test_resolve_stays_inside_the_root(root, tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text('host file')
    os.symlink('/etc/passwd', os.path.join(root, 'etc/abs'))              # absolute
    os.symlink('../../../../../secret', os.path.join(root, 'etc/up'))     # climbing
    os.symlink('loop2', os.path.join(root, 'etc/loop1'))
    os.symlink('loop1', os.path.join(root, 'etc/loop2'))
    assert convert.resolve_in_root(root, 'etc/abs') is None      # no /etc/passwd in the root
    (tmp_path / 'root/etc/passwd').write_text('image passwd')
    assert convert.resolve_in_root(root, 'etc/abs') == os.path.join(root, 'etc/passwd')
    assert convert.resolve_in_root(root, 'etc/up') is None
    assert convert.resolve_in_root(root, '../../secret') is None
    assert convert.resolve_in_root(root, 'etc/loop1') is None
    assert convert.resolve_in_root(root, 'etc/os-release') == os.path.join(
        root, 'usr/lib/os-release')


def test_find_root_and_os_release(root, tmp_path):
    assert convert.find_root(root, 'ext4') == ''
    assert convert.read_os_release(root) == {'ID': 'debian', 'VERSION_CODENAME': 'bookworm'}
    top = tmp_path / 'btrfs'
    os.makedirs(top / 'home')
    shutil.move(root, top / '@')
    assert convert.find_root(str(top), 'btrfs') == '@'
    assert convert.find_root(str(top), 'ext4') is None          # subvolumes are btrfs only
    os.makedirs(tmp_path / 'data/etc')
    assert convert.find_root(str(tmp_path / 'data'), 'ext4') is None


def _elf(path, machine, bits=64, little=True):
    head = bytearray(64)
    head[:4] = b'\x7fELF'
    head[4] = 2 if bits == 64 else 1
    head[5] = 1 if little else 2
    struct.pack_into('<H' if little else '>H', head, 18, machine)
    with open(path, 'wb') as f:
        f.write(head)


def test_architecture_from_elf_headers(root):
    _elf(os.path.join(root, 'usr/bin/sh'), 0xb7)
    assert convert.elf_architecture(root) == 'aarch64'
    _elf(os.path.join(root, 'usr/bin/sh'), 0x3e)
    assert convert.elf_architecture(root) == 'x86_64'
    _elf(os.path.join(root, 'usr/bin/sh'), 0x16, little=False)
    assert convert.elf_architecture(root) == 's390x'
    os.unlink(os.path.join(root, 'usr/bin/sh'))
    assert convert.elf_architecture(root) is None


def test_init_properties(root):
    os.symlink('/lib/systemd/systemd', os.path.join(root, 'usr/sbin/init'))
    (open(os.path.join(root, 'lib/systemd/systemd'), 'w')).close()
    assert convert.init_properties(root)['halt_signal'] == 'SIGRTMIN+3'
    os.unlink(os.path.join(root, 'usr/sbin/init'))
    assert convert.init_properties(root) == {}


@pytest.mark.parametrize('head,message', [
    (b'KDMV\x01\x00\x00\x00', 'VMDK data'),
    (b'\x1f\x8b\x08\x00', 'gzip data.*already a unified tarball'),
    (b'\xfd7zXZ\x00\x00', 'xz data'),
    (b'vhdxfile', 'VHDX data.*qemu-img'),
])
def test_sniff_refuses_other_formats(tmp_path, head, message):
    path = tmp_path / 'f'
    path.write_bytes(head + b'\0' * 100)
    with pytest.raises(ConvertRefused, match=message):
        convert.sniff_format(str(path))


def test_sniff_qcow2_and_raw(tmp_path):
    (tmp_path / 'q').write_bytes(b'QFI\xfb' + b'\0' * 100)
    (tmp_path / 'r').write_bytes(b'\0' * 100)
    assert convert.sniff_format(str(tmp_path / 'q')) == 'qcow2'
    assert convert.sniff_format(str(tmp_path / 'r')) == 'raw'
