"""Backend lifecycle events -> Nova lifecycle events.

A listener follows GET /1.0/events?type=lifecycle; when a container starts, stops, freezes or
thaws (also behind Nova's back: a shutdown inside the guest, `lxc stop`), the driver emits the
matching virt LifecycleEvent so the compute manager syncs the power state at once. While the
stream is lost (a backend restart, a network blip) events are missed; after each reconnect the
listener compares every instance's status with the last one it knew and emits what changed.
"""
import json
import threading

from oslo_log import log as logging
from pylxd.client import EventType
from pylxd.client import _WebsocketClient

from nova.virt import event as virtevent

LOG = logging.getLogger(__name__)

TRANSITIONS = {
    'instance-started': virtevent.EVENT_LIFECYCLE_STARTED,
    'instance-stopped': virtevent.EVENT_LIFECYCLE_STOPPED,
    'instance-shutdown': virtevent.EVENT_LIFECYCLE_STOPPED,
    'instance-paused': virtevent.EVENT_LIFECYCLE_PAUSED,
    'instance-resumed': virtevent.EVENT_LIFECYCLE_RESUMED,
}

# the instance status each transition leaves behind
STATUS_AFTER = {
    virtevent.EVENT_LIFECYCLE_STARTED: 'Running',
    virtevent.EVENT_LIFECYCLE_STOPPED: 'Stopped',
    virtevent.EVENT_LIFECYCLE_PAUSED: 'Frozen',
    virtevent.EVENT_LIFECYCLE_RESUMED: 'Running',
}


def _instance_name(source):
    return source.rsplit('/', 1)[-1].split('?')[0]


def status_transition(old, new):
    """The lifecycle transition from one instance status to another, or None."""
    if old == new or old is None:
        return None
    if new == 'Running':
        return virtevent.EVENT_LIFECYCLE_RESUMED if old == 'Frozen' else \
            virtevent.EVENT_LIFECYCLE_STARTED
    return {'Stopped': virtevent.EVENT_LIFECYCLE_STOPPED,
            'Frozen': virtevent.EVENT_LIFECYCLE_PAUSED}.get(new)


def lifecycle_event(message, uuid_of):
    """A virt LifecycleEvent for one backend event message, or None."""
    if message.get('type') != 'lifecycle':
        return None
    metadata = message.get('metadata') or {}
    transition = TRANSITIONS.get(metadata.get('action'))
    source = metadata.get('source') or ''
    if transition is None or '/instances/' not in source:
        return None
    uuid = uuid_of(_instance_name(source))
    if uuid is None:
        return None
    return virtevent.LifecycleEvent(uuid, transition)


class Listener:
    def __init__(self, client, emit, uuid_of):
        self.client = client
        self.emit = emit
        self.uuid_of = uuid_of
        self._stopped = threading.Event()
        self._ws = None
        self._thread = None
        self._statuses = None           # instance name -> status, as last known
        self.following = threading.Event()   # set while the stream is followed

    def start(self):
        self._thread = threading.Thread(target=self._run, name='nova-lxd-events', daemon=True)
        self._thread.start()

    def stop(self):
        self._stopped.set()
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass

    def _handle(self, raw):
        try:
            message = json.loads(raw)
            event = lifecycle_event(message, self.uuid_of)
            if event is not None:
                self._statuses[_instance_name(message['metadata']['source'])] = \
                    STATUS_AFTER[event.get_transition()]
                self.emit(event)
        except Exception:
            LOG.exception('Could not handle backend event %s', raw)

    def _catch_up(self):
        """After a (re)connect: emit the transitions no event told of while unconnected."""
        now = {instance.name: instance.status
               for instance in self.client.instances.all(recursion=1)}
        missed = 0
        for name, status in now.items():
            transition = status_transition((self._statuses or {}).get(name), status)
            uuid = transition and self.uuid_of(name)
            if uuid:
                self.emit(virtevent.LifecycleEvent(uuid, transition))
                missed += 1
        if missed:
            LOG.info('Caught up on %d lifecycle change(s) missed while the event stream was '
                     'lost', missed)
        self._statuses = now

    def _run(self):
        listener = self

        class _Socket(_WebsocketClient):
            def handshake_ok(self):
                LOG.debug('Following backend lifecycle events')

            def received_message(self, message):
                listener._handle(message.data.decode('utf-8'))

        backoff = 1
        while not self._stopped.is_set():
            try:
                self._ws = self.client.events(websocket_client=_Socket,
                                              event_types={EventType.Lifecycle})
                self._ws.connect()
                # listed after connecting: a change from now on is in the stream or the listing
                self._catch_up()
                backoff = 1
                self.following.set()
                self._ws.run()
            except Exception as exc:
                LOG.warning('Backend event stream lost (%s); reconnecting', exc)
            self.following.clear()
            if not self._stopped.wait(backoff):
                backoff = min(backoff * 2, 30)
