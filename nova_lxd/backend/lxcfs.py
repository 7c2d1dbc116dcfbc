"""lxcfs, started and supervised by the daemon: each container's own /proc/meminfo, cpuinfo, ...

It mounts at DATA/lxcfs, its pid is kept in DATA/lxcfs.pid; if it dies it is restarted. Like LXD
the daemon leaves it running when it stops, so running containers keep their views; a restarted
daemon adopts it from the pid file.
"""
import asyncio
import logging
import os
import subprocess
import time

LOG = logging.getLogger(__name__)
CHECK_INTERVAL = 5.0


class Lxcfs:
    def __init__(self, data_dir, binary='lxcfs', after_start=None):
        self.mountpoint = os.path.join(data_dir, 'lxcfs')
        self.pid_file = os.path.join(data_dir, 'lxcfs.pid')
        self.log_file = os.path.join(data_dir, 'logs', 'lxcfs.log')
        self.binary = binary
        self.after_start = after_start
        self.pid = None
        self._child = None
        self._task = None

    # -- state ---------------------------------------------------------------------------------
    def _alive(self, pid):
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                cmdline = f.read().split(b'\0')
        except (OSError, ValueError):
            return False
        return bool(cmdline) and os.path.basename(cmdline[0]) == b'lxcfs' and \
            self.mountpoint.encode() in cmdline

    def mounted(self):
        with open('/proc/self/mountinfo') as f:
            return any(line.split()[4] == self.mountpoint and 'fuse.lxcfs' in line
                       for line in f)

    def running(self):
        if self._child is not None and self._child.poll() is not None:
            self._child = None
        return self.pid is not None and self._alive(self.pid) and self.mounted()

    @property
    def dir(self):
        """The mountpoint when lxcfs is serving, for the containers' mount entries."""
        return self.mountpoint if self.running() else None

    # -- start / supervise ---------------------------------------------------------------------
    def ensure(self):
        """Adopt a running lxcfs or start one (blocking; a fraction of a second)."""
        if self.pid is None:
            try:
                with open(self.pid_file) as f:
                    self.pid = int(f.read().strip())
            except (OSError, ValueError):
                self.pid = None
        if self.pid is not None and self.running():
            return True
        # a dead lxcfs leaves a stale FUSE mount ("transport endpoint is not connected")
        subprocess.run(['umount', '-l', self.mountpoint], stderr=subprocess.DEVNULL)
        os.makedirs(self.mountpoint, exist_ok=True)
        os.makedirs(os.path.dirname(self.log_file), exist_ok=True)
        try:
            with open(self.log_file, 'ab') as log:
                self._child = subprocess.Popen(
                    [self.binary, '-f', '-l', '--enable-cfs', '-p', self.pid_file,
                     self.mountpoint],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        except OSError as exc:   # e.g. Debian's lxcfs not installed: containers still work
            LOG.error('Cannot start lxcfs: %s', exc)
            self.pid = None
            return False
        self.pid = self._child.pid
        with open(self.pid_file, 'w') as f:
            f.write('%d\n' % self.pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._child.poll() is not None:
                LOG.error('lxcfs exited with %s, see %s', self._child.returncode, self.log_file)
                self.pid = None
                return False
            if self.mounted():
                LOG.info('lxcfs %d serving %s', self.pid, self.mountpoint)
                if self.after_start:
                    # lxcfs mounts cgroup2 for itself with no options: the host's are reset
                    self.after_start()
                return True
            time.sleep(0.02)
        LOG.error('lxcfs did not mount %s in time', self.mountpoint)
        return False

    def start_supervision(self, run_blocking):
        async def watch():
            while True:
                await asyncio.sleep(CHECK_INTERVAL)
                if not self.running():
                    LOG.warning('lxcfs is gone; restarting it (containers started before keep '
                                'stale views until restarted)')
                    try:
                        await run_blocking(self.ensure)
                    except Exception:
                        LOG.exception('Restarting lxcfs failed')
        self._task = asyncio.get_running_loop().create_task(watch())

    def stop_supervision(self):
        """On daemon stop: stop watching, leave lxcfs running for the containers."""
        if self._task:
            self._task.cancel()


def stop(data_dir, timeout=5.0):
    """Stop the lxcfs of a data directory and unmount it.

    Used when a whole backend is removed; a normal daemon stop leaves lxcfs running.
    """
    fs = Lxcfs(data_dir)
    try:
        with open(fs.pid_file) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pid = None
    if pid and fs._alive(pid):
        os.kill(pid, 15)
        deadline = time.monotonic() + timeout
        while fs._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    subprocess.run(['umount', '-l', fs.mountpoint], stderr=subprocess.DEVNULL)
