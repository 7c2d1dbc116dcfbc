"""Background operations: every long action runs as one, visible under /1.0/operations.

An operation runs a coroutine on the event loop; blocking work (liblxc, tar, btrfs) goes to the
worker pool through `Operation.run_blocking`, so a slow start never stalls the API.
"""
import asyncio
import concurrent.futures
import datetime
import logging
import secrets
import uuid

from nova_lxd.backend.errors import ApiError, BadRequest, Forbidden, NotFound

LOG = logging.getLogger(__name__)

# LXD's status codes (doc/rest-api.md "Status codes").
CREATED, STARTED, STOPPED, RUNNING, CANCELLING, PENDING = 100, 101, 102, 103, 104, 105
STARTING, STOPPING, ABORTING, FREEZING, FROZEN, THAWED, ERROR = 106, 107, 108, 109, 110, 111, 112
SUCCESS, FAILURE, CANCELLED = 200, 400, 401

STATUS_NAMES = {
    CREATED: 'Created', STARTED: 'Started', STOPPED: 'Stopped', RUNNING: 'Running',
    CANCELLING: 'Cancelling', PENDING: 'Pending', STARTING: 'Starting', STOPPING: 'Stopping',
    ABORTING: 'Aborting', FREEZING: 'Freezing', FROZEN: 'Frozen', THAWED: 'Thawed',
    ERROR: 'Error', SUCCESS: 'Success', FAILURE: 'Failure', CANCELLED: 'Cancelled',
}

# How long a finished operation stays visible: 5 s, as LXD. Kept longer, a burst's operations
# all lived at once (2,000 for 1,000 launches): 6 MB more at the peak, and as much more left
# behind in the heap after they went.
KEEP_FINISHED = 5.0


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Cancelled(Exception):
    """Raised inside an operation's work when a client cancelled it."""


class Operation:
    def __init__(self, registry, description, resources=None, op_class='task',
                 metadata=None, may_cancel=False):
        self.registry = registry
        self.id = str(uuid.uuid4())
        self.op_class = op_class
        self.description = description
        self.resources = resources or {}
        self.metadata = metadata
        self.may_cancel = may_cancel
        self.created_at = self.updated_at = now_iso()
        self.status_code = RUNNING
        self.err = ''
        self.done = asyncio.Event()
        self.task = None
        self.cancel_requested = False
        # websocket-class operations: secret -> fd name, and who serves a connecting socket
        self._secrets = {}
        self._websocket_handler = None

    @property
    def url(self):
        return '/1.0/operations/%s' % self.id

    def to_dict(self):
        return {
            'id': self.id, 'class': self.op_class, 'description': self.description,
            'created_at': self.created_at, 'updated_at': self.updated_at,
            'status': STATUS_NAMES[self.status_code], 'status_code': self.status_code,
            'resources': self.resources or None, 'metadata': self.metadata,
            'may_cancel': self.may_cancel, 'err': self.err, 'location': 'none',
        }

    def update_metadata(self, **values):
        self.metadata = dict(self.metadata or {}, **values)
        self.updated_at = now_iso()
        self.registry.notify(self)

    def check_cancelled(self):
        if self.cancel_requested:
            raise Cancelled()

    async def run_blocking(self, func, *args):
        return await self.registry.run_blocking(func, *args)

    def add_websockets(self, fd_names, handler):
        """Make this a websocket operation: one single-use secret per fd name.

        `await handler(request, fd_name)` serves GET .../websocket?secret=... and returns the
        aiohttp response; the secrets go to clients in metadata['fds'].
        """
        self.op_class = 'websocket'
        self._websocket_handler = handler
        fds = {}
        for fd_name in fd_names:
            secret = secrets.token_hex(32)
            self._secrets[secret] = fd_name
            fds[fd_name] = secret
        self.metadata = dict(self.metadata or {}, fds=fds)
        self.registry.notify(self)   # listeners see the websocket class and its fds
        return fds

    async def connect_websocket(self, request, secret):
        if self._websocket_handler is None:
            raise BadRequest('Operation %s has no websockets' % self.id)
        fd_name = self._secrets.pop(secret, None)  # each secret works once
        if fd_name is None or self.done.is_set():
            raise Forbidden('Invalid or already used websocket secret')
        return await self._websocket_handler(request, fd_name)

    def _finish(self, status_code, err=''):
        self.status_code = status_code
        self.err = err
        self.updated_at = now_iso()
        self.done.set()
        self.registry.notify(self)
        self.registry.finished(self)


class OperationRegistry:
    def __init__(self, workers=32, on_change=None, store=None, on_forget=None):
        self._ops = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                           thread_name_prefix='op')
        self._on_change = on_change or (lambda op: None)
        self._on_forget = on_forget or (lambda: None)   # a finished operation's memory is free
        self._store = store

    async def run_blocking(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    def notify(self, op):
        self._on_change(op)

    def start(self, work, description, resources=None, op_class='task', metadata=None,
              may_cancel=False):
        """Create an operation and run `await work(op)` in the background."""
        op = Operation(self, description, resources, op_class, metadata, may_cancel)
        self._ops[op.id] = op
        if self._store:
            self._store.operation_started(op.id, description)
        op.task = asyncio.get_running_loop().create_task(self._run(op, work))
        self.notify(op)
        return op

    async def _run(self, op, work):
        try:
            result = await work(op)
            if result is not None:
                op.metadata = result
            op._finish(SUCCESS)
        except (Cancelled, asyncio.CancelledError):
            op._finish(CANCELLED, 'The operation was cancelled')
        except ApiError as exc:
            op._finish(FAILURE, exc.message)
        except Exception as exc:  # an operation must never die silently
            LOG.exception('Operation %s (%s) failed', op.id, op.description)
            op._finish(FAILURE, str(exc) or exc.__class__.__name__)

    def finished(self, op):
        if self._store:
            self._store.operation_finished(op.id)
        asyncio.get_running_loop().call_later(KEEP_FINISHED, self._forget, op.id)

    def _forget(self, op_id):
        self._ops.pop(op_id, None)
        self._on_forget()

    def get(self, op_id):
        try:
            return self._ops[op_id]
        except KeyError:
            raise NotFound('Operation not found')

    def all(self):
        return list(self._ops.values())

    async def wait(self, op_id, timeout=None):
        op = self.get(op_id)
        if timeout is not None and timeout < 0:
            timeout = None
        try:
            await asyncio.wait_for(asyncio.shield(op.done.wait()), timeout)
        except asyncio.TimeoutError:
            pass
        return op

    def cancel(self, op_id):
        op = self.get(op_id)
        if not op.may_cancel:
            raise BadRequest('This operation can\'t be cancelled')
        if not op.done.is_set():
            op.cancel_requested = True
            op.status_code = CANCELLING
            op.task.cancel()
        return op

    async def shutdown(self):
        for op in list(self._ops.values()):
            if op.task and not op.task.done():
                op.task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
