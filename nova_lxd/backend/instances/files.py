"""Files of an instance (GET/POST/DELETE /1.0/instances/{name}/files?path=), never outside it.

Every path is resolved by the kernel with openat2(RESOLVE_IN_ROOT) against a directory fd of the
instance's root: `..`, absolute symlinks and symlinked parents resolve as they would inside the
container (as in a chroot), atomically, so a container swapping a directory for a symlink between
two calls cannot steer the daemon out of its rootfs. The last component is then handled with
*at() calls on the parent's fd (no following), or reopened through /proc/self/fd after checking
its type on an O_PATH fd (nothing is opened for I/O before we know it is a regular file).

A running instance is reached through /proc/<init pid>/root, so its own mounts (tmpfs ...) are
what the API sees, as with LXD; a stopped one through its rootfs directory. Ownership goes
through the instance's idmap: the API shows container ids, the disk holds host ids.
"""
import contextlib
import ctypes
import errno
import os
import stat

from nova_lxd.backend.errors import BadRequest, Conflict, NotFound
from nova_lxd.backend.instances import idmap as idmaps

SYS_OPENAT2 = 437   # x86_64 and aarch64 (the generic syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
CHUNK = 1 << 20
WRITE_MODES = ('overwrite', 'append')
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
OVERFLOW_ID = 65534   # how the kernel shows an id outside the map

_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [('flags', ctypes.c_uint64), ('mode', ctypes.c_uint64),
                ('resolve', ctypes.c_uint64)]


def openat2(dirfd, path, flags, mode=0, resolve=RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS):
    """openat2(2); EAGAIN (a rename raced the lookup) is retried as the man page advises."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    encoded = os.fsencode(path)
    for _ in range(64):
        fd = _libc.syscall(SYS_OPENAT2, dirfd, encoded, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, 'path lookup kept racing with renames', path)


def _check_path(path):
    """Paths are from the instance's root; `lxc file pull` sends them without the leading /."""
    if not path:
        raise BadRequest('An empty path names no file')
    if '\0' in path:
        raise BadRequest('The path contains a NUL byte')
    return path if path.startswith('/') else '/' + path


def _split(path):
    parent, _, base = _check_path(path).rstrip('/').rpartition('/')
    if base in ('', '.', '..'):
        raise BadRequest('%r does not name a file' % path)
    return parent or '/', base


def _errors(exc, path):
    if exc.errno == errno.ENOENT:
        return NotFound('%s: not found in the instance' % path)
    if exc.errno == errno.ENOTDIR:
        return BadRequest('%s: a parent is not a directory' % path)
    if exc.errno == errno.ELOOP:
        return BadRequest('%s: too many levels of symbolic links' % path)
    return BadRequest('%s: %s' % (path, exc.strerror))


class FileInfo:
    def __init__(self, kind, uid, gid, mode):
        self.kind, self.uid, self.gid, self.mode = kind, uid, gid, mode

    def headers(self):
        return {'X-LXD-type': self.kind, 'X-LXD-uid': str(self.uid),
                'X-LXD-gid': str(self.gid), 'X-LXD-mode': '%04o' % self.mode}


