"""The busybox test image in the shapes Glance may hold for containers.

The unified tarball is the project's own (tests/images.py, built by nova-lxd-image); the plain
root-filesystem tarballs (root-tar: plain, gz, xz) are repacked from its rootfs/ and cached.
"""
import os
import tarfile

from tests import images

CACHE = images.CACHE_DIR
BOOT_LINE = 'busybox: booting'
SHUTDOWN_LINE = 'busybox: shutting down'


def unified_tarball():
    return images.busybox_image()


def root_tarball(compression='xz'):
    """Path of the busybox rootfs as a root-tar (no metadata.yaml), compressed with gz, xz or ''."""
    source = unified_tarball()
    suffix = {'gz': '.tar.gz', 'xz': '.tar.xz', '': '.tar'}[compression]
    path = os.path.join(CACHE, os.path.basename(source).split('.tar')[0] + '-root' + suffix)
    if not os.path.exists(path):
        tmp = '%s.%d.tmp' % (path, os.getpid())
        with tarfile.open(source) as src, \
                tarfile.open(tmp, 'w:' + compression if compression else 'w') as out:
            for member in src:
                if not member.name.startswith('rootfs/'):
                    continue
                member.name = './' + member.name[len('rootfs/'):]
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
        os.rename(tmp, path)
    return path


def read(path):
    with open(path, 'rb') as f:
        return f.read()
