"""Commands inside a running instance: POST /1.0/instances/{name}/exec, LXD's exec protocol.

The command runs through liblxc attach (all of the instance's namespaces and cgroups, as the
container's own uid, mapped to the host by the instance's idmap), started by a helper process
(attach.py: never attach from the daemon's own threads). Its stdio is either a set of pipes
mirrored to websockets "0", "1", "2" with a "control" socket (non-interactive), a pty of the
container's own devpts mirrored to websocket "0" plus "control" (interactive; terminal.py), or
/dev/null and optional log files (`wait-for-websocket: false`).

Everything a session opens (pipes, pty, pidfd, websockets, tasks) is owned by one ExecSession
and released in one place, whatever way the session ends: the command exits, a client
disappears mid-stream (the command's process group is killed), or the sockets never connect.
"""
import asyncio
import errno
import json
import logging
import os
import signal

from aiohttp import WSMsgType, web

from nova_lxd.backend.errors import BadRequest, NotFound
from nova_lxd.backend.instances import attach
from nova_lxd.backend.instances import terminal

LOG = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0   # LXD gives clients a few seconds to connect every socket
DRAIN_TIMEOUT = 2.0      # output still flowing after the command exited (background children)
CHUNK = 128 * 1024
DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


class ExecRequest:
    """A validated exec request body."""

    def __init__(self, body):
        command = body.get('command')
        if not isinstance(command, list) or not command or \
                not all(isinstance(arg, str) for arg in command):
            raise BadRequest('"command" must be a non-empty list of strings')
        self.command = command
        env = body.get('environment') or {}
        if not isinstance(env, dict) or \
                not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise BadRequest('"environment" must map strings to strings')
        self.environment = env
        size = sum(len(arg) + 1 for arg in command) + \
            sum(len(k) + len(v) + 2 for k, v in env.items())
        if size > attach.MAX_SPEC // 2:   # the kernel's execve limit is of the same order
            raise BadRequest('"command" and "environment" are too long together (%d bytes, at '
                             'most %d)' % (size, attach.MAX_SPEC // 2))
        self.interactive = bool(body.get('interactive', False))
        self.wait_for_websocket = bool(body.get('wait-for-websocket', False))
        self.record_output = bool(body.get('record-output', False))
        self.user = self._id(body, 'user')
        self.group = self._id(body, 'group')
        self.cwd = body.get('cwd') or None
        if self.cwd is not None and (not isinstance(self.cwd, str) or not self.cwd.startswith('/')):
            raise BadRequest('"cwd" must be an absolute path')
        self.width = self._id(body, 'width') or 80
        self.height = self._id(body, 'height') or 25

    @staticmethod
    def _id(body, key):
        value = body.get(key)
        if value in (None, ''):
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadRequest('"%s" must be a non-negative integer' % key)
        return value

    @property
    def fd_names(self):
        if not self.wait_for_websocket:
            return ()
        return ('0', 'control') if self.interactive else ('0', '1', '2', 'control')

    def env_list(self, instance_config):
        """The command's whole environment (liblxc clears the host's)."""
        env = {'PATH': DEFAULT_PATH, 'LANG': 'C.UTF-8'}
        if self.user == 0:
            env.update(HOME='/root', USER='root')
        if self.interactive:
            env['TERM'] = 'xterm'
        for key, value in instance_config.items():   # environment.* instance config keys
            if key.startswith('environment.'):
                env[key[len('environment.'):]] = value
        env.update(self.environment)
        return ['%s=%s' % item for item in env.items()]


class Process:
    """A command the daemon started itself on the host (the console's lxc-console).

    Its own child, watched through a pidfd (no pid reuse races, no blocking waits).
    """

    def __init__(self, pid):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.returncode = None

    async def wait(self):
        if self.returncode is None:
            await _readable(self.pidfd)
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
            self.returncode = 128 - code if code < 0 else code   # LXD: 128 + signal number
        return self.returncode

    def send_signal(self, sig):
        if self.returncode is None:
            signal.pidfd_send_signal(self.pidfd, sig)

    def kill_group(self):
        """SIGKILL the command and everything it started in its group (unreaped: pgid valid)."""
        if self.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.send_signal(signal.SIGKILL)

    def close(self):
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


# -- non-blocking fd I/O on the event loop ----------------------------------------------------

async def _readable(fd):
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _writable(fd):
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def read_fd(fd):
    """Up to CHUNK bytes; b'' at end of file (EIO: a pty whose other side is gone)."""
    while True:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            await _readable(fd)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b''
            raise


async def write_fd(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await _writable(fd)


def _set_nonblocking(fd):
    os.set_blocking(fd, False)
    return fd


# -- a session -------------------------------------------------------------------------------

class ExecSession:
    """One exec request, from the POST to the last byte of output."""

    terminal_in_container = True   # False: a host pty, for a command that runs on the host

    def __init__(self, daemon, name, req):
        self.daemon = daemon
        self.name = name
        self.req = req
        self.sockets = {}
        self.process = None
        self.vanished = False
        self._fds = set()
        self._all_connected = asyncio.Event()
        self._control_connected = asyncio.Event()
        self._finished = asyncio.Event()

    # -- websockets, served for the operation (GET /1.0/operations/{id}/websocket) -----------
    async def connect(self, request, fd_name):
        ws = web.WebSocketResponse(max_msg_size=0, timeout=2.0)
        await ws.prepare(request)
        self.sockets[fd_name] = ws
        if fd_name == 'control':
            self._control_connected.set()
        if set(self.req.fd_names) - set(self.sockets) <= {'control'}:
            self._all_connected.set()   # control is optional (pylxd never opens it)
        await self._finished.wait()   # the session reads and writes it until the command ends
        try:
            await ws.close()   # here, so the operation never waits for a client's close reply
        except Exception:   # the peer may be gone already
            pass
        return ws

    # -- the operation's work ----------------------------------------------------------------
    async def run(self, op):
        try:
            if self.req.wait_for_websocket:
                try:
                    await asyncio.wait_for(self._all_connected.wait(), CONNECT_TIMEOUT)
                except asyncio.TimeoutError:
                    raise BadRequest('Timed out waiting for the exec websockets to connect')
                if self.req.interactive:
                    code = await self._run_interactive(op)
                else:
                    code = await self._run_piped(op)
                return dict(op.metadata or {}, **{'return': code})
            return await self._run_detached(op)
        finally:
            if self.process is not None:
                if self.process.returncode is None:
                    self.process.kill_group()   # cancelled, failed: never leave it behind
                    await self.process.wait()
                self.process.close()
            for fd in list(self._fds):
                self._close(fd)
            self._finished.set()

    def _own(self, *fds):
        self._fds.update(fds)
        return fds

    def _close(self, fd):
        if fd in self._fds:
            self._fds.discard(fd)
            os.close(fd)

    async def _spawn(self, op, stdin, stdout, stderr, tty=False):
        instances = self.daemon.instances
        env = self.req.env_list(instances.get(self.name).get('expanded_config') or {})
        cwd = self.req.cwd or self._default_cwd()
        try:
            self.process = await attach.ATTACHER.spawn(
                instances.lxcpath, self.name, self.req.command, env, self.req.user,
                self.req.group, cwd, stdin, stdout, stderr, tty)
        except attach.AttachError as exc:
            raise BadRequest('Failed to run the command in the instance (liblxc attach: %s)'
                             % exc)

    def _default_cwd(self):
        root_home = os.path.join(self.daemon.instances.rootfs(self.name), 'root')
        return '/root' if self.req.user == 0 and os.path.isdir(root_home) else '/'

    async def _run_piped(self, op):
        stdin_r, stdin_w = self._own(*os.pipe())
        out_r, out_w = self._own(*os.pipe())
        err_r, err_w = self._own(*os.pipe())
        await self._spawn(op, stdin_r, out_w, err_w)
        for fd in (stdin_r, out_w, err_w):   # the command holds its ends now
            self._close(fd)
        for fd in (stdin_w, out_r, err_r):
            _set_nonblocking(fd)
        s = self.sockets
        outputs = [asyncio.ensure_future(self._pump_out(out_r, s['1'])),
                   asyncio.ensure_future(self._pump_out(err_r, s['2']))]
        helpers = [asyncio.ensure_future(self._pump_stdin(stdin_w, s['0'])),
                   asyncio.ensure_future(self._control()),
                   asyncio.ensure_future(self._watch_closed(s['1'])),
                   asyncio.ensure_future(self._watch_closed(s['2']))]
        return await self._finish(outputs, helpers)

    async def _run_interactive(self, op):
        master, slave = self._own(*await self._open_terminal(op))
        terminal.set_window_size(master, self.req.width, self.req.height)
        await self._spawn(op, slave, slave, slave, tty=True)
        self._close(slave)
        _set_nonblocking(master)
        ws = self.sockets['0']
        outputs = [asyncio.ensure_future(self._pump_out(master, ws))]
        helpers = [asyncio.ensure_future(self._pump_tty_in(master, ws)),
                   asyncio.ensure_future(self._control(master))]
        return await self._finish(outputs, helpers)

    async def _run_detached(self, op):
        null = self._own(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))[0]
        out = err = null
        metadata = {}
        if self.req.record_output:
            logs = ExecLogs(self.daemon, self.name)
            out_path, err_path = logs.new_pair(op.id)
            out = self._own(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))[0]
            err = self._own(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))[0]
            metadata['output'] = {'1': logs.url(out_path), '2': logs.url(err_path)}
        await self._spawn(op, null, out, err)
        for fd in list(self._fds):
            self._close(fd)
        metadata['return'] = await self.process.wait()
        return metadata

    async def _finish(self, outputs, helpers):
        """Wait for the command; then for its output to drain; then stop every helper."""
        exited = asyncio.ensure_future(self.process.wait())
        try:
            await exited
            done, pending = await asyncio.wait(outputs, timeout=DRAIN_TIMEOUT)
        finally:
            exited.cancel()
            for task in outputs + helpers:
                task.cancel()
            await asyncio.gather(*outputs, *helpers, return_exceptions=True)
        return self.process.returncode

    def _client_gone(self):
        if self.process is not None and self.process.returncode is None:
            LOG.info('exec in %s: a client went away mid-stream; killing the command', self.name)
            self.vanished = True
            self.process.kill_group()

    # -- pumps -------------------------------------------------------------------------------
    async def _pump_out(self, fd, ws):
        while True:
            data = await read_fd(fd)
            if not data:
                return
            try:
                await ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                self._client_gone()
                return

    async def _pump_stdin(self, fd, ws):
        """Client -> command's stdin; a text message, a close or a lost socket is EOF."""
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    break
                await write_fd(fd, msg.data)
        except (BrokenPipeError, ConnectionError):
            pass   # the command closed its stdin or exited: stop reading input
        finally:
            self._close(fd)

    async def _pump_tty_in(self, fd, ws):
        """Client -> terminal; the terminal's socket closing means the user is gone."""
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await write_fd(fd, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await write_fd(fd, msg.data.encode())
                else:
                    break
        except OSError:
            return
        self._client_gone()

    async def _watch_closed(self, ws):
        """An output socket only receives its close: before the command ends it means gone."""
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
        self._client_gone()

    async def _control(self, tty=None):
        """Signals and window sizes; the control socket closing early means the client left.

        It may connect after the command started (or never: pylxd does not open it).
        """
        await self._control_connected.wait()
        ws = self.sockets['control']
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                command = json.loads(msg.data)
                self._control_command(command, tty)
            except (ValueError, TypeError, KeyError, OSError) as exc:
                LOG.debug('exec in %s: ignoring control message %r: %s', self.name, msg.data, exc)
        self._client_gone()

    def _control_command(self, command, tty):
        kind = command.get('command')
        if kind == 'window-resize' and tty is not None:
            args = command.get('args') or {}
            terminal.set_window_size(tty, int(args.get('width', 80)),
                                     int(args.get('height', 25)))
        elif kind == 'signal':
            self.process.send_signal(int(command['signal']))

    async def _open_terminal(self, op):
        """A pty in the container's devpts, owned by its root (as in LXD); the host's if the
        container has no devpts of its own."""
        owner = self._tty_owner()
        if not self.terminal_in_container:
            return terminal.open_on_host(owner)
        init_pid = await op.run_blocking(self.daemon.instances.init_pid, self.name)
        if init_pid is None:
            raise BadRequest('Instance is not running')
        try:
            return terminal.open_in_container(init_pid, owner)
        except terminal.NoDevpts as exc:
            LOG.warning('exec in %s: no devpts of its own (%s); using a host pty',
                        self.name, exc)
            return terminal.open_on_host(owner)

    def _tty_owner(self):
        """The container's root owns the command's terminal, as in LXD."""
        return self._host_root_ids()

    def _host_root_ids(self):
        uid = gid = 0
        for kind, ns_id, host_id, _count in self.daemon.instances.idmap(self.name):
            if ns_id == 0 and kind == 'u':
                uid = host_id
            elif ns_id == 0 and kind == 'g':
                gid = host_id
        return uid, gid


async def start(daemon, name, body):
    """Validate an exec request and start its operation (the API handler's one call)."""
    req = ExecRequest(body)
    if not daemon.instances.exists(name):
        raise NotFound('Instance not found')
    if not daemon.instances.is_running(name):
        raise BadRequest('Instance is not running')
    session = ExecSession(daemon, name, req)
    op = daemon.operations.start(session.run, 'Executing command',
                                 {'instances': ['/1.0/instances/%s' % name]})
    if req.fd_names:
        op.add_websockets(req.fd_names, session.connect)
    return op


# -- recorded output (record-output): files in the instance's log directory -----------------

class ExecLogs:
    """exec_<operation>.stdout/.stderr beside the console log; the logs API serves them."""

    def __init__(self, daemon, name):
        self.name = name
        self.dir = os.path.dirname(daemon.instances.console_log_path(name))

    def new_pair(self, op_id):
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        base = os.path.join(self.dir, 'exec_%s' % op_id)
        return base + '.stdout', base + '.stderr'

    def url(self, path):
        return '/1.0/instances/%s/logs/%s' % (self.name, os.path.basename(path))
