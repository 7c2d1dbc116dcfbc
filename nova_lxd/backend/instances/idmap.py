"""User-namespace id maps from /etc/subuid and /etc/subgid, and shifting a rootfs between maps.

Unprivileged instances map container ids 0..size-1 onto root's subordinate range (the whole
range, as LXD does); `security.idmap.isolated` gives an instance its own 65536 ids from that
range. The map a rootfs is currently shifted to is kept in volatile.last_state.idmap, so a
start can shift it when the wanted map changed (new instance, privileged toggled, copy).
"""
import json
import logging
import os
import stat

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.instances.config import is_true

LOG = logging.getLogger(__name__)
DEFAULT_RANGE = (1000000, 1000000000)   # LXD's fallback when root has no subordinate ids
ISOLATED_SIZE = 65536


def root_range(path):
    """(start, count) of root's largest subordinate range in /etc/subuid or /etc/subgid."""
    best = None
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(':')
                if len(fields) == 3 and fields[0] in ('root', '0') and \
                        fields[1].isdigit() and fields[2].isdigit():
                    candidate = (int(fields[1]), int(fields[2]))
                    if best is None or candidate[1] > best[1]:
                        best = candidate
    except OSError:
        pass
    return best or DEFAULT_RANGE


def host_ranges():
    return root_range('/etc/subuid'), root_range('/etc/subgid')


def wanted_map(config, taken_bases, current=None):
    """(idmap, base) an instance should run with; ([], None) when privileged.

    base is what LXD keeps in volatile.idmap.base: 0 for the shared map, the first host id of
    an isolated one. taken_bases: the volatile.idmap.base of the other isolated instances;
    current: this instance's, kept while no other instance overlaps it (no needless re-shift).
    """
    if is_true(config.get('security.privileged', 'false')):
        return [], None
    (ustart, ucount), (gstart, gcount) = host_ranges()
    count = min(ucount, gcount)
    if not is_true(config.get('security.idmap.isolated', 'false')):
        size = int(config.get('security.idmap.size') or count)
        return [('u', 0, ustart, size), ('g', 0, gstart, size)], 0
    size = int(config.get('security.idmap.size') or ISOLATED_SIZE)
    if config.get('security.idmap.base'):
        offset = int(config['security.idmap.base']) - ustart
    elif current and int(current) > ustart and all(
            abs(int(current) - base) >= max(size, ISOLATED_SIZE) for base in taken_bases):
        offset = int(current) - ustart
    else:
        offset = ISOLATED_SIZE  # the first block stays with the shared map's root
        taken = sorted(base - ustart for base in taken_bases)
        for base in taken:
            if offset + size <= base:
                break
            offset = max(offset, base + ISOLATED_SIZE)
    if offset < 0 or offset + size > count:
        raise BadRequest('Not enough subordinate ids left for an isolated id map')
    return [('u', 0, ustart + offset, size), ('g', 0, gstart + offset, size)], ustart + offset


def to_json(idmap):
    return json.dumps([{'Isuid': k == 'u', 'Isgid': k == 'g', 'Nsid': ns, 'Hostid': host,
                        'Maprange': count} for k, ns, host, count in idmap])


def from_json(text):
    if not text:
        return []
    return [('u' if e.get('Isuid') else 'g', e['Nsid'], e['Hostid'], e['Maprange'])
            for e in json.loads(text)]


def lxc_lines(idmap):
    return [('lxc.idmap', '%s %d %d %d' % entry) for entry in idmap]


def _translate(idmap, kind, value, from_host):
    """An id through the map (host -> namespace or back); None if no range covers it."""
    if not idmap:
        return value
    for k, ns, host, count in idmap:
        start, other = (host, ns) if from_host else (ns, host)
        if k == kind and start <= value < start + count:
            return other + value - start
    return None


def to_ns(idmap, kind, host_id):
    return _translate(idmap, kind, host_id, from_host=True)


def to_host(idmap, kind, ns_id):
    return _translate(idmap, kind, ns_id, from_host=False)


def shift_rootfs(path, old, new):
    """Re-own every file under `path` from map `old` to map `new` (ids outside stay as they are).

    chown clears setuid/setgid bits, so they are put back. Symlinks are never followed and other
    filesystems mounted below are not entered.
    """
    if old == new or not os.path.isdir(path):
        return 0
    device = os.lstat(path).st_dev
    changed = 0

    def shift(p, st):
        nonlocal changed
        uid, gid = to_ns(old, 'u', st.st_uid), to_ns(old, 'g', st.st_gid)
        new_uid = to_host(new, 'u', uid) if uid is not None else None
        new_gid = to_host(new, 'g', gid) if gid is not None else None
        new_uid = st.st_uid if new_uid is None else new_uid
        new_gid = st.st_gid if new_gid is None else new_gid
        if (new_uid, new_gid) == (st.st_uid, st.st_gid):
            return
        os.lchown(p, new_uid, new_gid)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(p, stat.S_IMODE(st.st_mode))
        changed += 1

    shift(path, os.lstat(path))
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            if st.st_dev != device:
                if name in dirs:
                    dirs.remove(name)
                continue
            shift(p, st)
    LOG.info('Shifted %d files under %s', changed, path)
    return changed
