"""The API's listening sockets: bound here, or inherited from the daemon's previous image.

When the daemon executes itself again (recycle.py) it hands its listening sockets to the new
image as open file descriptors, named in LISTEN_ENV ("unix=5,https=6@10.0.0.1:8443"). A client
that connects meanwhile waits in the socket's backlog instead of being refused, and the unix
socket keeps its file, owner and mode.
"""
import grp
import os
import socket

LISTEN_ENV = 'NOVA_LXD_LISTEN_FDS'

_inherited = None


def _take_inherited():
    """{name: (socket, address)} handed over by the previous image; read once, env cleared."""
    global _inherited
    if _inherited is None:
        _inherited = {}
        for item in filter(None, os.environ.pop(LISTEN_ENV, '').split(',')):
            name, _, rest = item.partition('=')
            fd, _, address = rest.partition('@')
            sock = socket.socket(fileno=int(fd))
            sock.set_inheritable(False)          # children never see it
            _inherited[name] = (sock, address)
    return _inherited


def inherited(name, address=''):
    """The socket the previous image listened on as `name` (at `address`), or None."""
    entry = _take_inherited().pop(name, None)
    if entry is None:
        return None
    if entry[1] != address:       # the config changed meanwhile: not the socket wanted
        entry[0].close()
        return None
    return entry[0]


def close_unused():
    """Close what was handed over and not taken (an HTTPS address no longer configured)."""
    for sock, _ in _take_inherited().values():
        sock.close()
    _inherited.clear()


def unix(path, group='', mode=0o660):
    """The API's unix socket at `path`: inherited, else bound (stale file removed)."""
    sock = inherited('unix', path)
    if sock is not None:
        return sock
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        gid = grp.getgrnam(group).gr_gid if group else 0
        os.chown(path, 0, gid)
        os.chmod(path, mode)
    except BaseException:
        sock.close()
        raise
    return sock


def tcp(address):
    """A listening TCP socket for 'IP:PORT' ('[::]:PORT', ':PORT' for every address)."""
    sock = inherited('https', address)
    if sock is not None:
        return sock
    host, _, port = address.rpartition(':')
    host = host.strip('[]')
    if host:
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        return socket.create_server((host, int(port)), family=family)
    if socket.has_dualstack_ipv6():
        return socket.create_server(('', int(port)), family=socket.AF_INET6,
                                    dualstack_ipv6=True)
    return socket.create_server(('', int(port)))


def handover(named):
    """The LISTEN_ENV value handing {name: (socket, address)} to the next image.

    Each socket is duplicated as inheritable: the originals may be closed by their servers.
    """
    items = []
    for name, (sock, address) in named.items():
        fd = os.dup(sock.fileno())
        os.set_inheritable(fd, True)
        items.append('%s=%d@%s' % (name, fd, address))
    return ','.join(items)


def _remove_stale_socket(path):
    """Refuse to start twice on one data directory; clean up after a crash."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise SystemExit('Another daemon is already serving %s' % path)
