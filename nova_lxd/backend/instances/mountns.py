"""Mount injection into a running container's mount namespace (disk/unix device hot-plug).

A bind mount is cloned in the host namespace (open_tree), then a forked child joins the
container's mount namespace (setns needs a single-threaded caller) and moves it into place
(move_mount), as LXD's forkmount does. Paths inside the container are resolved by the kernel
from the container's own root, so they cannot land outside it.
"""
import ctypes
import os
import stat

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT = 428, 429        # x86_64 and aarch64 (generic table)
_AT_FDCWD = -100
_OPEN_TREE_CLONE, _AT_RECURSIVE = 1, 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_REMOUNT, _MS_BIND = 1, 32, 4096
_MNT_DETACH = 2


def _check(ret, what):
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, '%s: %s' % (what, os.strerror(err)))
    return ret


def _in_mount_ns(pid, func):
    """Run func() in a child that joined the mount namespace of `pid`; re-raise its error."""
    ns_fd = os.open('/proc/%d/ns/mnt' % pid, os.O_RDONLY | os.O_CLOEXEC)
    read_end, write_end = os.pipe()
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                os.close(read_end)
                _check(_libc.setns(ns_fd, _CLONE_NEWNS), 'setns')
                os.chdir('/')
                func()
                os._exit(0)
            except BaseException as exc:
                os.write(write_end, str(exc).encode()[:4000])
                os._exit(1)
        os.close(write_end)
        write_end = -1
        message = b''
        while True:
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            message += chunk
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise OSError(message.decode(errors='replace') or 'mount helper failed')
    finally:
        os.close(ns_fd)
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def bind_into(pid, source, target, readonly=False, owner=(0, 0)):
    """Bind host path `source` onto `target` (absolute, inside the container) of a running one."""
    is_dir = os.path.isdir(source)
    tree = _check(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, source.encode(),
                                _OPEN_TREE_CLONE | _AT_RECURSIVE | os.O_CLOEXEC), 'open_tree')

    def move():
        # create the mount point as the container's root: filesystems mounted inside a user
        # namespace (its /dev tmpfs) refuse files owned by ids they cannot map (EOVERFLOW)
        _libc.setfsgid(owner[1])
        _libc.setfsuid(owner[0])
        if is_dir:
            os.makedirs(target, exist_ok=True)
        elif not os.path.exists(target):
            os.makedirs(os.path.dirname(target) or '/', exist_ok=True)
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
        _libc.setfsuid(0)
        _libc.setfsgid(0)
        _check(_libc.syscall(_SYS_MOVE_MOUNT, tree, b'', _AT_FDCWD, target.encode(),
                             _MOVE_MOUNT_F_EMPTY_PATH), 'move_mount')
        if readonly:
            _check(_libc.mount(None, target.encode(), None,
                               _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None), 'remount ro')
    try:
        _in_mount_ns(pid, move)
    finally:
        os.close(tree)


def unmount_from(pid, target, remove_file=False):
    """Detach the mount at `target` inside a running container (idempotent).

    remove_file also deletes the empty placeholder file a device node was bound onto.
    """
    def umount():
        if _libc.umount2(target.encode(), _MNT_DETACH) < 0 and \
                ctypes.get_errno() not in (22, 2):  # EINVAL: not a mount point; ENOENT
            _check(-1, 'umount')
        if remove_file:
            try:
                st = os.lstat(target)
                if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(target)
            except FileNotFoundError:
                pass
    _in_mount_ns(pid, umount)
