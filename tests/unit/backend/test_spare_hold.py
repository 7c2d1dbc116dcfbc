"""A cached image's next spare clone waits for the instance that took the last one to be ready.

(storage/tree.py: on btrfs the clone commits a transaction, and every write to the pool, the new
instance's own templates included, waited for that commit.) Real directories, a dir pool that
caches images like a copy-on-write one.
"""
import os
import threading
import time

import pytest

from nova_lxd.backend.storage import tree
from nova_lxd.backend.storage.dir import DirDriver

FINGERPRINT = 'f' * 64


class CachingDir(DirDriver):
    caches_images = True


def _unpack(dest):
    os.makedirs(os.path.join(dest, 'rootfs', 'etc'))


@pytest.fixture
def pool(tmp_path):
    driver = CachingDir('p', str(tmp_path / 'p'), {})
    driver.create()
    yield driver
    driver.delete_image(FINGERPRINT)      # releases any hold and joins the clone


def _spares(pool):
    return [e for e in os.listdir(os.path.join(pool.pool_dir, 'images'))
            if e.startswith(('.spare-', '.unpack-spare-'))]


def _wait_for_spare(pool, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.startswith('.spare-') for e in _spares(pool)):
            return
        time.sleep(0.02)
    raise AssertionError('no spare clone appeared: %s' % _spares(pool))


def test_the_next_spare_waits_until_the_instance_is_ready(pool):
    pool.create_instance_from_image('a', FINGERPRINT, _unpack)
    time.sleep(0.3)                        # long enough for an unheld clone of this tiny tree
    assert _spares(pool) == []             # not even begun
    assert FINGERPRINT in pool._replenishing
    pool.instance_ready('a')
    _wait_for_spare(pool)
    # the next instance takes it by a rename, and its own replacement is held again
    spare = [e for e in _spares(pool)][0]
    pool.create_instance_from_image('b', FINGERPRINT, _unpack)
    assert spare not in os.listdir(os.path.join(pool.pool_dir, 'images'))
    assert os.path.isdir(os.path.join(pool.instance_path('b'), 'rootfs', 'etc'))
    time.sleep(0.3)
    assert _spares(pool) == []
    pool.instance_ready('b')
    _wait_for_spare(pool)


@pytest.mark.parametrize('removal', ['delete_instance', 'retire_instance'])
def test_a_removed_instance_releases_its_hold(pool, removal):
    pool.create_instance_from_image('a', FINGERPRINT, _unpack)
    getattr(pool, removal)('a')            # a failed create, or a delete
    _wait_for_spare(pool)
    assert pool._holds == {}


def test_an_instance_never_made_ready_holds_the_spare_only_so_long(pool, monkeypatch):
    monkeypatch.setattr(tree, 'SPARE_HOLD_TIMEOUT', 0.05)
    pool.create_instance_from_image('a', FINGERPRINT, _unpack)
    _wait_for_spare(pool)


def test_image_delete_releases_a_held_clone(pool, monkeypatch):
    monkeypatch.setattr(tree, 'SPARE_HOLD_TIMEOUT', 3600)    # only a release ends the wait
    pool.create_instance_from_image('a', FINGERPRINT, _unpack)
    deleting = threading.Thread(target=pool.delete_image, args=(FINGERPRINT,))
    deleting.start()
    deleting.join(60)                      # a liveness bound, not a speed: it would hang
    assert not deleting.is_alive()
    # nothing of the image is left, spare included, and the clone's thread has ended
    assert os.listdir(os.path.join(pool.pool_dir, 'images')) == []
    assert pool._replenishing == {}
