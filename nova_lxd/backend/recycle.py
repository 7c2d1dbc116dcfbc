"""Giving back a burst's memory for good: the daemon executes itself again once it is quiet.

After a burst (a thousand launches, listings of them, their deletes) CPython keeps each 1 MiB
arena of small objects that still holds one live object, and a few objects always outlive a
burst (a new worker thread, a cache entry); after a thousand containers that is ~20 MB that no
trim can return (benchmarks/README.md, pass 6). A fresh interpreter returns it. So when the
daemon is quiet after a burst (no operation, no client connection but event listeners) and its
RSS is more than `recycle_growth_mb` above what it was when it began serving, it executes
itself again: the same PID and command line, its listening sockets handed over open (a client
that connects meanwhile waits in the backlog and is served by the new image), containers,
dnsmasq and lxcfs left running and adopted by the start-up reconciliation, as after any
restart. Event listeners on the unix socket are handed over too (event_streams.py) and see
nothing; those on HTTPS are closed with 1012 (service restart) and reconnect. SIGHUP asks for
the same at the next quiet moment whatever the memory: an upgraded package takes effect
without dropping a connection.
"""
import asyncio
import logging
import os
import sys

from nova_lxd.backend import event_streams, listeners, memory

LOG = logging.getLogger(__name__)

MB = 1048576
# Connections accepted just before the listeners paused reach the server within this time.
SETTLE = 0.05
# How long event listeners get to take their close before the exec cuts them.
CLOSE_TIMEOUT = 2.0


def was_recycled():
    """True in an image started by a recycle (before the listeners take their sockets)."""
    return bool(os.environ.get(listeners.LISTEN_ENV))


class Recycler:
    """Decides when the daemon re-executes itself, and does it.

    The daemon provides: quiet() (nothing would be cut but event listeners),
    pause_listeners() -> {name: (socket, address)} (sockets still listening, no longer
    accepted from), resume_listeners(those), hand_over_event_listeners(timeout) -> [(fd,
    types)] and stop(keep_socket=True).
    """

    def __init__(self, daemon, growth_mb):
        self._daemon = daemon
        self._growth = growth_mb * MB
        self._baseline = None
        self._requested = False
        self._running = False
        self._task = None            # a reference: the loop keeps only a weak one

    def serving(self):
        """The API is open: what the daemon needs from now on is the baseline."""
        self._baseline = memory.rss_bytes()

    def request(self):
        """SIGHUP: re-execute at the next quiet moment."""
        LOG.info('Re-executing when quiet (SIGHUP)')
        self._requested = True
        self.check()

    def _grown(self):
        if self._baseline is None or self._growth <= 0:
            return 0
        grown = memory.rss_bytes() - self._baseline
        return grown if grown > self._growth else 0

    def check(self):
        """Called on the event loop when the daemon has settled after work (or on request)."""
        if self._running or not (self._requested or self._grown()):
            return
        if not self._daemon.quiet():
            return
        self._running = True
        self._task = asyncio.get_running_loop().create_task(self._recycle())

    async def _recycle(self):
        kept = await self._daemon.pause_listeners()
        await asyncio.sleep(SETTLE)
        grown = self._grown()
        if not (self._requested or grown) or not self._daemon.quiet():
            await self._daemon.resume_listeners(kept)     # work came in: another time
            self._running = False
            return
        if grown:
            LOG.info('Quiet with %.1f MB more than at start (RSS %.1f MB): re-executing to give '
                     'it back', grown / MB, memory.rss_bytes() / MB)
        else:
            LOG.info('Re-executing as asked (RSS %.1f MB)', memory.rss_bytes() / MB)
        streams = []
        try:
            streams = await self._daemon.hand_over_event_listeners(CLOSE_TIMEOUT)
            await self._daemon.stop(keep_socket=True)
        except Exception:    # half stopped: only the new image can serve again
            LOG.exception('Stopping before the re-exec failed; re-executing all the same')
        _exec(kept, streams)


def _exec(kept, streams):
    os.environ[listeners.LISTEN_ENV] = listeners.handover(kept)
    os.environ[event_streams.HANDOVER_ENV] = event_streams.handover(streams)
    for handler in logging.getLogger().handlers:
        handler.flush()
    # sys.orig_argv: the interpreter's own options and `-m module` or the script, as started
    os.execv(sys.executable, [sys.executable] + sys.orig_argv[1:])


def reap_inherited(loop, interval=5.0):
    """In a re-executed image: reap the previous image's children when they end.

    dnsmasq and lxcfs stay our children across the exec, but their subprocess handles did not
    survive it; without this each one that ends would stay a zombie.
    """
    me = str(os.getpid())
    children = set()
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == me:
                children.add(int(entry))

    def reap():
        for pid in list(children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:        # reaped elsewhere (dnsmasq's stop)
                done = pid
            if done:
                children.discard(pid)
        if children:
            loop.call_later(interval, reap)
    reap()
