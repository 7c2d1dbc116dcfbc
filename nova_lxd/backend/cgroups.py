"""The host's cgroup mode the daemon asks for: cheap task moves (`favordynmods`, Linux 6.0+).

Every start moves the container's monitor and init into cgroups of their own in each hierarchy,
and every stop moves the monitor out again. A move takes the kernel's thread-group lock for
writing; by default that lock favours forks and exits, and a writer first waits for an RCU grace
period: 5-10 ms, the largest single part of a busybox start on a cgroup v1 host. The cgroup2
option `favordynmods` turns the trade-off around host-wide (moves in microseconds, forks and
exits a little dearer; the kernel's documentation names container start-up as the case for it).
The lock is shared by every hierarchy, so setting it on cgroup2 speeds up cgroup v1 moves too.
"""
import logging
import os
import subprocess
import tempfile

LOG = logging.getLogger(__name__)
OPTION = 'favordynmods'


def cgroup2_mount(mountinfo='/proc/self/mountinfo'):
    """(mount point, superblock options) of the first cgroup2 mount, or None."""
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            dash = fields.index('-')
            if fields[dash + 1] == 'cgroup2':
                return fields[4], fields[dash + 3].split(',')
    return None


def favor_dynamic_changes(run=subprocess.run, mountinfo='/proc/self/mountinfo'):
    """Turn `favordynmods` on; False, with a warning, where the kernel or namespace refuses it."""
    found = cgroup2_mount(mountinfo)
    if found and OPTION in found[1]:
        return True
    if found:
        # mount(8) keeps the mount's other options (nsdelegate, nosuid, ...) on a remount
        result = _run(run, 'mount', '-o', 'remount,' + OPTION, found[0])
    else:
        # a pure cgroup v1 host: mounting cgroup2 sets its flag, which outlives the mount
        where = tempfile.mkdtemp(prefix='nova-lxd-cgroup2.')
        try:
            result = _run(run, 'mount', '-t', 'cgroup2', '-o', OPTION, 'cgroup2', where)
            if result.returncode == 0:
                _run(run, 'umount', where)
        finally:
            try:
                os.rmdir(where)
            except OSError:
                pass
    if result.returncode != 0:
        LOG.warning('Cannot turn on cgroup2 %s (Linux 6.0 or later, the initial cgroup namespace):'
                    ' %s; every start and stop waits for the kernel a few ms longer',
                    OPTION, (result.stderr or '').strip() or 'mount exited %d' % result.returncode)
        return False
    LOG.info('cgroup2 %s turned on: moving tasks between cgroups no longer waits for an RCU '
             'grace period', OPTION)
    return True


def _run(run, *command):
    try:
        return run(list(command), capture_output=True, text=True, check=False)
    except OSError as exc:       # no mount(8): as good as refused
        return subprocess.CompletedProcess(command, 127, '', str(exc))
