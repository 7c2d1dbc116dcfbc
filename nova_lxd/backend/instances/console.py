"""The console log of an instance: liblxc writes it (bounded by lxc.console.size, rotated once)."""
import os

from nova_lxd.backend.errors import NotFound


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
