"""InstanceFiles on a plain directory: path resolution never leaves the root (no daemon needed)."""
import os
import stat

import pytest

from nova_lxd.backend.errors import BadRequest, Conflict, NotFound
from nova_lxd.backend.instances import files


class _StoppedInstances:
    """The few facts InstanceFiles asks daemon.instances for, about one stopped instance."""

    def __init__(self, rootfs, idmap=()):
        self._rootfs, self._idmap = rootfs, list(idmap)

    def exists(self, name):
        return name == 'c1'

    def idmap(self, name):
        return self._idmap

    def is_running(self, name):
        return False

    def rootfs(self, name):
        return self._rootfs


class _Daemon:
    def __init__(self, rootfs, idmap=()):
        self.instances = _StoppedInstances(rootfs, idmap)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / 'rootfs'
    outside = tmp_path / 'outside'
    (root / 'etc').mkdir(parents=True)
    (root / 'etc' / 'hostname').write_bytes(b'inside\n')
    outside.mkdir()
    (outside / 'secret').write_bytes(b'host\n')
    return root, outside


def _files(root, idmap=()):
    return files.InstanceFiles(_Daemon(str(root), idmap), 'c1')


def _read(root, path):
    info, payload = files.read(_Daemon(str(root)), 'c1', path)
    if info.kind == 'file':
        try:
            return info, os.read(payload, 1 << 20)
        finally:
            os.close(payload)
    return info, payload


def test_read_file_directory_symlink(tree):
    root, _ = tree
    os.symlink('/etc/hostname', root / 'link')
    assert _read(root, '/etc/hostname')[1] == b'inside\n'
    info, names = _read(root, '/')
    assert info.kind == 'directory' and names == ['etc', 'link']
    info, target = _read(root, '/link')
    assert info.kind == 'symlink' and target == '/etc/hostname'
    assert info.headers()['X-LXD-type'] == 'symlink'


@pytest.mark.parametrize('link', ['ABS', '../../../../../../..ABS', 'ABS/../outside'])
def test_symlinked_parent_cannot_leave_the_root(tree, link):
    root, outside = tree
    os.symlink(link.replace('ABS', str(outside)), root / 'escape')
    with pytest.raises(NotFound):
        _read(root, '/escape/secret')
    with _files(root) as f:
        with pytest.raises(NotFound):
            f.open_for_write('/escape/planted')
        with pytest.raises(NotFound):
            f.mkdir('/escape/dir')
        with pytest.raises(NotFound):
            f.delete('/escape/secret')
    assert sorted(os.listdir(outside)) == ['secret']


def test_dotdot_is_clamped(tree):
    root, outside = tree
    assert _read(root, '/../../../../etc/hostname')[1] == b'inside\n'
    rel = os.path.relpath(outside / 'secret', '/')
    with pytest.raises(NotFound):
        _read(root, '/../../../../../../' + rel)


def test_write_through_absolute_symlink_lands_inside(tree):
    root, outside = tree
    os.symlink('/etc/hostname', root / 'hn')
    with _files(root) as f:
        fd, created, _ = f.open_for_write('/hn')
        files.write_all(fd, b'new\n')
        os.close(fd)
    assert not created
    assert (root / 'etc' / 'hostname').read_bytes() == b'new\n'
    os.symlink(str(outside / 'secret'), root / 'to-host')
    with _files(root) as f:
        with pytest.raises(BadRequest):   # dangling inside the root: refused, host untouched
            f.open_for_write('/to-host')
    assert (outside / 'secret').read_bytes() == b'host\n'


def test_new_file_mode_append_and_undo(tree):
    root, _ = tree
    with _files(root) as f:
        fd, created, undo = f.open_for_write('/etc/new', mode=0o600)
        os.close(fd)
        assert created
        assert stat.S_IMODE(os.stat(root / 'etc' / 'new').st_mode) == 0o600
        undo()
        assert not (root / 'etc' / 'new').exists()
        fd, _, _ = f.open_for_write('/etc/hostname', append=True)
        files.write_all(fd, b'more\n')
        os.close(fd)
    assert (root / 'etc' / 'hostname').read_bytes() == b'inside\nmore\n'


def test_mkdir_symlink_delete(tree):
    root, outside = tree
    with _files(root) as f:
        f.mkdir('/d', mode=0o750)
        f.mkdir('/d')   # exists: fine
        assert stat.S_IMODE(os.stat(root / 'd').st_mode) == 0o750
        f.symlink('/d/l', str(outside))
        assert os.readlink(root / 'd' / 'l') == str(outside)
        with pytest.raises(Conflict):
            f.symlink('/d', '/etc')
        with pytest.raises(Conflict):
            f.mkdir('/etc/hostname')
        with pytest.raises(BadRequest):
            f.delete('/d')   # not empty
        f.delete('/d/l')   # the link, never its target
        f.delete('/d')
    assert sorted(os.listdir(outside)) == ['secret']
    assert not (root / 'd').exists()


def test_fifo_and_bad_names(tree):
    root, _ = tree
    os.mkfifo(root / 'fifo')
    with pytest.raises(BadRequest):
        _read(root, '/fifo')
    with _files(root) as f:
        with pytest.raises(BadRequest):
            f.open_for_write('/fifo')
        for bad in ('/', '/etc/..', '/etc/.'):
            with pytest.raises(BadRequest):
                f.mkdir(bad)
    with pytest.raises(BadRequest):
        _read(root, '/etc/\0x')


def test_ids_go_through_the_idmap(tree):
    root, _ = tree
    me = os.getuid(), os.getgid()
    idmap = [('u', 0, me[0], 1), ('g', 0, me[1], 1)]
    with _files(root, idmap) as f:
        info, _ = f.read('/etc')
        assert (info.uid, info.gid) == (0, 0)   # the host owner shows as the container's root
        with pytest.raises(BadRequest):
            f.open_for_write('/etc/other', uid=5)   # unmapped in a one-id map
        assert not (root / 'etc' / 'other').exists()
    with _files(root, [('u', 0, me[0] + 1, 1), ('g', 0, me[1] + 1, 1)]) as f:
        info, _ = f.read('/etc')
        assert (info.uid, info.gid) == (files.OVERFLOW_ID, files.OVERFLOW_ID)


def test_parse_headers():
    assert files.parse_mode('0644') == 0o644 and files.parse_mode(None) is None
    assert files.parse_id('-1', 'X') is None and files.parse_id('12', 'X') == 12
    for bad in ('x', '99999'):
        with pytest.raises(BadRequest):
            files.parse_mode(bad)
    with pytest.raises(BadRequest):
        files.parse_id('-5', 'X')
