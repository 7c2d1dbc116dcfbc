"""Clean-up that need not hold up an API call: run in the background, finished on demand.

After a container stops, deleting its NIC's veth costs about 16 ms in the kernel (an RCU grace
period); the caller of a stop or a delete does not need it done to see the instance stopped or
gone (nothing of it shows in the API). Such work becomes a job with a key (the instance and
device), that one background thread runs soon after. Whoever needs a job finished (the next
start of that instance) drains it: runs it on its own thread if the background has not begun
it, or waits for it. A job runs at most once; the jobs of one key run in order. The daemon
drains them all when it stops.
"""
import logging
import queue
import threading

LOG = logging.getLogger(__name__)


class _Job:
    def __init__(self, func, what):
        self.func = func
        self.what = what
        self.lock = threading.Lock()
        self.done = False

    def run(self):
        with self.lock:
            if self.done:
                return
            try:
                self.func()
            except Exception:
                LOG.exception('Deferred %s failed', self.what)
            finally:
                self.done = True


class Deferred:
    def __init__(self, name='deferred'):
        self._name = name
        self._jobs = {}
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._thread = None

    def defer(self, key, func, what=''):
        """Run func() in the background, as the job of `key` (after that key's earlier job)."""
        self.drain(key)
        job = _Job(func, what or key)
        with self._lock:
            self._jobs[key] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self._name,
                                                daemon=True)
                self._thread.start()
        self._queue.put((key, job))

    def run_now(self, key, func, what=''):
        """As defer, but on a thread of its own, begun at once.

        For a job whose start someone waits to see: it must not queue behind long ones.
        """
        self.drain(key)
        job = _Job(func, what or key)
        with self._lock:
            self._jobs[key] = job
        threading.Thread(target=self._finish, args=(key, job), name=self._name,
                         daemon=True).start()

    def pending(self, key):
        with self._lock:
            return key in self._jobs

    def drain(self, key):
        """Return once the job of `key`, if any, has run (here, or on the background thread)."""
        with self._lock:
            job = self._jobs.get(key)
        if job is not None:
            self._finish(key, job)

    def drain_all(self):
        with self._lock:
            keys = list(self._jobs)
        for key in keys:
            self.drain(key)

    def _finish(self, key, job):
        job.run()
        with self._lock:
            if self._jobs.get(key) is job:
                del self._jobs[key]

    def _work(self):
        while True:
            key, job = self._queue.get()
            self._finish(key, job)


# the backend's one background queue (one daemon per process)
BACKGROUND = Deferred('post-stop')
