"""GET/POST/DELETE /1.0/instances/{name}/files: pylxd, `lxc file`, and escape attempts."""
import os
import shutil
import stat
import subprocess
import tempfile
import threading

import pylxd
import pytest

from tests.functional.backend.busybox_rootfs import (
    cleanup, create_busybox, host_root, rootfs_path)


@pytest.fixture(scope='module', params=['running', 'stopped'])
def instance(request, backend):
    client = backend.client()
    inst = create_busybox(client, backend)
    if request.param == 'running':
        inst.start(wait=True)
    yield inst
    cleanup(inst)


@pytest.fixture
def outside():
    """A host directory next to nothing of the container's: it must never change."""
    path = tempfile.mkdtemp(prefix='nova-lxd-outside-', dir='/var/tmp')
    with open(os.path.join(path, 'secret'), 'w') as f:
        f.write('host secret\n')
    yield path
    shutil.rmtree(path)


def _snapshot_of(path):
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            found[p] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns)
    return found


def _lxc(backend, *args, **kwargs):
    return subprocess.run(['lxc'] + list(args), env=dict(os.environ, LXD_DIR=backend.data_dir),
                          capture_output=True, timeout=60, **kwargs)


def _files(client, name):
    return client.api.instances[name].files


def _post(client, name, path, data=b'', **headers):
    api = _files(client, name)
    return api.session.post(api._api_endpoint, params={'path': path}, data=data,
                            headers=headers)


def _get(client, name, path):
    api = _files(client, name)
    return api.session.get(api._api_endpoint, params={'path': path})


def _host(backend, inst, path):
    return os.path.join(rootfs_path(backend, inst.name), path.lstrip('/'))


# -- pylxd ---------------------------------------------------------------------------------------

def test_put_get_ids_and_mode(backend, client, instance):
    instance.files.put('/tmp/hello.txt', b'hello world', mode=0o640, uid=1000, gid=1001)
    assert instance.files.get('/tmp/hello.txt') == b'hello world'
    resp = _get(client, instance.name, '/tmp/hello.txt')
    assert resp.headers['X-LXD-type'] == 'file'
    assert (resp.headers['X-LXD-uid'], resp.headers['X-LXD-gid']) == ('1000', '1001')
    assert resp.headers['X-LXD-mode'] == '0640'
    st = os.stat(_host(backend, instance, '/tmp/hello.txt'))   # the disk holds host ids
    uid, gid = host_root()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid + 1000, gid + 1001, 0o640)


def test_defaults_overwrite_and_append(client, instance):
    instance.files.put('/tmp/log', b'one\n')
    resp = _get(client, instance.name, '/tmp/log')
    assert (resp.headers['X-LXD-uid'], resp.headers['X-LXD-mode']) == ('0', '0644')
    assert _post(client, instance.name, '/tmp/log', b'two\n',
                 **{'X-LXD-write': 'append'}).status_code == 200
    assert instance.files.get('/tmp/log') == b'one\ntwo\n'
    instance.files.put('/tmp/log', b'three\n')
    assert instance.files.get('/tmp/log') == b'three\n'
    assert _post(client, instance.name, '/tmp/log', b'x',
                 **{'X-LXD-write': 'sideways'}).status_code == 400


def test_directories_symlinks_and_delete(client, instance):
    instance.files.mk_dir('/tmp/dir', mode=0o750, uid=5)
    instance.files.put('/tmp/dir/a', b'A')
    instance.files.mk_dir('/tmp/dir/sub')
    instance.files.mk_dir('/tmp/dir')   # an existing directory is fine
    resp = _get(client, instance.name, '/tmp/dir')
    assert resp.headers['X-LXD-type'] == 'directory'
    assert (resp.headers['X-LXD-mode'], resp.headers['X-LXD-uid']) == ('0750', '5')
    assert resp.json()['metadata'] == ['a', 'sub']
    assert _post(client, instance.name, '/tmp/dir/link', b'/etc/hostname',
                 **{'X-LXD-type': 'symlink'}).status_code == 200
    resp = _get(client, instance.name, '/tmp/dir/link')
    assert resp.headers['X-LXD-type'] == 'symlink' and resp.content == b'/etc/hostname'
    _link(client, instance, '/tmp/dir/etc', '/etc')
    assert instance.files.get('/tmp/dir/etc/hostname') == b'busybox\n'   # a symlinked parent
    assert _get(client, instance.name, '/tmp/dir').json()['metadata'] == ['a', 'etc', 'link',
                                                                          'sub']
    assert _post(client, instance.name, '/tmp/dir/a', **{'X-LXD-type': 'directory'}).status_code \
        == 409
    resp = _files(client, instance.name).session.delete(
        _files(client, instance.name)._api_endpoint, params={'path': '/tmp/dir'})
    assert resp.status_code == 400 and 'not empty' in resp.json()['error']
    for path in ('/tmp/dir/etc', '/tmp/dir/link', '/tmp/dir/a', '/tmp/dir/sub', '/tmp/dir'):
        instance.files.delete(path)
    assert _get(client, instance.name, '/tmp/dir').status_code == 404


