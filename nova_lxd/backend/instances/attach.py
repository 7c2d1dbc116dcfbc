"""Commands started in a container by a helper process, never by liblxc attach in the daemon.

Why: liblxc attach clone()s its caller. Called from the daemon (many threads), the child can
inherit a lock another thread held at that instant (a malloc arena, ...) and hang, while the
daemon thread waiting for it keeps the GIL: the whole daemon froze once. The helper is a fresh
interpreter (started by exec, so it has a single thread). It forks one child per command; that
child attaches (liblxc: every namespace, cgroup, the idmap), reports the command's pid, waits for
it and reports how it ended. The daemon keeps only a pidfd (signals) and the reply socket.

Protocol, all over SOCK_SEQPACKET sockets:
- daemon -> helper (one socket for the helper's life): a JSON spec of the command plus four fds:
  the command's stdin, stdout and stderr, and the daemon's end of a fresh reply socketpair.
- helper's child -> daemon, on the reply socket: b'pid N' with a pidfd of the command (or
  b'error ERRNO'), later b'exit N' (N as LXD reports it: the exit code, 128 + signal number
  when killed). The child reaps the command as soon as it exits, then waits for the daemon to
  close the socket. daemon -> child: b'kill' (the command's whole process group; closing the
  socket does the same). Single signals go through the daemon's pidfd.
The helper ends when the daemon's socket closes, or with the daemon (PR_SET_PDEATHSIG).
"""
import asyncio
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import termios
import threading

LOG = logging.getLogger(__name__)

EXIT_NOT_FOUND = 127
MAX_SPEC = 2 << 20   # a command line and environment (Linux's ARG_MAX is 2 MiB too)
SO_SNDBUFFORCE = getattr(socket, 'SO_SNDBUFFORCE', 32)
PR_SET_PDEATHSIG = 1


# -- inside the container: the attached process (liblxc's forked child) ------------------------

def _attached_main(spec):
    """Runs inside the container before the command: no logging, no imports here."""
    argv, env, tty = spec
    for sig in signal.valid_signals():   # ignored signals survive exec: none may be inherited
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (ValueError, OSError):
            pass   # SIGKILL, SIGSTOP
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        if os.getsid(0) != os.getpid():
            os.setsid()   # its own process group: a vanished client's command dies whole
        if tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)   # job control, Ctrl-C, SIGWINCH
        os.execvpe(argv[0], argv, dict(item.split('=', 1) for item in env))
    except OSError as exc:
        os.write(2, ('exec %s: %s\n' % (argv[0], exc.strerror)).encode())
    return EXIT_NOT_FOUND


# -- the helper process ------------------------------------------------------------------------

def _exit_code(pid):
    """Reap the command: its exit code, or LXD's 128 + signal number."""
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return 128 - code if code < 0 else code


def _run_command(spec, stdin, stdout, stderr, reply):
    """In the helper's per-command child: attach, report, wait, report, reap."""
    import lxc
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)   # the helper auto-reaps; we must wait
    container = lxc.Container(spec['name'], spec['lxcpath'])
    pid = container.attach(
        _attached_main, (spec['argv'], spec['env'], spec['tty']),
        uid=spec['uid'], gid=spec['gid'], initial_cwd=spec['cwd'],
        stdin=stdin, stdout=stdout, stderr=stderr,
        env_policy=lxc.LXC_ATTACH_CLEAR_ENV, extra_env_vars=spec['env'])
    for fd in (stdin, stdout, stderr):
        os.close(fd)   # the command holds them now: EOF reaches the daemon when it exits
    if pid <= 0:
        reply.send(b'error %d' % (-pid if pid < 0 else errno.EIO))
        return
    pidfd = os.pidfd_open(pid)   # before it can be reaped: the daemon gets this very process
    socket.send_fds(reply, [b'pid %d' % pid], [pidfd])
    code = _supervise(pid, pidfd, reply)
    try:
        reply.send(b'exit %d' % code)
        while reply.recv(16):   # until the daemon is done: closing on an unread message of
            pass                # its would reset the socket and lose the exit code
    except OSError:
        pass   # the daemon is gone


def _supervise(pid, pidfd, reply):
    """Until the command exits; then reap it at once and return its LXD exit code.

    Reaping never waits for the daemon: a container's init cannot finish exiting while a
    zombie of its pid namespace is unreaped, and the daemon may be blocked in that very stop.
    The process group is killed here, on b'kill' from the daemon or when the daemon closes the
    socket (cancelled, gone: no command outlives its session), only while the command is
    unreaped: its pid, hence its group id, cannot have been reused.
    """
    watched = [pidfd, reply]
    while True:
        ready = select.select(watched, [], [])[0]
        if reply in ready:   # first, even when the command exited too: its group may not have
            try:
                msg = reply.recv(16)
            except OSError:
                msg = b''
            if not msg:
                watched = [pidfd]
            if msg in (b'', b'kill'):
                _kill_group(pid, pidfd)
        elif pidfd in ready:
            return _exit_code(pid)


