"""debian.configure_rootfs on a small fake tree: what a debootstrapped system gets."""
import os

from nova_lxd.image import debian


def _tree(tmp_path):
    root = tmp_path / 'rootfs'
    for d in ('etc/ssh', 'var/cache/apt/archives', 'var/lib/apt/lists', 'var/lib/dbus',
              'lib/systemd/system'):
        os.makedirs(root / d)
    for f, text in (('etc/ssh/ssh_host_ed25519_key', 'secret'), ('etc/machine-id', 'abc\n'),
                    ('var/lib/dbus/machine-id', 'abc\n'), ('etc/resolv.conf', 'nameserver 1.1.1.1'),
                    ('var/cache/apt/archives/x_1_amd64.deb', 'deb'),
                    ('var/cache/apt/pkgcache.bin', 'bin'),
                    ('var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64'
                     '_Packages', 'pkgs')):
        (root / f).write_text(text)
    return root


def test_configure_rootfs(tmp_path):
    root = _tree(tmp_path)
    debian.configure_rootfs(str(root), ['openssh-server'])
    assert (root / 'etc/hostname').read_text() == 'debian\n'
    assert 'debian' in (root / 'etc/hosts').read_text()
    assert (root / 'etc/machine-id').read_text() == ''       # made per container at boot
    assert not (root / 'var/lib/dbus/machine-id').exists()
    assert (root / 'etc/resolv.conf').read_text() == ''      # the build host's is not shipped
    wants = root / 'etc/systemd/system/multi-user.target.wants'
    assert os.readlink(wants / 'systemd-networkd.service') == \
        '/lib/systemd/system/systemd-networkd.service'
    assert 'DHCP=yes' in (root / 'etc/systemd/network/90-nova-lxd-dhcp.network').read_text()
    # no shared SSH host keys: each instance makes its own at first boot
    assert not list((root / 'etc/ssh').glob('ssh_host_*'))
    unit = (root / 'etc/systemd/system/nova-lxd-ssh-keygen.service').read_text()
    assert 'ssh-keygen -A' in unit and 'Before=ssh.service' in unit
    assert os.path.islink(wants / 'nova-lxd-ssh-keygen.service')
    assert os.listdir(root / 'var/cache/apt/archives') == []
    assert os.listdir(root / 'var/lib/apt/lists') == []
    assert not (root / 'var/cache/apt/pkgcache.bin').exists()


def test_resolved_stub_link_is_kept(tmp_path):
    root = _tree(tmp_path)
    os.unlink(root / 'etc/resolv.conf')
    os.symlink('../run/systemd/resolve/stub-resolv.conf', root / 'etc/resolv.conf')
    debian.configure_rootfs(str(root), [])
    assert os.readlink(root / 'etc/resolv.conf') == '../run/systemd/resolve/stub-resolv.conf'


def test_without_openssh_keys_are_left_alone(tmp_path):
    root = _tree(tmp_path)
    debian.configure_rootfs(str(root), [])
    assert (root / 'etc/ssh/ssh_host_ed25519_key').exists()
    assert not (root / 'etc/systemd/system/nova-lxd-ssh-keygen.service').exists()