def test_recursive_put_and_get(instance, tmp_path):
    src = tmp_path / 'tree'
    (src / 'inner').mkdir(parents=True)
    (src / 'top.txt').write_bytes(b'top')
    (src / 'inner' / 'deep.txt').write_bytes(b'deep')
    instance.files.recursive_put(str(src), '/tmp/tree')
    assert instance.files.get('/tmp/tree/inner/deep.txt') == b'deep'
    instance.files.recursive_get('/tmp/tree', str(tmp_path / 'back'))
    assert (tmp_path / 'back' / 'inner' / 'deep.txt').read_bytes() == b'deep'
    assert (tmp_path / 'back' / 'top.txt').read_bytes() == b'top'


def test_errors(client, instance):
    assert _get(client, instance.name, '/no/such/file').status_code == 404
    assert _post(client, instance.name, '/no/such/dir/file', b'x').status_code == 404
    assert _post(client, instance.name, '/tmp/x', b'x', **{'X-LXD-mode': '9z'}).status_code == 400
    assert _post(client, instance.name, '/tmp/x', b'x', **{'X-LXD-type': 'fifo'}).status_code == 400
    assert _get(client, 'no-such-instance', '/etc/hostname').status_code == 404
    with pytest.raises(pylxd.exceptions.LXDAPIException):
        instance.files.put('/tmp', b'a directory is not a file')


# -- escape attempts: each resolves inside the rootfs or is refused; the host never changes ------

def test_relative_paths_are_from_the_root(client, instance):
    assert instance.files.get('etc/hostname') == b'busybox\n'   # as `lxc file pull` sends


def _link(client, inst, path, target):
    assert _post(client, inst.name, path, target.encode(),
                 **{'X-LXD-type': 'symlink'}).status_code == 200


def test_absolute_symlink_stays_inside(backend, client, instance, outside):
    before = _snapshot_of(outside)
    _link(client, instance, '/tmp/abs', os.path.join(outside, 'secret'))
    # reading follows the link only inside the container: the host file is not there
    assert _get(client, instance.name, '/tmp/abs/').status_code in (400, 404)
    # writing through it creates nothing outside (the target's parent is missing inside)
    assert _post(client, instance.name, '/tmp/abs', b'pwned').status_code in (400, 404)
    _link(client, instance, '/tmp/abs-dir', outside)
    assert _post(client, instance.name, '/tmp/abs-dir/new', b'pwned').status_code == 404
    assert _snapshot_of(outside) == before
    # an absolute link to the container's own file works as inside the container
    _link(client, instance, '/tmp/hostname-link', '/etc/hostname')
    instance.files.put('/tmp/hostname-link', b'renamed\n')
    assert instance.files.get('/etc/hostname') == b'renamed\n'
    instance.files.put('/etc/hostname', b'busybox\n')
    for path in ('/tmp/abs', '/tmp/abs-dir', '/tmp/hostname-link'):
        instance.files.delete(path)


def test_dotdot_is_clamped_at_the_container_root(backend, client, instance, outside):
    before = _snapshot_of(outside)
    depth = '/..' * 20
    assert instance.files.get(depth + '/etc/hostname') == b'busybox\n'   # the container's
    rel = os.path.relpath(os.path.join(outside, 'secret'), '/')
    assert _get(client, instance.name, depth + '/' + rel).status_code == 404
    assert _post(client, instance.name, depth + '/' + rel, b'pwned').status_code == 404
    instance.files.put(depth + '/tmp/dotdot', b'inside')
    assert open(_host(backend, instance, '/tmp/dotdot'), 'rb').read() == b'inside'
    assert _snapshot_of(outside) == before
    instance.files.delete('/tmp/dotdot')


def test_relative_symlink_climbing_out(backend, client, instance, outside):
    before = _snapshot_of(outside)
    _link(client, instance, '/tmp/up', '../../../../../../../../..' + outside)
    assert _get(client, instance.name, '/tmp/up/secret').status_code == 404
    assert _post(client, instance.name, '/tmp/up/planted', b'pwned').status_code == 404
    assert _post(client, instance.name, '/tmp/up/sub', **{'X-LXD-type': 'directory'}).status_code \
        == 404
    _link(client, instance, '/tmp/root-link', '../../../../../../../..')
    resp = _files(client, instance.name).session.delete(
        _files(client, instance.name)._api_endpoint,
        params={'path': '/tmp/root-link' + outside + '/secret'})
    assert resp.status_code == 404
    assert _snapshot_of(outside) == before
    for path in ('/tmp/up', '/tmp/root-link'):
        instance.files.delete(path)


