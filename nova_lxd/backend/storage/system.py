"""The few system calls pool drivers share: running tools, mounts, sizes, copying trees."""
import os
import re
import subprocess

from nova_lxd.backend.errors import BadRequest

_UNITS = {'': 1, 'B': 1, 'KB': 10 ** 3, 'MB': 10 ** 6, 'GB': 10 ** 9, 'TB': 10 ** 12,
          'PB': 10 ** 15, 'KIB': 1 << 10, 'MIB': 1 << 20, 'GIB': 1 << 30, 'TIB': 1 << 40,
          'PIB': 1 << 50}


def parse_size(value, key='size'):
    """LXD's size strings ('30GB', '10GiB', '512MiB', bytes) -> bytes; BadRequest otherwise."""
    match = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([KMGTP]?i?B?)\s*', str(value), re.IGNORECASE)
    if not match or match.group(2).upper() not in _UNITS:
        raise BadRequest('Invalid value for %s: %r (expected e.g. 10GiB)' % (key, value))
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size <= 0:
        raise BadRequest('Invalid value for %s: %r (must be positive)' % (key, value))
    return size


def run(cmd, what=None):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError('%s failed: %s' % (what or ' '.join(cmd[:2]),
                                              (proc.stderr or proc.stdout).strip()[-500:]))
    return proc.stdout


def is_mountpoint(path):
    path = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        for line in f:
            mount_point = line.split()[4].encode().decode('unicode_escape')
            if mount_point == path:
                return True
    return False


def copy_tree(source, dest):
    """Copy a directory tree keeping ids, modes, links, xattrs and sparseness."""
    run(['cp', '-a', '--reflink=auto', source, dest], 'copy %s' % source)


_DU_IN_PROCESS_ENTRIES = 5000


def _walk_bytes(path, budget):
    """`du -s -B1 -x` in this process, or None past `budget` entries (du is faster there)."""
    top = os.lstat(path)
    seen, total, pending = set(), top.st_blocks * 512, [path]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                budget -= 1
                if budget < 0:
                    return None
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != top.st_dev:
                    continue
                if st.st_nlink > 1:      # hard links count once, as du counts them
                    if st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return total


def du_bytes(path):
    if not os.path.exists(path):
        return 0
    # a small tree (busybox: a few hundred entries) costs less than starting du
    total = _walk_bytes(path, _DU_IN_PROCESS_ENTRIES)
    if total is not None:
        return total
    out = subprocess.run(['du', '-s', '-B1', '-x', path], capture_output=True, text=True)
    try:
        return int(out.stdout.split()[0])
    except (IndexError, ValueError):
        return 0


def mounts_under(path):
    """Mount points at or below path, deepest first."""
    path = os.path.realpath(path)
    found = []
    with open('/proc/self/mountinfo') as f:
        for line in f:
            mount_point = line.split()[4].encode().decode('unicode_escape')
            if mount_point == path or mount_point.startswith(path + '/'):
                found.append(mount_point)
    return sorted(found, key=lambda p: p.count('/'), reverse=True)


def unmount_tree(path):
    """Lazily unmount everything at or below path (a data directory being removed).

    Pools on loop files are mounted with autoclear, so this also frees their loop devices.
    """
    for mount_point in mounts_under(path):
        subprocess.run(['umount', '-l', mount_point], capture_output=True)
