"""A small busybox system-container image, built from Debian's busybox-static, for the driver tests.

Two shapes, as Glance would hold them: an LXD unified tarball (metadata.yaml + rootfs/) and a
plain root-filesystem tarball (root-tar). Built once and cached under .cache/.
"""
import io
import os
import tarfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CACHE = os.path.join(REPO, '.cache')
BUSYBOX = '/bin/busybox'
VERSION = '3'   # bump when the rootfs changes

INITTAB = b"""::sysinit:/etc/init.d/rcS
::restart:/sbin/init
::shutdown:/bin/echo nova-lxd-busybox stopping
"""
RCS = b"""#!/bin/sh
mkdir -p /run /tmp /var/log
hostname -F /etc/hostname 2>/dev/null
ip link set lo up
echo nova-lxd-busybox booted
"""
FILES = {
    'etc/inittab': (INITTAB, 0o644),
    'etc/init.d/rcS': (RCS, 0o755),
    'etc/passwd': (b'root:x:0:0:root:/root:/bin/sh\n', 0o644),
    'etc/shadow': (b'root:*:19000:0:99999:7:::\n', 0o600),
    'etc/group': (b'root:x:0:\n', 0o644),
    'etc/hostname': (b'busybox\n', 0o644),
}
DIRS = ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'etc', 'etc/init.d', 'dev', 'proc', 'sys',
        'tmp', 'root', 'run', 'var', 'var/log', 'mnt']


def _applets():
    import subprocess
    out = subprocess.run([BUSYBOX, '--list-full'], check=True, capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _add(tar, name, data=None, mode=0o644, kind=tarfile.REGTYPE, link=None):
    info = tarfile.TarInfo(name)
    info.mtime = int(time.time())
    info.mode = mode
    info.type = kind
    if link:
        info.linkname = link
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def _write_rootfs(tar, prefix):
    for d in DIRS:
        _add(tar, prefix + d, mode=0o1777 if d == 'tmp' else 0o755, kind=tarfile.DIRTYPE)
    with open(BUSYBOX, 'rb') as f:
        _add(tar, prefix + 'bin/busybox', f.read(), 0o755)
    for applet in _applets():
        path = applet.lstrip('/')
        if path != 'bin/busybox' and path.split('/')[0] in ('bin', 'sbin', 'usr'):
            _add(tar, prefix + path, kind=tarfile.SYMTYPE, mode=0o777, link='/bin/busybox')
    for name, (data, mode) in FILES.items():
        _add(tar, prefix + name, data, mode)


def metadata_yaml(description='nova-lxd test busybox'):
    return ('architecture: x86_64\ncreation_date: %d\nproperties:\n  os: busybox\n'
            '  description: %s\n' % (int(time.time()), description)).encode()


def _cached(name, build):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, 'busybox-v%s-%s' % (VERSION, name))
    if not os.path.exists(path):
        tmp = path + '.%d.tmp' % os.getpid()
        build(tmp)
        os.rename(tmp, path)
    return path


def unified_tarball():
    """Path of a gzip'd LXD unified image tarball (metadata.yaml + rootfs/)."""
    def build(path):
        with tarfile.open(path, 'w:gz') as tar:
            _add(tar, 'metadata.yaml', metadata_yaml())
            _add(tar, 'rootfs', mode=0o755, kind=tarfile.DIRTYPE)
            _write_rootfs(tar, 'rootfs/')
    return _cached('unified.tar.gz', build)


def root_tarball(compression='xz'):
    """Path of a plain root-filesystem tarball (no metadata), compressed with gz, xz or ''."""
    suffix = {'gz': '.tar.gz', 'xz': '.tar.xz', '': '.tar'}[compression]

    def build(path):
        with tarfile.open(path, 'w:' + compression if compression else 'w') as tar:
            _write_rootfs(tar, './')
    return _cached('root' + suffix, build)


def read(path):
    with open(path, 'rb') as f:
        return f.read()
