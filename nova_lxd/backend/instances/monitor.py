"""A container's liblxc monitor process: waiting for its teardown, and noticing its exit.

lxc-start returns as soon as a start failed, while the container's monitor (a daemonized child,
titled "[lxc monitor] <lxcpath> <name>") is still removing the container's cgroups; a stop returns
once the container is STOPPED, also before its monitor is gone. A start of the same container in
that window met the old lxc.monitor.<name> cgroup and liblxc left part of it behind for good (the
leak test found it in several hierarchies). So a start waits for the previous monitor, and a
failed start is reported only once its monitor is gone, and with the empty monitor cgroups liblxc
sometimes leaves after a failed start removed (see remove_orphaned_cgroups for why that cannot
touch another manager's). The monitor is found by its title, which holds this daemon's own
lxcpath: another manager's container of the same name is never waited for.
"""
import os
import time

CGROUP_ROOT = '/sys/fs/cgroup'
WAIT_TIMEOUT = 10.0
POLL_INTERVAL = 0.02


def _title(lxcpath, name):
    return ('[lxc monitor] %s %s' % (lxcpath, name)).encode()


def _processes():
    """(pid, command line) of every other process on the host, NULs between the arguments."""
    me = os.getpid()
    for entry in os.listdir('/proc'):
        if entry.isdigit() and int(entry) != me:
            try:
                with open('/proc/%s/cmdline' % entry, 'rb') as f:
                    yield int(entry), f.read().rstrip(b'\0')
            except OSError:
                continue


def _running(lxcpath, name, lxc_start):
    titles = {_title(lxcpath, name),
              # the forked monitor before it renames itself
              b'\0'.join(a.encode() for a in (lxc_start, '-P', lxcpath, '-n', name))}
    return any(cmdline in titles for _, cmdline in _processes())


def _cgroups_exist(name):
    """Cheap first look (a few stats): liblxc cgroups of this name in any hierarchy."""
    for hierarchy in os.listdir(CGROUP_ROOT):
        for kind in ('monitor', 'payload'):
            if os.path.isdir(os.path.join(CGROUP_ROOT, hierarchy, 'lxc.%s.%s' % (kind, name))):
                return True
    return False


def wait_gone(lxcpath, name, lxc_start, always=False):
    """Wait (bounded) until no monitor of container `name` in lxcpath is running.

    Unless `always`, only when cgroups of that name exist: without them there is nothing a
    monitor could still be tearing down, and the start path skips the scan of /proc.
    """
    if not always and not _cgroups_exist(name):
        return
    deadline = time.monotonic() + WAIT_TIMEOUT
    while _running(lxcpath, name, lxc_start) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)


def remove_orphaned_cgroups(name, created_before):
    """The empty lxc.monitor.<name> cgroups liblxc's monitor left behind after a failed start.

    Call only once that monitor is gone (wait_gone). liblxc sometimes leaves its monitor cgroup,
    empty, in some hierarchies when a start fails. Only a directory created before
    `created_before` (when our lxc-start returned) is removed: it has existed since our monitor
    made it, so no other manager can have created that same path meanwhile (liblxc picks
    <name>-1 when the path exists); a newer one may be another manager's, being set up, and is
    left alone. rmdir removes only empty cgroups.
    """
    for hierarchy in os.listdir(CGROUP_ROOT):
        path = os.path.join(CGROUP_ROOT, hierarchy, 'lxc.monitor.%s' % name)
        try:
            if os.stat(path).st_ctime < created_before:
                os.rmdir(path)
        except OSError:
            pass


# -- noticing a container that stops without being asked ---------------------------------------
# liblxc's monitor lives exactly as long as its container runs (a reboot inside keeps it), so its
# exit is the container's stop, whoever caused it: a poweroff inside, an init that died, a stop
# through the API. lxc-start writes the monitor's pid to a file (its -p option).
PID_FILE = 'monitor.pid'


def pid_file(lxcpath, name):
    return os.path.join(lxcpath, name, PID_FILE)


def started_pid(lxcpath, name):
    """The monitor's pid that lxc-start recorded, if that process is still this monitor."""
    try:
        with open(pid_file(lxcpath, name)) as f:
            pid = int(f.read().strip())
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return pid if f.read().rstrip(b'\0') == _title(lxcpath, name) else None
    except (OSError, ValueError):
        return None


def running_pids(lxcpath):
    """{container name: monitor pid} of every monitor of lxcpath (one pass over /proc)."""
    prefix = _title(lxcpath, '')
    return {cmdline[len(prefix):].decode(errors='replace'): pid
            for pid, cmdline in _processes() if cmdline.startswith(prefix)}


class ExitWatch:
    """Calls on_exit(name) on the event loop when a watched monitor exits (through pidfds)."""

    def __init__(self, loop, on_exit):
        self._loop = loop
        self._on_exit = on_exit
        self._fds = {}      # name -> pidfd

    def watch(self, name, pid):
        """On the loop: watch `pid`, the monitor of `name` (None: it has none any more)."""
        self.forget(name)
        try:
            fd = os.pidfd_open(pid) if pid is not None else None
        except ProcessLookupError:
            fd = None
        if fd is None:
            self._loop.call_soon(self._on_exit, name)
            return
        self._fds[name] = fd
        self._loop.add_reader(fd, self._exited, name, fd)

    def watch_from_thread(self, name, pid):
        self._loop.call_soon_threadsafe(self.watch, name, pid)

    def _exited(self, name, fd):
        if self._fds.get(name) == fd:
            self.forget(name)
            self._on_exit(name)

    def forget(self, name):
        fd = self._fds.pop(name, None)
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)

    def close(self):
        for name in list(self._fds):
            self.forget(name)
