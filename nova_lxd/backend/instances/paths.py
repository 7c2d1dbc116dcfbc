"""Paths inside a container rootfs that can never escape it (symlinks resolved as in a chroot)."""
import os

from nova_lxd.backend.errors import BadRequest

_MAX_LINKS = 40


def resolve_in_rootfs(rootfs, path):
    """The host path of `path` as the container would see it; symlinks can't leave rootfs."""
    rootfs = os.path.abspath(rootfs)
    parts = [p for p in path.split('/') if p not in ('', '.')]
    resolved = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == '..':
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(rootfs, *resolved, part)
        if os.path.islink(candidate):
            links += 1
            if links > _MAX_LINKS:
                raise BadRequest('Too many symbolic links in %r' % path)
            target = os.readlink(candidate)
            if target.startswith('/'):
                resolved = []
            parts = [p for p in target.split('/') if p not in ('', '.')] + parts
            continue
        resolved.append(part)
    return os.path.join(rootfs, *resolved)


def relative_mount_target(path):
    """An absolute container path as LXC mount entries want it (relative to the rootfs)."""
    if not path.startswith('/'):
        raise BadRequest('Path %r must be absolute' % path)
    parts = [p for p in path.split('/') if p]
    if '..' in parts:
        raise BadRequest('Path %r must not contain ..' % path)
    return '/'.join(parts)
