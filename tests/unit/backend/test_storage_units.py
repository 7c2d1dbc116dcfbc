"""Storage pieces that need no daemon: sizes, pool config checks, names."""
import os

import pytest

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.storage import service, system
from nova_lxd.backend.storage.btrfs import BtrfsDriver
from nova_lxd.backend.storage.dir import DirDriver


@pytest.mark.parametrize('value,expected', [
    ('30GB', 30 * 10 ** 9), ('10GiB', 10 << 30), ('512MiB', 512 << 20), ('1024', 1024),
    (2048, 2048), ('1.5GiB', 3 << 29), ('100kb', 100000)])
def test_sizes(value, expected):
    assert system.parse_size(value) == expected


@pytest.mark.parametrize('value', ['ten', '-1GB', '0', '5XB', ''])
def test_bad_sizes(value):
    with pytest.raises(BadRequest):
        system.parse_size(value)


def test_btrfs_config_checks():
    assert BtrfsDriver.check_config({'size': '1GiB'}, creating=True) == {'size': '1GiB'}
    for config, words in [({'size': '1MiB'}, 'at least'), ({'zfs.pool_name': 'x'}, 'zfs'),
                          ({'source': '/dev/sda'}, 'loop file'),
                          ({'btrfs.mount_options': 'a;b'}, 'mount_options')]:
        with pytest.raises(BadRequest) as exc:
            BtrfsDriver.check_config(config, creating=True)
        assert words in str(exc.value)


def test_dir_config_checks():
    with pytest.raises(BadRequest, match='size'):
        DirDriver.check_config({'size': '1GB'}, creating=True)
    with pytest.raises(BadRequest, match='absolute'):
        DirDriver.check_config({'source': 'relative/dir'}, creating=True)


@pytest.mark.parametrize('name', ['', '../x', 'a/b', '-x', 'x' * 64, None])
def test_bad_pool_names(name):
    with pytest.raises(BadRequest):
        service._check_name(name, 'storage pool')


def test_dir_driver_refuses_a_size(tmp_path):
    driver = DirDriver('p', str(tmp_path / 'p'), {})
    driver.create()
    with pytest.raises(BadRequest, match='cannot enforce'):
        driver.create_custom_volume('v', size=1 << 30)
    assert driver.list_custom_volumes() == []
    driver.create_custom_volume('v')
    assert driver.list_custom_volumes() == ['v']
    driver.rename_custom_volume('v', 'w')
    driver.delete_custom_volume('w')
    assert driver.list_custom_volumes() == []


def test_mount_removes_what_a_crash_left(tmp_path):
    driver = DirDriver('p', str(tmp_path / 'p'), {})
    driver.create()
    pool = tmp_path / 'p'
    (pool / 'images' / '.unpack-abc-1234').mkdir()
    (pool / 'containers' / '.restore-c1-1234').mkdir()
    (pool / 'containers' / '.old-c2-1234').mkdir()          # c2 itself is missing: put back
    (pool / 'containers' / 'c3').mkdir()
    (pool / 'containers' / '.old-c3-5678').mkdir()          # c3 was restored: drop the old
    driver.mount()
    assert sorted(os.listdir(pool / 'images')) == []
    assert sorted(os.listdir(pool / 'containers')) == ['c2', 'c3']


def test_prepared_variant_is_made_once_per_variant(tmp_path):
    from nova_lxd.backend.storage import tree

    class CachingDir(DirDriver):
        caches_images = True
    driver = CachingDir('p', str(tmp_path / 'p'), {})
    driver.create()
    calls = []

    def unpack(dest):
        calls.append('unpack')
        os.makedirs(os.path.join(dest, 'rootfs'))

    def prepare(dest):
        calls.append('prepare')
        open(os.path.join(dest, 'rootfs', 'prepared'), 'w').close()
    for name in ('a', 'b'):
        driver.create_instance_from_image(name, 'f' * 64, unpack, prepare=prepare,
                                          variant='1000000')
    assert calls == ['unpack', 'prepare']
    assert os.path.exists(os.path.join(driver.instance_path('b'), 'rootfs', 'prepared'))
    assert driver.list_images() == ['f' * 64]
    driver.delete_image('f' * 64)
    assert os.listdir(tmp_path / 'p' / 'images') == []
    assert isinstance(driver, tree.TreeDriver)


class _Daemon:
    """The parts of the Daemon the storage service uses: config, db, events."""

    def __init__(self, tmp_path, storage_driver=''):
        from nova_lxd.backend.config import DaemonConfig
        from nova_lxd.backend.db import Database
        from nova_lxd.backend.events import EventHub
        self.config = DaemonConfig(data_dir=str(tmp_path), storage_driver=storage_driver)
        self.db = Database(str(tmp_path / 'db'))
        self.events = EventHub()


def test_default_pool_falls_back_to_dir_when_btrfs_fails(tmp_path, monkeypatch, caplog):
    def broken(self):
        raise RuntimeError('mkfs.btrfs failed: no space')
    monkeypatch.setattr(BtrfsDriver, 'available', classmethod(lambda cls: True))
    monkeypatch.setattr(BtrfsDriver, 'create', broken)
    storage = service.StorageService(_Daemon(tmp_path))
    storage.start()
    assert storage.default_pool() == 'default'
    assert storage.default_driver_name() == 'dir'
    assert 'btrfs does not work here' in caplog.text
    assert os.path.isdir(tmp_path / 'storage-pools' / 'default' / 'containers')


def test_a_configured_driver_that_fails_stops_the_daemon(tmp_path, monkeypatch):
    monkeypatch.setattr(BtrfsDriver, 'available', classmethod(lambda cls: False))
    storage = service.StorageService(_Daemon(tmp_path, storage_driver='btrfs'))
    with pytest.raises(SystemExit, match='btrfs'):
        storage.start()
    assert storage.db.names(service.POOL) == []


def test_a_pool_that_cannot_be_mounted_is_reported_unavailable(tmp_path):
    daemon = _Daemon(tmp_path, storage_driver='dir')
    storage = service.StorageService(daemon)
    storage.start()
    storage.create_pool('gone', 'dir', {'source': str(tmp_path / 'elsewhere')})
    os.rmdir(tmp_path / 'elsewhere' / 'custom')
    for sub in ('images', 'containers', 'containers-snapshots'):
        os.rmdir(tmp_path / 'elsewhere' / sub)
    os.rmdir(tmp_path / 'elsewhere')
    restarted = service.StorageService(daemon)
    restarted.start()
    assert restarted.get_pool('gone')['status'] == 'Unavailable'
    assert restarted.get_pool('default')['status'] == 'Created'
