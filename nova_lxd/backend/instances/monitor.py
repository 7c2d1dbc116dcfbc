"""Waiting for a container's liblxc monitor process to finish its teardown.

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


def _running(lxcpath, name, lxc_start):
    titles = {('[lxc monitor] %s %s' % (lxcpath, name)).encode(),
              # the forked monitor before it renames itself
              b'\0'.join(a.encode() for a in (lxc_start, '-P', lxcpath, '-n', name))}
    me = os.getpid()
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                cmdline = f.read().rstrip(b'\0')
        except OSError:
            continue
        if cmdline in titles:
            return True
    return False


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
