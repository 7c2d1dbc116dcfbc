"""Pseudo-terminals for interactive exec, made in the container's own devpts (as LXD does).

A pty from the host's /dev/ptmx is not a terminal the container can name: `tty` says "not a
tty" and programs that look their terminal up fail. liblxc mounts a devpts instance of the
container's own at its /dev/pts (lxc.pty.max); a master opened from that instance's ptmx has its
slave there too, so inside the container the command's terminal is /dev/pts/N.

The daemon reaches that devpts through /proc/<init>/root, which walks the container's mount
namespace. The container's root controls those paths, so each component is opened with
O_NOFOLLOW (a symlink can never send the daemon to a host file; absolute symlinks would resolve
against the host's root) and the directory must be a devpts filesystem. The slave comes from the
master itself (TIOCGPTPEER), never from a path lookup.
"""
import ctypes
import fcntl
import logging
import os
import struct
import termios

LOG = logging.getLogger(__name__)

DEVPTS_SUPER_MAGIC = 0x1cd1
TIOCSPTLCK = getattr(termios, 'TIOCSPTLCK', 0x40045431)   # _IOW('T', 0x31, int)
TIOCGPTPEER = getattr(termios, 'TIOCGPTPEER', 0x5441)     # _IO('T', 0x41), Linux >= 4.13
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_libc = ctypes.CDLL(None, use_errno=True)


class NoDevpts(Exception):
    """The container has no devpts of its own at /dev/pts."""


def _fs_type(fd):
    buf = ctypes.create_string_buffer(256)   # struct statfs; f_type is its first field (long)
    if _libc.fstatfs(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return struct.unpack_from('l', buf)[0]


def _open_devpts_dir(init_pid):
    fd = os.open('/proc/%d/root' % init_pid, _DIR & ~os.O_NOFOLLOW)   # a magic link: follow it
    try:
        for name in ('dev', 'pts'):
            nxt = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
        if _fs_type(fd) != DEVPTS_SUPER_MAGIC:
            raise NoDevpts('/dev/pts is not a devpts filesystem')
        return fd
    except OSError as exc:   # ELOOP (a symlink), ENOENT, ENOTDIR: not a usable devpts
        os.close(fd)
        raise NoDevpts('/dev/pts: %s' % exc.strerror)
    except BaseException:
        os.close(fd)
        raise


def _peer(master):
    """The slave of a master, opened through the master's own devpts mount."""
    flags = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC
    return fcntl.ioctl(master, TIOCGPTPEER, flags)


def open_in_container(init_pid, owner):
    """(master, slave) of a new pty in the container's devpts.

    The slave is owned by `owner` (host uid, gid). Raises NoDevpts when the container has none.
    """
    devpts = _open_devpts_dir(init_pid)
    try:
        master = os.open('ptmx', os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=devpts)
    except OSError as exc:
        raise NoDevpts('/dev/pts/ptmx: %s' % exc.strerror)
    finally:
        os.close(devpts)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack('i', 0))   # unlock the slave
        slave = _peer(master)
    except BaseException:
        os.close(master)
        raise
    try:
        os.fchown(slave, *owner)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def open_on_host(owner):
    """The fallback: a pty of the host's devpts (the command's `tty` cannot name it)."""
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    os.set_inheritable(slave, False)
    os.fchown(slave, *owner)
    return master, slave


def set_window_size(fd, width, height):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', height, width, 0, 0))
