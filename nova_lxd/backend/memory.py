"""The daemon's own memory: given back to the system after a burst of work, and traced on demand.

After a burst (a thousand launches, listings, deletes) CPython frees its objects, but the heap
they lived on stays with the process: glibc keeps freed memory in its arenas (one per thread
that allocated, up to 8 per core; capped at ARENAS here) until something trims them. So once
the daemon has been idle for a moment after operations or requests, it collects its garbage and
asks glibc to give back what it can (malloc_trim(0)), once, on a worker thread.

Debugging: SIGUSR2 logs the daemon's RSS and glibc heap. With NOVA_LXD_TRACEMALLOC=<frames> in
its environment the daemon also traces its Python allocations, and SIGUSR2 writes a snapshot
(tracemalloc-<n>.snap in the data directory) too, for a diff between two moments
(tracemalloc.Snapshot.load).
"""
import asyncio.sslproto
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import threading
import tracemalloc

LOG = logging.getLogger(__name__)

# Idle this long after the last operation changed: the burst is over.
IDLE_DELAY = 2.0

# glibc gives each thread that allocates an arena of its own, up to 8 per core; a worker that
# decoded a large netlink dump or a listing keeps its arena's high-water mark. The daemon's
# threads mostly wait on the GIL, so a few arenas shared between them cost no contention.
ARENAS = 2
M_ARENA_MAX = -8
# glibc serves a block this large or larger from mmap, and unmaps it when freed. By default it
# raises that threshold to the size of each mmapped block freed (up to 32 MB): after one large
# listing reply, the next ones went to the heap and left it fragmented.
MMAP_THRESHOLD = 256 * 1024
M_MMAP_THRESHOLD = -3


class _MallInfo2(ctypes.Structure):
    _fields_ = [(field, ctypes.c_size_t) for field in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
        'fordblks', 'keepcost')]


try:
    _libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    _malloc_trim = _libc.malloc_trim
    _malloc_trim.argtypes = [ctypes.c_size_t]
    _mallopt = _libc.mallopt
    _mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _mallinfo2 = getattr(_libc, 'mallinfo2', None)      # glibc 2.33 and later
    if _mallinfo2 is not None:
        _mallinfo2.restype = _MallInfo2
except (OSError, AttributeError):        # not glibc
    _malloc_trim = _mallopt = _mallinfo2 = None


def malloc_summary():
    """glibc's heap in MB: in use, free inside it, in large mmapped blocks ({} if not glibc)."""
    if _mallinfo2 is None:
        return {}
    info = _mallinfo2()
    return {'in use': info.uordblks / 1048576, 'free': info.fordblks / 1048576,
            'mmapped': info.hblkhd / 1048576}


def _heap_text():
    return ', '.join('%s %.1f MB' % item for item in malloc_summary().items()) or 'unknown'


def tune_malloc(arenas=ARENAS, mmap_threshold=MMAP_THRESHOLD):
    """Cap glibc's arenas and fix its mmap threshold (before the worker threads start).

    False if not glibc.
    """
    tuned = bool(_mallopt is not None and _mallopt(M_ARENA_MAX, arenas)
                 and _mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    if tuned:
        _fit_ssl_reads(mmap_threshold)
    return tuned


def _fit_ssl_reads(mmap_threshold):
    """Keep asyncio's TLS reads below the mmap threshold.

    asyncio's TLS layer reads decrypted data with a buffer of SSLProtocol.max_size (256 KiB)
    for each TLS record (16 KiB at most): at the threshold, every record of an HTTPS stream
    cost an mmap, page faults, an mremap and an munmap. Half the threshold keeps those buffers
    on the heap: 0.2 CPU-seconds less for the daemon receiving a 200 MB migration.
    """
    limit = mmap_threshold // 2
    if asyncio.sslproto.SSLProtocol.max_size > limit:
        asyncio.sslproto.SSLProtocol.max_size = limit


def rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def give_back():
    """Collect garbage and return free heap to the system; the RSS freed, in bytes."""
    before = rss_bytes()
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    return before - rss_bytes()


class IdleTrimmer:
    """Calls give_back() once the operations have been quiet for IDLE_DELAY seconds.

    And again `late` seconds after them (if given): by then the server has closed the
    connections the burst's clients left idle (config.KEEPALIVE_TIMEOUT), and their buffers.

    activity() is called on the event loop at each operation change; a trim is due only after
    some activity, so an idle daemon does not trim over and over. on_settled() is called on the
    loop after each trim.
    """

    def __init__(self, loop, delay=IDLE_DELAY, late=None, on_settled=None):
        self._loop = loop
        self._delays = (delay,) if late is None else (delay, late)
        self._on_settled = on_settled
        self._handles = []
        self._lock = threading.Lock()     # one trim at a time
        self.trims = 0

    def activity(self):
        try:
            self._loop.call_soon_threadsafe(self._reschedule)   # a worker thread may report too
        except RuntimeError:     # the loop has closed: the daemon is gone
            pass

    def _reschedule(self):
        self.cancel()
        self._handles = [self._loop.call_later(delay, self._due) for delay in self._delays]

    def _due(self):
        trimmed = self._loop.run_in_executor(None, self._trim)
        if self._on_settled is not None:
            trimmed.add_done_callback(lambda _: self._on_settled())

    def _trim(self):
        if not self._lock.acquire(blocking=False):
            return
        try:
            freed = give_back()
            self.trims += 1
            if LOG.isEnabledFor(logging.DEBUG):
                LOG.debug('Idle after a burst: gave back %.1f MB (RSS now %.1f MB; glibc heap '
                          '%s)', freed / 1048576, rss_bytes() / 1048576, _heap_text())
        finally:
            self._lock.release()

    def cancel(self):
        for handle in self._handles:
            handle.cancel()
        self._handles = []


def report_on_signal(loop, directory):
    """SIGUSR2 logs the daemon's memory (and writes a snapshot when tracing, see above).

    Installed whether tracing or not: SIGUSR2's default action ends the process, and a daemon
    killed that way leaves its dnsmasq and firewall table behind.
    """
    frames = os.environ.get('NOVA_LXD_TRACEMALLOC')
    if frames:
        tracemalloc.start(int(frames))
        LOG.info('Tracing allocations (%s frames); SIGUSR2 writes a snapshot', frames)
    count = [0]

    def report():
        traced = ''
        if tracemalloc.is_tracing():
            count[0] += 1
            path = os.path.join(directory, 'tracemalloc-%d.snap' % count[0])
            tracemalloc.take_snapshot().dump(path)
            current, peak = tracemalloc.get_traced_memory()
            traced = ', traced %.1f MB (peak %.1f MB), snapshot %s' % (
                current / 1048576, peak / 1048576, path)
        LOG.info('Memory: RSS %.1f MB, %d threads, glibc heap %s%s', rss_bytes() / 1048576,
                 threading.active_count(), _heap_text(), traced)
    loop.add_signal_handler(signal.SIGUSR2, report)