class InstanceFiles:
    """File access for one instance; use as a context manager (holds the root dir fd)."""

    def __init__(self, daemon, name):
        instances = daemon.instances
        if not instances.exists(name):
            raise NotFound('Instance not found')
        self.idmap = instances.idmap(name)
        pid = instances.init_pid(name) if instances.is_running(name) else None
        root = '/proc/%d/root' % pid if pid else instances.rootfs(name)
        try:
            self.root = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise BadRequest('The instance\'s filesystem is not reachable: %s' % exc.strerror)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.root)

    # -- ids ---------------------------------------------------------------------------------
    def _to_container(self, kind, host_id):
        ns_id = idmaps.to_ns(self.idmap, kind, host_id)
        return OVERFLOW_ID if ns_id is None else ns_id

    def _to_host(self, kind, ns_id):
        host_id = idmaps.to_host(self.idmap, kind, ns_id)
        if host_id is None:
            raise BadRequest('%sid %d is not mapped in this instance' % (kind, ns_id))
        return host_id

    def _info(self, st, kind):
        return FileInfo(kind, self._to_container('u', st.st_uid),
                        self._to_container('g', st.st_gid), stat.S_IMODE(st.st_mode))

    # -- lookups -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _opened(self, path, flags):
        try:
            fd = openat2(self.root, path, flags)
        except OSError as exc:
            raise _errors(exc, path)
        try:
            yield fd
        finally:
            os.close(fd)

    def _parent(self, path):
        parent, base = _split(path)
        return self._opened(parent, os.O_PATH | os.O_DIRECTORY), base

    def read(self, path):
        """(FileInfo, payload): an open fd (file), a list of names (directory) or a target.

        The caller closes a returned fd. The last component is not followed if it is a symlink.
        """
        with self._opened(_check_path(path), os.O_PATH | os.O_NOFOLLOW) as fd:
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                return self._info(st, 'symlink'), os.readlink('', dir_fd=fd)
            if stat.S_ISDIR(st.st_mode):
                with self._reopen(fd, os.O_RDONLY | os.O_DIRECTORY) as dfd:
                    names = sorted(os.listdir(dfd))
                return self._info(st, 'directory'), names
            if not stat.S_ISREG(st.st_mode):
                raise BadRequest('%s is not a regular file, directory or symlink' % path)
            return self._info(st, 'file'), self._reopen_fd(fd, os.O_RDONLY)

    @staticmethod
    def _reopen_fd(path_fd, flags):
        """Open an O_PATH fd for I/O: the same inode, no second path lookup."""
        return os.open('/proc/self/fd/%d' % path_fd, flags | os.O_CLOEXEC)

    @contextlib.contextmanager
    def _reopen(self, path_fd, flags):
        fd = self._reopen_fd(path_fd, flags)
        try:
            yield fd
        finally:
            os.close(fd)

    # -- writes ------------------------------------------------------------------------------
    def open_for_write(self, path, uid=None, gid=None, mode=None, append=False):
        """(fd, created, undo) for a push; symlinks on the way resolve inside the instance.

        `undo()` removes a file this call created (a push that failed half-way).
        """
        try:
            existing = openat2(self.root, _check_path(path), os.O_PATH)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise _errors(exc, path)
            return self._create_file(path, uid, gid, mode)
        try:
            st = os.fstat(existing)
            if not stat.S_ISREG(st.st_mode):
                raise BadRequest('%s exists and is not a regular file' % path)
            fd = self._reopen_fd(existing, os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
        finally:
            os.close(existing)
        self._set_owner_mode(fd, uid, gid, mode)
        return fd, False, lambda: None

    def _create_file(self, path, uid, gid, mode):
        opened, base = self._parent(path)
        with opened as parent:
            try:
                fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o600, dir_fd=parent)
            except FileExistsError:   # a dangling symlink: its target does not exist
                raise BadRequest('%s is a symlink to a missing file' % path)
            except OSError as exc:
                raise _errors(exc, path)
            parent_copy = os.dup(parent)
        try:
            self._set_owner_mode(fd, 0 if uid is None else uid, 0 if gid is None else gid,
                                 DEFAULT_FILE_MODE if mode is None else mode)
        except BaseException:
            os.close(fd)
            self._unlink_and_close(parent_copy, base)
            raise

        def undo():
            self._unlink_and_close(parent_copy, base)
        return fd, True, undo

    @staticmethod
    def _unlink_and_close(parent, base):
        try:
            os.unlink(base, dir_fd=parent)
        except OSError:
            pass
        finally:
            os.close(parent)

    def _set_owner_mode(self, fd, uid, gid, mode):
        if uid is not None or gid is not None:
            st = os.fstat(fd)
            os.fchown(fd, st.st_uid if uid is None else self._to_host('u', uid),
                      st.st_gid if gid is None else self._to_host('g', gid))
        if mode is not None:   # after chown, which clears setuid/setgid
            os.fchmod(fd, mode)

    def mkdir(self, path, uid=None, gid=None, mode=None):
        """Create a directory; an existing one is accepted (its ownership/mode updated)."""
        opened, base = self._parent(path)
        with opened as parent:
            created = True
            try:
                os.mkdir(base, 0o700, dir_fd=parent)
            except FileExistsError:
                created = False
            except OSError as exc:
                raise _errors(exc, path)
            try:
                fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=parent)
            except OSError:
                raise Conflict('%s exists and is not a directory' % path)
            try:
                if created:
                    uid, gid = uid or 0, gid or 0
                    mode = DEFAULT_DIR_MODE if mode is None else mode
                self._set_owner_mode(fd, uid, gid, mode)
            except BaseException:
                if created:
                    os.rmdir(base, dir_fd=parent)
                raise
            finally:
                os.close(fd)

    def symlink(self, path, target, uid=None, gid=None):
        """Create (or replace) a symlink; its target is stored as given, never followed here."""
        if not target or '\0' in target:
            raise BadRequest('A symlink needs a target')
        opened, base = self._parent(path)
        with opened as parent:
            try:
                existing = os.stat(base, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None:
                if not stat.S_ISLNK(existing.st_mode):
                    raise Conflict('%s exists and is not a symlink' % path)
                os.unlink(base, dir_fd=parent)
            os.symlink(target, base, dir_fd=parent)
            os.chown(base, self._to_host('u', uid or 0), self._to_host('g', gid or 0),
                     dir_fd=parent, follow_symlinks=False)

    def delete(self, path):
        opened, base = self._parent(path)
        with opened as parent:
            try:
                st = os.stat(base, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(base, dir_fd=parent)
                else:
                    os.unlink(base, dir_fd=parent)
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    raise BadRequest('%s is a directory that is not empty' % path)
                raise _errors(exc, path)


# -- what the API handlers call ---------------------------------------------------------------

def read(daemon, name, path):
    """Blocking: (FileInfo, fd | names | symlink target); the caller closes a returned fd."""
    with InstanceFiles(daemon, name) as files:
        return files.read(path)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def push(daemon, name, path, kind, body, uid=None, gid=None, mode=None, append=False):
    """POST .../files: `body` is an async iterator of chunks (file) or the whole bytes."""
    blocking = daemon.operations.run_blocking
    if kind == 'directory':
        return await blocking(_with_files, daemon, name, 'mkdir', path, uid, gid, mode)
    if kind == 'symlink':
        target = os.fsdecode(body)
        return await blocking(_with_files, daemon, name, 'symlink', path, target, uid, gid)
    if kind != 'file':
        raise BadRequest('Invalid X-LXD-type %r (file, directory or symlink)' % kind)
    fd, _created, undo = await blocking(_with_files, daemon, name, 'open_for_write', path,
                                        uid, gid, mode, append)
    try:
        async for chunk in body:
            await blocking(write_all, fd, chunk)
    except BaseException:
        undo()   # a push cut short leaves no new half-written file
        raise
    finally:
        os.close(fd)


def delete(daemon, name, path):
    _with_files(daemon, name, 'delete', path)


def _with_files(daemon, name, method, *args):
    with InstanceFiles(daemon, name) as files:
        return getattr(files, method)(*args)


def parse_mode(value):
    if value in (None, ''):
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        raise BadRequest('Invalid X-LXD-mode %r (octal expected)' % value)
    if not 0 <= mode <= 0o7777:
        raise BadRequest('Invalid X-LXD-mode %r' % value)
    return mode


def parse_id(value, header):
    if value in (None, '', '-1'):
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest('Invalid %s %r' % (header, value))
    if number < 0:
        raise BadRequest('Invalid %s %r' % (header, value))
    return number
