"""The event hub behind /1.0/events: operation, lifecycle and logging events to subscribers."""
import asyncio
import logging
import os
import socket

from nova_lxd.backend.operations import now_iso

LOG = logging.getLogger(__name__)
TYPES = ('operation', 'lifecycle', 'logging')


class EventHub:
    def __init__(self):
        self._subscribers = set()
        self._location = socket.gethostname()
        self.kept = []      # [(fd, types)]: listeners' streams handed to the next image

    def subscribe(self, types):
        queue = asyncio.Queue(maxsize=10000)
        entry = (queue, frozenset(types or TYPES))
        self._subscribers.add(entry)
        return entry

    def unsubscribe(self, entry):
        self._subscribers.discard(entry)

    def listener_count(self):
        return len(self._subscribers)

    def restarting(self):
        """Tell every listener (None in its queue) to hand its stream over, or close it."""
        for queue, _ in list(self._subscribers):
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:     # it will be cut by the exec
                pass

    def keep(self, sock, types):
        """A listener's stream goes on in the next image (its descriptor, duplicated)."""
        fd = os.dup(sock.fileno())
        os.set_inheritable(fd, True)
        self.kept.append((fd, types))

    def send(self, event_type, metadata, project='default'):
        if not self._subscribers:
            return
        event = {'type': event_type, 'timestamp': now_iso(), 'metadata': metadata,
                 'location': self._location, 'project': project}
        for queue, types in list(self._subscribers):
            if event_type in types:
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:  # a stalled listener loses events, never the daemon
                    LOG.warning('Dropping an event for a slow events listener')

    def lifecycle(self, action, source, **context):
        self.send('lifecycle', {'action': action, 'source': source, 'context': context})
