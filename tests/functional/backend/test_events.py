"""GET /1.0/events: operation and lifecycle events, filtered by type (pylxd and `lxc monitor`)."""
import json
import os
import subprocess
import threading
import time

import pytest
from pylxd.client import EventType
from ws4py.client.threadedclient import WebSocketClient

from tests.functional.backend.busybox_rootfs import attach, cleanup, create_busybox


class _Collector(WebSocketClient):
    """A ws4py listener, the kind of client pylxd's events() hands out."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []
        self.opened_event = threading.Event()

    def opened(self):
        self.opened_event.set()

    def received_message(self, message):
        self.events.append(json.loads(message.data))


def _listen(client, types=None):
    listener = client.events(websocket_client=_Collector, event_types=types)
    listener.connect()
    assert listener.opened_event.wait(10)
    return listener


def _wait_for(listener, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(listener.events):
            return True
        time.sleep(0.1)
    return predicate(listener.events)


def _actions(events):
    return [(e['metadata']['action'], e['metadata']['source']) for e in events
            if e['type'] == 'lifecycle']


@pytest.fixture
def instance(backend):
    inst = create_busybox(backend.client(), backend)
    yield inst
    cleanup(inst)


def test_lifecycle_filter_with_pylxd(client, instance):
    listener = _listen(client, {EventType.Lifecycle})
    try:
        instance.snapshots.create('ev', wait=True)
        instance.snapshots.get('ev').delete(wait=True)
        src = '/1.0/instances/%s/snapshots/ev' % instance.name
        wanted = [('instance-snapshot-created', src), ('instance-snapshot-deleted', src)]
        assert _wait_for(listener, lambda ev: all(a in _actions(ev) for a in wanted)), \
            listener.events
        assert {e['type'] for e in listener.events} == {'lifecycle'}
        assert all(e['timestamp'] and e['location'] for e in listener.events)
    finally:
        listener.close()


def test_operation_events_with_pylxd(client, instance):
    listener = _listen(client, {EventType.Operation})
    try:
        instance.snapshots.create('op', wait=True)

        def finished(events):
            return any(e['metadata']['description'] == 'Snapshotting instance' and
                       e['metadata']['status'] == 'Success' for e in events)
        assert _wait_for(listener, finished), listener.events
        assert {e['type'] for e in listener.events} == {'operation'}
        statuses = [e['metadata']['status'] for e in listener.events
                    if e['metadata']['description'] == 'Snapshotting instance']
        assert statuses[0] == 'Running' and statuses[-1] == 'Success'
    finally:
        listener.close()


def test_unknown_type_is_refused(client):
    resp = client.api.session.get(client.api._api_endpoint + '/events?type=bogus')
    assert resp.status_code == 400 and 'bogus' in resp.json()['error']


def test_lxc_monitor_lifecycle(backend, client, instance):
    monitor = subprocess.Popen(['lxc', 'monitor', '--type=lifecycle', '--format=json'],
                               env=dict(os.environ, LXD_DIR=backend.data_dir),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)   # let it subscribe
        instance.start(wait=True)
        instance.snapshots.create('mon', wait=True)
        instance.stop(force=True, wait=True)
        time.sleep(1)
    finally:
        monitor.terminate()
        out, err = monitor.communicate(timeout=20)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert events, err
    assert {e['type'] for e in events} == {'lifecycle'}
    actions = [e['metadata']['action'] for e in events]
    assert 'instance-started' in actions
    assert 'instance-snapshot-created' in actions
    assert any(a in actions for a in ('instance-stopped', 'instance-shutdown'))


def test_a_container_that_powers_off_by_itself_is_reported_and_cleaned_up(backend, client):
    """A poweroff inside: instance-shutdown on the stream, Stopped, as LXD; ephemeral: deleted."""
    kept = create_busybox(client, backend)
    ephemeral = create_busybox(client, backend)
    ephemeral.ephemeral = True
    ephemeral.save(wait=True)
    listener = _listen(client, {EventType.Lifecycle})
    try:
        for inst in (kept, ephemeral):
            inst.start(wait=True)
            attach(backend, inst.name, 'poweroff')
        sources = {'/1.0/instances/%s' % inst.name for inst in (kept, ephemeral)}
        assert _wait_for(listener, lambda events: {
            (action, source) for action, source in _actions(events) if source in sources} >= {
            ('instance-shutdown', '/1.0/instances/%s' % kept.name),
            ('instance-shutdown', '/1.0/instances/%s' % ephemeral.name),
            ('instance-deleted', '/1.0/instances/%s' % ephemeral.name)}), _actions(listener.events)
        # nothing said it stopped but itself: no API stop ran
        assert not [a for a, s in _actions(listener.events) if s in sources and a in (
            'instance-stopped', 'instance-restarted')]
    finally:
        listener.close()
    kept = client.instances.get(kept.name)
    assert kept.status == 'Stopped'
    assert kept.config['volatile.last_state.power'] == 'STOPPED'
    assert not client.instances.exists(ephemeral.name)
    kept.start(wait=True)           # and it starts again as after any stop
    assert kept.state().status == 'Running'
    kept.stop(force=True, wait=True)
    cleanup(kept)
