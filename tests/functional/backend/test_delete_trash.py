"""Delete of a stopped instance: its volumes leave its name at once and go in the background.

The delete renames the instance's volume and snapshot volumes aside (.trash-<name>-<id> in the
pool) and deletes them on the daemon's background thread; these tests hold it to what a client
must see (the name free at once, nothing of the old instance in a new one of the same name),
to the pool ending up empty of trash, and to a restart removing what a crash left.
"""
import glob
import os
import subprocess
import time

from pylxd.exceptions import LXDAPIException
import pytest

from tests.backend_fixture import BackendDaemon
from tests.functional.backend.busybox_rootfs import cleanup, create_busybox, rootfs_path, unique


def _trash(backend):
    return glob.glob(os.path.join(backend.data_dir, 'storage-pools', '*', 'containers*',
                                  '.trash-*'))


def _wait_no_trash(backend, timeout=60):
    deadline = time.monotonic() + timeout
    while _trash(backend) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _trash(backend)


def test_delete_then_recreate_the_same_name(client, backend):
    name = unique('del')
    first = create_busybox(client, backend, name=name)
    try:
        first.snapshots.create('snap0', wait=True)
        with open(os.path.join(rootfs_path(backend, name), 'root', 'old-instance'), 'w') as f:
            f.write('the first instance of this name')
        first.delete(wait=True)
        assert not client.instances.exists(name)
        second = create_busybox(client, backend, name=name)       # at once: the name is free
        assert not os.path.exists(os.path.join(rootfs_path(backend, name), 'root',
                                               'old-instance'))
        assert second.snapshots.all() == []
        second.start(wait=True)
        assert client.instances.get(name).status == 'Running'
        second.stop(force=True, wait=True)
        second.delete(wait=True)
        assert not client.instances.exists(name)
        assert _wait_no_trash(backend) == []
        assert not glob.glob(os.path.join(backend.data_dir, 'storage-pools', '*', 'containers*',
                                          name))
    finally:
        if client.instances.exists(name):
            cleanup(client.instances.get(name))


def test_deleting_a_running_instance_is_refused_and_keeps_it(client, backend):
    instance = create_busybox(client, backend)
    try:
        instance.start(wait=True)
        with pytest.raises(LXDAPIException) as refused:
            instance.delete(wait=True)
        assert refused.value.response.status_code == 400
        assert 'running' in str(refused.value)
        assert client.instances.get(instance.name).status == 'Running'
        assert os.path.isdir(rootfs_path(backend, instance.name))
        assert _trash(backend) == []
    finally:
        cleanup(instance)


@pytest.fixture
def private_backend():
    daemon = BackendDaemon()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.destroy()


def test_a_restart_removes_the_trash_a_crash_left(private_backend):
    """Volumes a delete moved aside, its background work cut short by a crash, go at start.

    Made here as the delete leaves them (real volumes of the pool), with the daemon SIGKILLed.
    """
    backend = private_backend
    client = backend.client()
    kept = create_busybox(client, backend)
    kept.snapshots.create('snap0', wait=True)
    driver = client.storage_pools.get('default').driver
    pool_dir = glob.glob(os.path.join(backend.data_dir, 'storage-pools', '*'))[0]
    backend.stop(sig=9)
    volume = os.path.join(pool_dir, 'containers', '.trash-gone-0123abcd')
    snapshots = os.path.join(pool_dir, 'containers-snapshots', '.trash-gone-0123abcd')
    os.makedirs(snapshots)
    if driver == 'btrfs':
        for path in (volume, os.path.join(snapshots, 'snap0')):
            subprocess.run(['btrfs', 'subvolume', 'create', path], check=True,
                           capture_output=True)
    else:
        os.makedirs(os.path.join(volume, 'rootfs'))
        os.makedirs(os.path.join(snapshots, 'snap0', 'rootfs'))
    with open(os.path.join(volume, 'rootfs', 'data') if driver != 'btrfs'
              else os.path.join(volume, 'data'), 'w') as f:
        f.write('left by a crash')
    assert len(_trash(backend)) == 2
    backend.start()
    client = backend.client()
    assert _trash(backend) == []
    # the instance that was not being deleted is untouched, snapshot and all
    assert client.instances.exists(kept.name)
    assert [s.name for s in client.instances.get(kept.name).snapshots.all()] == ['snap0']
    assert os.path.isdir(rootfs_path(backend, kept.name))
    client.instances.get(kept.name).delete(wait=True)
    assert _wait_no_trash(backend) == []


def test_the_delete_is_an_async_operation_already_done(client, backend):
    """The work is done in the request; clients still get LXD's 202, Location and operation."""
    instance = create_busybox(client, backend)
    reply = client.api.instances[instance.name].delete()
    assert reply.status_code == 202
    body = reply.json()
    assert body['type'] == 'async' and reply.headers['Location'] == body['operation']
    assert body['metadata']['resources']['instances'] == ['/1.0/instances/%s' % instance.name]
    assert not client.instances.exists(instance.name)
    operation = client.operations.get(body['operation'].rsplit('/', 1)[1])
    operation.wait()
    assert client.operations.get(operation.id).status == 'Success'


def test_a_protected_instance_is_not_deleted(client, backend):
    instance = create_busybox(client, backend,
                              config={'security.protection.delete': 'true'})
    try:
        with pytest.raises(LXDAPIException) as refused:
            instance.delete(wait=True)
        assert refused.value.response.status_code == 400
        assert 'protected' in str(refused.value)
        assert client.instances.exists(instance.name)
        assert os.path.isdir(rootfs_path(backend, instance.name))
        assert _trash(backend) == []
    finally:
        instance.config['security.protection.delete'] = 'false'
        instance.save(wait=True)
        cleanup(instance)
