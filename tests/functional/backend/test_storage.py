"""Storage pools and volumes through pylxd and `lxc`: btrfs on a loop file (copy-on-write,
quotas) and dir; nothing left behind (mounts, loop devices, files)."""
import os
import subprocess
import uuid

import pytest

from tests.backend_fixture import BackendDaemon
from tests.functional.backend import cleanup
from tests.functional.backend import hostile_tarballs as corpus


def _losetup():
    return subprocess.run(['losetup', '-a'], capture_output=True, text=True).stdout


def _mounted(path):
    with open('/proc/self/mountinfo') as f:
        return sum(1 for line in f if line.split()[4] == path)


def _subvolume(path):
    out = subprocess.run(['btrfs', 'subvolume', 'show', path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fields = {}
    for line in out.stdout.splitlines():
        key, _, value = line.strip().partition(':')
        fields[key.strip()] = value.strip()
    return fields


def _name(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:6])


def test_default_pool_is_btrfs_on_a_loop_file(backend, client):
    assert client.host_info['environment']['storage'] == 'btrfs'
    names = [d['Name'] for d in client.host_info['environment']['storage_supported_drivers']]
    assert names == ['btrfs', 'dir']
    pool = client.storage_pools.get('default')
    assert pool.driver == 'btrfs'
    assert pool.config['source'] == os.path.join(backend.data_dir, 'disks', 'default.img')
    assert pool.config['source'] in _losetup()
    assert _mounted(os.path.join(backend.data_dir, 'storage-pools', 'default')) == 1
    assert '/1.0/profiles/default' in pool.used_by
    resources = pool.resources.get()
    assert 0 < resources.space['used'] < resources.space['total']


def test_pool_lifecycle_leaves_no_loop_device(backend, client):
    name = _name('p')
    pool = client.storage_pools.create({'name': name, 'driver': 'btrfs',
                                        'config': {'size': '1GiB'}, 'description': 'test'})
    image_file = pool.config['source']
    mount_point = os.path.join(backend.data_dir, 'storage-pools', name)
    try:
        assert os.path.exists(image_file) and image_file in _losetup()
        assert _mounted(mount_point) == 1
        assert pool.used_by == []
        total = pool.resources.get().space['total']
        assert 0.9 * (1 << 30) < total <= 1 << 30
        pool.patch({'description': 'changed', 'config': {'size': '2GiB'}})
        assert pool.description == 'changed'
        assert pool.resources.get().space['total'] > 1.5 * (1 << 30)
        resp = client.api.session.patch(pool.api._api_endpoint, json={'config': {'size': '1GiB'}})
        assert resp.status_code == 400 and 'shrink' in resp.json()['error']
        etag = pool.api.get().headers['ETag']
        pool.api.patch(json={'description': 'again'})
        resp = client.api.session.put(pool.api._api_endpoint, json={'config': {}},
                                      headers={'If-Match': etag})
        assert resp.status_code == 412
    finally:
        pool.delete()
    assert not os.path.exists(image_file)
    assert image_file not in _losetup()
    assert _mounted(mount_point) == 0 and not os.path.exists(mount_point)
    assert not client.storage_pools.exists(name)


@pytest.mark.parametrize('definition,words', [
    ({'driver': 'zfs', 'config': {}}, 'zfs'),
    ({'driver': 'btrfs', 'config': {'size': 'huge'}}, 'size'),
    ({'driver': 'btrfs', 'config': {'bogus.key': '1'}}, 'bogus.key'),
    ({'driver': 'dir', 'config': {'size': '1GB'}}, 'size'),
    ({'driver': 'dir', 'name': '../escape', 'config': {}}, 'name'),
])
def test_bad_pools_are_refused_and_leave_nothing(backend, client, definition, words):
    definition = dict({'name': _name('bad')}, **definition)
    before = (_losetup(), sorted(os.listdir(os.path.join(backend.data_dir, 'storage-pools'))),
              sorted(os.listdir(os.path.join(backend.data_dir, 'disks'))))
    resp = client.api.session.post(client.api.storage_pools._api_endpoint, json=definition)
    assert resp.status_code == 400 and words in resp.json()['error']
    assert (_losetup(), sorted(os.listdir(os.path.join(backend.data_dir, 'storage-pools'))),
            sorted(os.listdir(os.path.join(backend.data_dir, 'disks')))) == before
    assert definition['name'] not in [p.name for p in client.storage_pools.all()]


def test_pool_in_use_cannot_be_deleted(client):
    resp = client.api.session.delete(client.api.storage_pools['default']._api_endpoint)
    assert resp.status_code == 400 and '/1.0/profiles/default' in resp.json()['error']


def test_dir_pool_and_custom_volumes(backend, client):
    name = _name('d')
    pool = client.storage_pools.create({'name': name, 'driver': 'dir', 'config': {}})
    try:
        volume = pool.volumes.create({'name': 'data', 'type': 'custom', 'config': {}})
        path = os.path.join(backend.data_dir, 'storage-pools', name, 'custom', 'data')
        assert os.path.isdir(path)
        assert [v.name for v in pool.volumes.all()] == ['data']
        resp = client.api.session.post(pool.api.volumes.custom._api_endpoint,
                                       json={'name': 'big', 'config': {'size': '1GiB'}})
        assert resp.status_code == 400 and 'cannot enforce' in resp.json()['error']
        assert not os.path.exists(os.path.dirname(path) + '/big')
        volume.rename({'name': 'data2', 'pool': name})
        assert os.path.isdir(path + '2') and not os.path.exists(path)
        volume = pool.volumes.get('custom', 'data2')
        volume.delete()
        assert not os.path.exists(path + '2')
        assert pool.volumes.all() == []
    finally:
        pool.delete()
    assert not os.path.exists(os.path.join(backend.data_dir, 'storage-pools', name))


def test_btrfs_custom_volume_size_is_enforced(backend, client):
    pool = client.storage_pools.get('default')
    volume = pool.volumes.create({'name': _name('q'), 'config': {'size': '16MiB'}})
    path = os.path.join(backend.data_dir, 'storage-pools', 'default', 'custom', volume.name)
    try:
        small = subprocess.run(['dd', 'if=/dev/urandom', 'of=%s/small' % path, 'bs=1M',
                                'count=4', 'conv=fsync'], capture_output=True)
        assert small.returncode == 0
        big = subprocess.run(['dd', 'if=/dev/urandom', 'of=%s/big' % path, 'bs=1M',
                              'count=40', 'conv=fsync'], capture_output=True, text=True)
        assert big.returncode != 0 and 'quota exceeded' in big.stderr.lower()
    finally:
        volume.delete()
    assert not os.path.exists(path)


def test_instances_are_snapshots_of_the_cached_image(backend, client):
    """O(1) creation: each instance is a btrfs snapshot of the image's cached subvolume.

    The image is unpacked once into a read-only subvolume; the root disk size is a qgroup limit.
    """
    image = client.images.create(corpus.busybox_unified(marker=b'cow'), wait=True)
    names = [_name('cow'), _name('cow')]
    pool_dir = os.path.join(backend.data_dir, 'storage-pools', 'default')
    try:
        for name in names:
            client.instances.create({'name': name, 'source': {
                'type': 'image', 'fingerprint': image.fingerprint}, 'devices': {
                'root': {'type': 'disk', 'path': '/', 'pool': 'default', 'size': '64MiB'}}},
                wait=True)
        cached = _subvolume(os.path.join(pool_dir, 'images', image.fingerprint))
        assert 'readonly' in cached['Flags']
        # Unprivileged instances clone the image's copy shifted to their idmap (made once per
        # image and idmap, itself a snapshot of the cached image), not the image itself.
        variants = {}
        for entry in os.listdir(os.path.join(pool_dir, 'images')):
            if entry.startswith(image.fingerprint + '@'):
                variant = _subvolume(os.path.join(pool_dir, 'images', entry))
                assert 'readonly' in variant['Flags']
                assert variant['Parent UUID'] == cached['UUID']
                variants[variant['UUID']] = entry
        parents = {_subvolume(os.path.join(pool_dir, 'containers', n))['Parent UUID']
                   for n in names}
        assert len(parents) == 1 and parents <= set(variants) | {cached['UUID']}
        volumes = client.storage_pools.get('default').volumes.all()
        kinds = {(v.type, v.name) for v in volumes}
        assert ('image', image.fingerprint) in kinds
        assert {('container', n) for n in names} <= kinds
        listing = subprocess.run(['lxc', 'storage', 'volume', 'list', 'default', '--format',
                                  'csv'], env=dict(os.environ, LXD_DIR=backend.data_dir),
                                 capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0, listing.stderr
        assert 'container,%s' % names[0] in listing.stdout
        rootfs = os.path.join(pool_dir, 'containers', names[0], 'rootfs')
        big = subprocess.run(['dd', 'if=/dev/urandom', 'of=%s/big' % rootfs, 'bs=1M',
                              'count=100', 'conv=fsync'], capture_output=True, text=True)
        assert big.returncode != 0 and 'quota exceeded' in big.stderr.lower()
    finally:
        cleanup.delete_instances_and_image(client, names, image)
    assert not os.path.exists(os.path.join(pool_dir, 'images', image.fingerprint))
    assert not any(os.path.exists(os.path.join(pool_dir, 'containers', n)) for n in names)


def test_stock_lxc_client_storage_commands(backend):
    env = dict(os.environ, LXD_DIR=backend.data_dir)
    name = _name('lxc')

    def lxc(*args):
        proc = subprocess.run(['lxc'] + list(args), env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    lxc('storage', 'create', name, 'dir')
    try:
        assert name in lxc('storage', 'list', '--format', 'csv')
        lxc('storage', 'volume', 'create', name, 'vol1')
        assert 'vol1' in lxc('storage', 'volume', 'list', name, '--format', 'csv')
        lxc('storage', 'volume', 'rename', name, 'vol1', 'vol2')
        assert 'vol2' in lxc('storage', 'volume', 'list', name, '--format', 'csv')
        assert 'space used' in lxc('storage', 'info', name).lower()
        lxc('storage', 'volume', 'delete', name, 'vol2')
    finally:
        lxc('storage', 'delete', name)
    assert name not in lxc('storage', 'list', '--format', 'csv')


def test_restart_mounts_pools_once_and_destroy_frees_the_loop_device():
    daemon = BackendDaemon()
    try:
        client = daemon.start()
        mount_point = os.path.join(daemon.data_dir, 'storage-pools', 'default')
        image_file = client.storage_pools.get('default').config['source']
        image = client.images.create(corpus.busybox_unified(marker=b'restart'), wait=True)
        daemon.stop()
        assert _mounted(mount_point) == 1          # containers may still use it
        client = daemon.start()
        assert _mounted(mount_point) == 1          # mounting is idempotent
        daemon.stop()
        subprocess.run(['umount', mount_point], check=True)   # as after a host reboot
        client = daemon.start()
        assert _mounted(mount_point) == 1
        assert client.images.get(image.fingerprint).fingerprint == image.fingerprint
        assert client.storage_pools.get('default').driver == 'btrfs'
    finally:
        daemon.destroy()
    assert image_file not in _losetup()
    assert not os.path.exists(daemon.data_dir)


def test_dir_is_the_default_when_configured():
    daemon = BackendDaemon(config={'storage_driver': 'dir'})
    try:
        client = daemon.start()
        assert client.host_info['environment']['storage'] == 'dir'
        assert client.storage_pools.get('default').driver == 'dir'
        assert daemon.data_dir not in _losetup()
    finally:
        daemon.destroy()


def test_host_resources(backend, client):
    """GET /1.0/resources: this host's CPU threads and memory, for pylxd and `lxc info`."""
    resources = client.resources
    assert resources['cpu']['total'] == os.cpu_count()
    threads = [t['id'] for s in resources['cpu']['sockets'] for c in s['cores']
               for t in c['threads']]
    assert sorted(threads) == list(range(os.cpu_count()))
    with open('/proc/meminfo') as f:
        total_kib = int(f.readline().split()[1])
    assert resources['memory']['total'] == total_kib * 1024
    assert 0 < resources['memory']['used'] < resources['memory']['total']
    proc = subprocess.run(['lxc', 'info', '--resources'], capture_output=True, text=True,
                          env=dict(os.environ, LXD_DIR=backend.data_dir), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert resources['cpu']['sockets'][0]['vendor'] in proc.stdout


def test_restore_keeps_the_root_disk_size(backend):
    """A restored btrfs volume has the snapshot's content and keeps its qgroup limit.

    Driver level: the snapshots API belongs to another module.
    """
    from nova_lxd.backend.storage.btrfs import BtrfsDriver
    pool_dir = os.path.join(backend.data_dir, 'storage-pools', 'default')
    driver = BtrfsDriver('default', pool_dir, {})
    name = _name('restore')
    driver.create_empty_instance(name, size=32 << 20)
    try:
        marker = os.path.join(driver.instance_path(name), 'rootfs', 'marker')
        with open(marker, 'w') as f:
            f.write('before')
        driver.create_snapshot(name, 'snap0')
        os.unlink(marker)
        driver.restore_snapshot(name, 'snap0')
        with open(marker) as f:
            assert f.read() == 'before'
        assert driver._get_limit(driver.instance_path(name)) == 32 << 20
        assert [n for n in os.listdir(os.path.join(pool_dir, 'containers'))
                if name in n] == [name]
    finally:
        driver.delete_instance(name)
    assert not os.path.exists(driver.instance_path(name))
    assert not os.path.exists(os.path.join(pool_dir, 'containers-snapshots', name))