def _kill_group(pid, pidfd):
    for kill in (lambda: os.killpg(pid, signal.SIGKILL),
                 lambda: signal.pidfd_send_signal(pidfd, signal.SIGKILL)):
        try:
            kill()
        except ProcessLookupError:
            pass


def serve(sock):
    """The helper's loop: one forked child per command; ends when the daemon goes."""
    import lxc  # noqa: F401  (loaded once here, inherited by every child)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # children are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # a Ctrl-C on the daemon's terminal
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_SPEC, 4)
        except InterruptedError:
            continue
        if not data:
            return
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            status = 0
            try:
                sock.close()
                for fd in fds:   # never inherited by the command beyond its stdio
                    os.set_inheritable(fd, False)
                reply = socket.socket(fileno=fds[3])
                _run_command(json.loads(data), fds[0], fds[1], fds[2], reply)
            except BaseException:   # noqa: B902 - a child never returns to the loop
                import traceback
                traceback.print_exc()
                status = 1
            finally:
                os._exit(status)
        for fd in fds:
            os.close(fd)


def _die_with_parent():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main():
    fd = int(sys.argv[1])
    parent = int(sys.argv[2])
    _die_with_parent()
    if os.getppid() != parent:   # the daemon died before the prctl
        return
    serve(socket.socket(fileno=fd))


# -- the daemon's side -------------------------------------------------------------------------

class AttachError(Exception):
    """liblxc could not start the command (the errno it gave)."""

    def __init__(self, err):
        super().__init__(os.strerror(err))
        self.errno = err


class AttachedProcess:
    """A command started by the helper: signals through a pidfd, its end from the helper."""

    def __init__(self, pid, pidfd, reply):
        self.pid = pid
        self.returncode = None
        self._killed = False
        self._reply = reply
        self._pidfd = pidfd   # opened by the helper before reaping: always this very process

    async def wait(self):
        if self.returncode is None:
            try:
                msg = await asyncio.get_running_loop().sock_recv(self._reply, 64)
            except ConnectionError:
                msg = b''
            if msg.startswith(b'exit '):
                self.returncode = int(msg.split()[1])
            else:   # the helper's child died: the command may live on; end it
                LOG.error('exec helper lost the command %d; killing it', self.pid)
                self.kill_group()
                self.returncode = 128 + signal.SIGKILL
        return self.returncode

    def send_signal(self, sig):
        if self.returncode is None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def kill_group(self):
        """SIGKILL the command and everything in its process group.

        The helper kills the group: only it knows the command is unreaped, so that the group
        id is still the command's.
        """
        if self.returncode is None and not self._killed:
            self._killed = True
            try:
                self._reply.send(b'kill')
            except OSError:   # the helper's child is gone: the command at least
                self.send_signal(signal.SIGKILL)

    def close(self):
        """Done with the command (the helper kills it if it still runs)."""
        if self._reply is not None:
            self._reply.close()
            os.close(self._pidfd)
            self._reply = None


async def _recv_with_fds(sock):
    loop = asyncio.get_running_loop()
    while True:
        try:
            return socket.recv_fds(sock, 64, 1)[:2]
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_reader(sock.fileno())


class Attacher:
    """The daemon's handle on the helper process, started on first use (one per daemon process)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc = None
        self._sock = None

    def _start(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [top] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, '-m', __name__, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True, env=env)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 2 * MAX_SPEC)   # one spec: one message
        self._sock = ours

    def _send(self, payload, fds):
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                if self._sock is not None:
                    self._sock.close()
                self._start()
            socket.send_fds(self._sock, [payload], fds)

    async def spawn(self, lxcpath, name, argv, env, uid, gid, cwd, stdin, stdout, stderr,
                    tty=False):
        """Start argv in the container; returns an AttachedProcess (raises AttachError)."""
        payload = json.dumps({'lxcpath': lxcpath, 'name': name, 'argv': argv, 'env': env,
                              'uid': uid, 'gid': gid, 'cwd': cwd, 'tty': tty}).encode()
        if len(payload) > MAX_SPEC:
            raise AttachError(errno.E2BIG)
        reply, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                self._send(payload, [stdin, stdout, stderr, theirs.fileno()])
            except (BrokenPipeError, ConnectionError):   # the helper died: once more, anew
                with self._lock:
                    self._proc = None
                self._send(payload, [stdin, stdout, stderr, theirs.fileno()])
        except BaseException:
            reply.close()
            raise
        finally:
            theirs.close()
        reply.setblocking(False)
        try:
            msg, fds = await _recv_with_fds(reply)
            kind, _, value = msg.partition(b' ')
            for fd in fds:
                os.set_inheritable(fd, False)
            if kind == b'pid' and len(fds) == 1:
                return AttachedProcess(int(value), fds[0], reply)
            for fd in fds:
                os.close(fd)
            raise AttachError(int(value) if kind == b'error' else errno.EIO)
        except BaseException:
            reply.close()   # the helper's child kills (or never started) the command
            raise


ATTACHER = Attacher()


if __name__ == '__main__':
    main()
