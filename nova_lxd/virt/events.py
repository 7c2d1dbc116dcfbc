"""Backend lifecycle events -> Nova lifecycle events.

A listener follows GET /1.0/events?type=lifecycle; when a container starts, stops, freezes or
thaws (also behind Nova's back: a shutdown inside the guest, `lxc stop`), the driver emits the
matching virt LifecycleEvent so the compute manager syncs the power state at once.
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


def lifecycle_event(message, uuid_of):
    """A virt LifecycleEvent for one backend event message, or None."""
    if message.get('type') != 'lifecycle':
        return None
    metadata = message.get('metadata') or {}
    transition = TRANSITIONS.get(metadata.get('action'))
    source = metadata.get('source') or ''
    if transition is None or '/instances/' not in source:
        return None
    name = source.rsplit('/', 1)[-1].split('?')[0]
    uuid = uuid_of(name)
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
            event = lifecycle_event(json.loads(raw), self.uuid_of)
            if event is not None:
                self.emit(event)
        except Exception:
            LOG.exception('Could not handle backend event %s', raw)

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
                backoff = 1
                self._ws.run()
            except Exception as exc:
                LOG.warning('Backend event stream lost (%s); reconnecting', exc)
            if not self._stopped.wait(backoff):
                backoff = min(backoff * 2, 30)