def test_symlink_as_last_component(backend, client, instance, outside):
    """Deleting or pulling a symlink acts on the link, never on what it points at."""
    before = _snapshot_of(outside)
    instance.files.put('/tmp/target', b'keep me')
    _link(client, instance, '/tmp/last', '/tmp/target')
    instance.files.delete('/tmp/last')
    assert instance.files.get('/tmp/target') == b'keep me'
    _link(client, instance, '/tmp/last', outside)
    assert _get(client, instance.name, '/tmp/last').headers['X-LXD-type'] == 'symlink'
    instance.files.delete('/tmp/last')
    # a symlink pushed over a directory's name is refused, not written into the directory
    instance.files.mk_dir('/tmp/realdir')
    assert _post(client, instance.name, '/tmp/realdir', b'/', **{'X-LXD-type': 'symlink'}) \
        .status_code == 409
    instance.files.delete('/tmp/realdir')
    instance.files.delete('/tmp/target')
    assert _snapshot_of(outside) == before


def test_device_nodes_are_never_opened(backend, client, instance):
    """A privileged container could plant a device node; the daemon refuses to touch it."""
    fifo = _host(backend, instance, '/tmp/fifo')
    os.mkfifo(fifo)
    try:
        assert _get(client, instance.name, '/tmp/fifo').status_code == 400
        assert _post(client, instance.name, '/tmp/fifo', b'x').status_code == 400
    finally:
        os.unlink(fifo)


def test_swapping_a_directory_for_a_symlink_races(backend, client, instance, outside):
    """A container flips /tmp/race between a directory and a symlink out while we push."""
    before = _snapshot_of(outside)
    host_race = _host(backend, instance, '/tmp/race')
    os.mkdir(host_race)
    stop = threading.Event()

    def flipper():
        while not stop.is_set():
            try:
                shutil.rmtree(host_race)
            except OSError:   # a push landed in it meanwhile
                continue
            os.symlink(outside, host_race)   # absolute, and a relative climb next time
            os.unlink(host_race)
            os.symlink('../../../../../../../..' + outside, host_race)
            os.unlink(host_race)
            os.mkdir(host_race)
    thread = threading.Thread(target=flipper)
    thread.start()
    try:
        for i in range(100):
            resp = _post(client, instance.name, '/tmp/race/f%d' % i, b'pwned')
            assert resp.status_code in (200, 400, 404)
    finally:
        stop.set()
        thread.join()
    assert _snapshot_of(outside) == before
    shutil.rmtree(host_race, ignore_errors=True)


# -- the stock `lxc` client ----------------------------------------------------------------------

def test_lxc_file_push_pull(backend, instance, tmp_path):
    src = tmp_path / 'src.txt'
    src.write_bytes(b'pushed by lxc\n')
    os.chmod(src, 0o600)
    out = _lxc(backend, 'file', 'push', str(src), instance.name + '/tmp/src.txt')
    assert out.returncode == 0, out.stderr
    assert instance.files.get('/tmp/src.txt') == b'pushed by lxc\n'
    out = _lxc(backend, 'file', 'pull', instance.name + '/tmp/src.txt', str(tmp_path / 'back'))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / 'back').read_bytes() == b'pushed by lxc\n'
    tree = tmp_path / 'tree'
    (tree / 'd').mkdir(parents=True)
    (tree / 'd' / 'f').write_bytes(b'f')
    os.symlink('d/f', tree / 'l')
    out = _lxc(backend, 'file', 'push', '-r', str(tree), instance.name + '/tmp/')
    assert out.returncode == 0, out.stderr
    assert instance.files.get('/tmp/tree/d/f') == b'f'
    out = _lxc(backend, 'file', 'pull', '-r', instance.name + '/tmp/tree', str(tmp_path / 'pulled'))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / 'pulled' / 'tree' / 'd' / 'f').read_bytes() == b'f'
    assert os.readlink(tmp_path / 'pulled' / 'tree' / 'l') == 'd/f'
    out = _lxc(backend, 'file', 'delete', instance.name + '/tmp/src.txt')
    assert out.returncode == 0, out.stderr
    assert _get(backend.client(), instance.name, '/tmp/src.txt').status_code == 404
