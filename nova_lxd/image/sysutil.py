"""Loop devices, mounts and signal deferral: host resources that must never be left behind."""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time

from nova_lxd.image.errors import ImageError

_DEFERRED = {signal.SIGINT, signal.SIGTERM}
LOOP_ATTEMPTS = 5


@contextlib.contextmanager
def deferred_signals():
    """Hold SIGINT/SIGTERM while a resource is created and recorded.

    An interrupt then cannot fall between "the kernel made it" and "our finally knows to
    release it": the Python handlers are swapped for a recorder, and a signal that arrived is
    handled when the block ends. (Python runs handlers in the main thread only, so in any other
    thread an interrupt cannot land in the block and nothing needs deferring.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending, previous = [], {}
    try:
        for sig in _DEFERRED:      # one at a time: whatever was swapped is restored below
            previous[sig] = signal.signal(
                sig, lambda signum, frame: pending.append((signum, frame)))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum, frame in pending[:1]:
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def _unescape(field):
    # /proc/mounts escapes space, tab, newline and backslash as octal
    return re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), field)


def mount_points():
    with open('/proc/self/mounts') as f:
        return [_unescape(line.split()[1]) for line in f if line.strip()]


def mounts_under(path):
    path = os.path.realpath(path)
    return [m for m in mount_points() if m == path or m.startswith(path + '/')]


def remove_tree(path):
    """Unmount whatever is mounted below path, then delete it; not cut short by Ctrl-C.

    If something stays mounted, nothing is deleted (never recurse into a live mount).
    """
    with deferred_signals():
        unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


def unmount_under(path):
    """Unmount everything at or below path, deepest first (lazily as a last resort)."""
    for point in sorted(set(mounts_under(path)), key=len, reverse=True):
        if subprocess.run(['umount', point], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(['umount', '-l', point], stderr=subprocess.DEVNULL)
    remaining = mounts_under(path)
    if remaining:
        raise ImageError('could not unmount %s' % ', '.join(remaining))


@contextlib.contextmanager
def loop_device(path, offset=0, size=None):
    """A read-only loop device over path[offset:offset+size]; always detached afterwards."""
    cmd = ['losetup', '--find', '--show', '--read-only', '--offset', str(offset)]
    if size is not None:
        cmd += ['--sizelimit', str(size)]
    device = None
    try:
        # another process may take the free device losetup found (EBUSY): find another one
        for attempt in range(LOOP_ATTEMPTS):
            with deferred_signals():
                proc = subprocess.run(cmd + [path], capture_output=True, text=True)
                if proc.returncode == 0:
                    device = proc.stdout.strip()
            if device is not None or 'busy' not in proc.stderr.lower():
                break
            time.sleep(0.05 * (attempt + 1))
        if device is None:
            raise ImageError('cannot attach a loop device to %s: %s'
                             % (path, proc.stderr.strip()))
        yield device
    finally:
        if device is not None:
            with deferred_signals():      # a second Ctrl-C must not cut the clean-up short
                detach_loop(device)


def detach_loop(device):
    proc = subprocess.run(['losetup', '--detach', device], capture_output=True, text=True)
    if proc.returncode != 0 and os.path.exists('/sys/block/%s/loop' % os.path.basename(device)):
        raise ImageError('cannot detach %s: %s' % (device, proc.stderr.strip()))


@contextlib.contextmanager
def mounted(device, mountpoint, fstype, options):
    """Mount device at mountpoint; always unmounted afterwards."""
    os.makedirs(mountpoint, exist_ok=True)
    try:
        with deferred_signals():
            proc = subprocess.run(['mount', '-t', fstype, '-o', ','.join(options),
                                   device, mountpoint], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError('cannot mount the %s filesystem: %s' % (fstype, proc.stderr.strip()))
        yield mountpoint
    finally:
        with deferred_signals():
            unmount_under(mountpoint)
