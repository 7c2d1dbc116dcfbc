"""An instance's console: its log (liblxc writes it, bounded and rotated once) and the console."""
import os

from nova_lxd.backend.errors import BadRequest, NotFound
from nova_lxd.backend.instances import exec as instance_exec


def clear_log(daemon, name):
    """Blocking: empty the console log in place (liblxc keeps appending to the same file)."""
    if not daemon.instances.exists(name):
        raise NotFound('Instance not found')
    path = daemon.instances.console_log_path(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    rotated = path + '.1'
    if os.path.lexists(rotated):
        os.unlink(rotated)


# -- the interactive console (POST /1.0/instances/{name}/console) -------------------------------

class ConsoleSession(instance_exec.ExecSession):
    """The container's console (tty 0) on websocket "0", through liblxc's own lxc-console.

    lxc-console runs on a pty of ours in its own session: the monitor frees the console as soon
    as it exits, and a client going away kills it like any exec command. Window sizes from the
    control socket reach the console through it (SIGWINCH).
    """

    terminal_in_container = False   # lxc-console runs on the host

    async def _spawn(self, op, stdin, stdout, stderr, tty=False):
        container = self.daemon.instances.container(self.name)
        argv = ['lxc-console', '-q', '-P', container.get_config_path(), '-n', self.name,
                '-t', '0']
        actions = [(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
                   (os.POSIX_SPAWN_DUP2, stderr, 2)]
        pid = os.posix_spawnp(argv[0], argv, {'PATH': os.environ.get('PATH', '/usr/bin:/bin')},
                              file_actions=actions, setsid=True)
        self.process = instance_exec.Process(pid)

    def _tty_owner(self):
        return 0, 0   # lxc-console runs on the host, as root


async def start(daemon, name, body):
    """Validate a console request and start its websocket operation."""
    kind = body.get('type', 'console')
    if kind != 'console':
        raise BadRequest('Only the "console" type exists for containers, not %r' % (kind,))
    if not daemon.instances.exists(name):
        raise NotFound('Instance not found')
    if not daemon.instances.is_running(name):
        raise BadRequest('Instance is not running')
    req = instance_exec.ExecRequest({
        'command': ['lxc-console'], 'interactive': True, 'wait-for-websocket': True,
        'width': body.get('width') or 0, 'height': body.get('height') or 0})
    session = ConsoleSession(daemon, name, req)
    op = daemon.operations.start(session.run, 'Showing console',
                                 {'instances': ['/1.0/instances/%s' % name]})
    op.add_websockets(req.fd_names, session.connect)
    return op
