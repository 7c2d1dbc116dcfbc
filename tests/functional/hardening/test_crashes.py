"""SIGKILL the daemon right after it accepted a create, start, snapshot or publish; restart it.

Afterwards: the containers that were running still run, every instance, snapshot and image the
API lists is whole and nothing half-made is on disk or listed, and the interrupted operation is
reported failed (the restarted daemon logs it as interrupted; it is never left running).
"""
import os
import signal

import pytest

from tests.backend_fixture import BackendDaemon
from tests.functional.backend.busybox_rootfs import attach, create_busybox, unique


@pytest.fixture
def own_backend():
    daemon = BackendDaemon()
    daemon.start()
    yield daemon
    daemon.destroy()


def _submit(client, action, target):
    """Send one async request; return its operation id."""
    api = client.api
    if action == 'create':
        resp = api.instances.post(json={'name': target, 'source': {'type': 'none'}})
    elif action == 'start':
        resp = api.instances[target].state.put(json={'action': 'start'})
    elif action == 'snapshot':
        resp = api.instances[target].snapshots.post(json={'name': 'snap0'})
    else:
        resp = api.images.post(json={'source': {'type': 'instance', 'name': target}})
    body = resp.json()
    assert body['type'] == 'async', body
    return body['metadata']['id']


def _finished(client, action, target):
    if action == 'create':
        return client.instances.exists(target)
    if action == 'start':
        return client.instances.get(target).status == 'Running'
    if action == 'snapshot':
        return 'snap0' in {s.name for s in client.instances.get(target).snapshots.all()}
    return bool(client.images.all())     # the only image this daemon has is the published one


def _entries(path):
    return set(os.listdir(path)) if os.path.isdir(path) else set()


def _assert_consistent(daemon, client):
    names = {inst.name for inst in client.instances.all()}
    for inst in client.instances.all():
        assert inst.status in ('Running', 'Stopped'), (inst.name, inst.status)
        inst.state()
        on_disk = _entries(os.path.join(daemon.data_dir, 'storage-pools', 'default',
                                        'containers-snapshots', inst.name))
        assert on_disk <= {snap.name for snap in inst.snapshots.all()}, on_disk
    pool = os.path.join(daemon.data_dir, 'storage-pools', 'default')
    assert _entries(os.path.join(pool, 'containers')) == names
    assert _entries(os.path.join(daemon.data_dir, 'containers')) <= names
    fingerprints = {image.fingerprint for image in client.images.all()}
    for image in client.images.all():
        image.export().read(1)      # its files are whole enough to export
    assert {e.split('.', 1)[0] for e in _entries(os.path.join(daemon.data_dir, 'images'))} \
        <= fingerprints
    assert _entries(os.path.join(pool, 'images')) <= fingerprints


@pytest.mark.parametrize('action', ['create', 'start', 'snapshot', 'publish'])
def test_sigkill_during_an_operation(own_backend, action):
    client = own_backend.client()
    bystander = create_busybox(client, own_backend, unique('by'))
    bystander.start(wait=True)
    init_pid = bystander.state().pid
    target = unique(action[:4])
    if action != 'create':
        create_busybox(client, own_backend, target)

    op_id = _submit(client, action, target)
    own_backend.stop(signal.SIGKILL)
    client = own_backend.start()

    # the running container was left alone and is still managed
    bystander = client.instances.get(bystander.name)
    assert bystander.status == 'Running' and bystander.state().pid == init_pid
    assert attach(own_backend, bystander.name, 'echo', 'alive') == 'alive\n'
    # the operation is never left running: either the kill came after it finished (its result
    # is all there) or the restarted daemon reports it failed
    interrupted = ('Operation %s' % op_id) in own_backend.log()
    if interrupted:
        assert 'Operation %s (' % op_id in own_backend.log() and \
            'was interrupted by a daemon restart: failed' in own_backend.log()
    else:
        assert _finished(client, action, target), '%s neither finished nor reported' % op_id
    resp = client.api.session.get(client.api._api_endpoint + '/operations/' + op_id)
    assert resp.status_code == 404 or resp.json()['metadata']['status'] != 'Running'
    assert all(op['status'] != 'Running'
               for ops in (client.api.operations.get(params={'recursion': 1}).json()['metadata']
                           or {}).values() for op in ops)
    _assert_consistent(own_backend, client)
    # and the interrupted target can be used or retried
    if action == 'create':
        if client.instances.exists(target):
            client.instances.get(target).delete(wait=True)
        client.instances.create({'name': target, 'source': {'type': 'none'}}, wait=True)
    elif action == 'snapshot':
        inst = client.instances.get(target)
        if 'snap0' not in {s.name for s in inst.snapshots.all()}:
            inst.snapshots.create('snap0', wait=True)
    elif action == 'start':
        inst = client.instances.get(target)
        if inst.status != 'Running':
            inst.start(wait=True)
        assert attach(own_backend, target, 'echo', 'up') == 'up\n'
