"""A scripted session of the stock `lxc` client (Debian's lxd-client) against the backend."""
import os
import subprocess

import pytest
import yaml

from tests import images
from tests.backend_fixture import BackendDaemon
from tests.functional.backend.busybox_rootfs import attach


@pytest.fixture(scope='module')
def session():
    daemon = BackendDaemon()
    daemon.start()
    env = dict(os.environ, LXD_DIR=daemon.data_dir)

    def lxc(*args, ok=True):
        out = subprocess.run(['lxc'] + list(args), env=env, capture_output=True, text=True,
                             timeout=120)
        if ok:
            assert out.returncode == 0, (args, out.stdout, out.stderr)
        else:
            assert out.returncode != 0, (args, out.stdout)
        return out.stdout + out.stderr
    lxc.daemon = daemon
    yield lxc
    daemon.destroy()


def _rows(lxc):
    return [line.split(',') for line in lxc('list', '--format', 'csv', '-c', 'ns').split()]


def test_image_launch_list_info_stop_delete(session):
    lxc = session
    assert 'fingerprint' in lxc('image', 'import', images.busybox_image(), '--alias', 'bb')
    lxc('launch', 'bb', 'c1')
    assert ['c1', 'RUNNING'] in _rows(lxc)
    info = lxc('info', 'c1')
    assert 'Status: RUNNING' in info and 'Processes:' in info and 'Memory (current)' in info
    assert 'Log:' in lxc('info', 'c1', '--show-log')
    # the image's templates were rendered at create, its halt signal is used
    assert attach(lxc.daemon, 'c1', 'cat', '/etc/hostname').strip() == 'c1'
    config = yaml.safe_load(lxc('config', 'show', 'c1', '--expanded'))
    assert config['devices']['root']['path'] == '/'
    assert config['config']['volatile.base_image']
    lxc('pause', 'c1')
    assert ['c1', 'FROZEN'] in _rows(lxc)
    lxc('start', 'c1')
    lxc('restart', 'c1')
    assert 'stop it first' in lxc('delete', 'c1', ok=False)
    lxc('stop', 'c1')
    assert ['c1', 'STOPPED'] in _rows(lxc)
    lxc('delete', 'c1')
    assert lxc('list', '--format', 'csv').strip() == ''


def test_config_set_get_and_refusal(session):
    lxc = session
    lxc('init', '--empty', 'c2')
    lxc('config', 'set', 'c2', 'limits.memory', '128MiB')
    assert lxc('config', 'get', 'c2', 'limits.memory').strip() == '128MiB'
    assert "limits.bogus" in lxc('config', 'set', 'c2', 'limits.bogus', '1', ok=False)
    lxc('config', 'unset', 'c2', 'limits.memory')
    assert lxc('config', 'get', 'c2', 'limits.memory').strip() == ''
    lxc('config', 'device', 'add', 'c2', 'data', 'disk', 'source=/var/tmp', 'path=/mnt/data')
    assert 'data' in lxc('config', 'device', 'list', 'c2').split()
    assert 'bogus' in lxc('config', 'device', 'add', 'c2', 'x', 'disk', 'path=/x', 'bogus=1',
                          ok=False)
    lxc('config', 'device', 'remove', 'c2', 'data')
    assert 'data' not in lxc('config', 'device', 'list', 'c2').split()
    lxc('delete', 'c2')


def test_profiles_move_copy(session):
    lxc = session
    lxc('launch', 'bb', 'c3')
    lxc('profile', 'create', 'p1')
    lxc('profile', 'set', 'p1', 'limits.cpu', '1')
    lxc('profile', 'add', 'c3', 'p1')
    shown = yaml.safe_load(lxc('profile', 'show', 'p1'))
    assert shown['config'] == {'limits.cpu': '1'} and shown['used_by'] == ['/1.0/instances/c3']
    assert 'p1' in lxc('profile', 'list')
    lxc('stop', '--force', 'c3')
    lxc('move', 'c3', 'c4')
    lxc('copy', 'c4', 'c5')
    names = [row[0] for row in _rows(lxc)]
    assert 'c3' not in names and {'c4', 'c5'} <= set(names)
    assert 'in use' in lxc('profile', 'delete', 'p1', ok=False)
    lxc('profile', 'rename', 'p1', 'p2')
    lxc('profile', 'remove', 'c4', 'p2')
    lxc('profile', 'remove', 'c5', 'p2')
    lxc('profile', 'delete', 'p2')
    lxc('start', 'c5')
    assert attach(lxc.daemon, 'c5', 'cat', '/etc/hostname').strip() == 'c5'   # copy template
    lxc('delete', '--force', 'c4', 'c5')
    assert lxc('list', '--format', 'csv').strip() == ''


def test_storage_volumes_attach_detach(session):
    lxc = session
    lxc('launch', 'bb', 'c6')
    lxc('storage', 'volume', 'create', 'default', 'vol1')
    lxc('storage', 'volume', 'create', 'default', 'vol2')
    listed = lxc('storage', 'volume', 'list', 'default')
    assert 'vol1' in listed and 'vol2' in listed
    lxc('storage', 'volume', 'attach', 'default', 'vol1', 'c6', '/mnt/one')
    lxc('config', 'device', 'add', 'c6', 'two', 'disk', 'pool=default', 'source=vol2',
        'path=/mnt/two')
    assert 'Storage volume' in lxc('config', 'device', 'add', 'c6', 'three', 'disk',
                                   'pool=default', 'source=nosuch', 'path=/mnt/x', ok=False)
    mounts = attach(lxc.daemon, 'c6', 'cat', '/proc/mounts')
    assert ' /mnt/one ' in mounts and ' /mnt/two ' in mounts
    attach(lxc.daemon, 'c6', 'sh', '-c', 'echo kept > /mnt/one/f')
    shown = yaml.safe_load(lxc('storage', 'volume', 'show', 'default', 'vol1'))
    assert shown['used_by'] == ['/1.0/instances/c6']
    assert 'in use' in lxc('storage', 'volume', 'delete', 'default', 'vol1', ok=False)
    lxc('storage', 'volume', 'detach', 'default', 'vol1', 'c6')
    lxc('profile', 'create', 'pvol')
    lxc('storage', 'volume', 'attach-profile', 'default', 'vol1', 'pvol', '/mnt/one')
    shown = yaml.safe_load(lxc('storage', 'volume', 'show', 'default', 'vol1'))
    assert shown['used_by'] == ['/1.0/profiles/pvol']
    lxc('storage', 'volume', 'detach-profile', 'default', 'vol1', 'pvol')
    lxc('profile', 'delete', 'pvol')
    lxc('config', 'device', 'remove', 'c6', 'two')
    mounts = attach(lxc.daemon, 'c6', 'cat', '/proc/mounts')
    assert ' /mnt/one ' not in mounts and ' /mnt/two ' not in mounts
    lxc('delete', '--force', 'c6')
    path = os.path.join(lxc.daemon.data_dir, 'storage-pools', 'default', 'custom', 'vol1')
    with open(os.path.join(path, 'f')) as f:
        assert f.read() == 'kept\n'   # the volume outlived the instance
    lxc('storage', 'volume', 'delete', 'default', 'vol1')
    lxc('storage', 'volume', 'delete', 'default', 'vol2')
    assert 'vol1' not in lxc('storage', 'volume', 'list', 'default')
    assert not os.path.exists(path)
