"""Fill an instance's rootfs with a busybox system (for instances created with source none)."""
import os
import shutil
import subprocess

INITTAB = """::sysinit:/etc/init.d/rcS
::shutdown:/bin/echo busybox stopping
"""
RCS = """#!/bin/sh
mkdir -p /run /tmp
ip link set lo up
echo busybox booted
"""
FILES = {'etc/inittab': (INITTAB, 0o644), 'etc/init.d/rcS': (RCS, 0o755),
         'etc/passwd': ('root:x:0:0:root:/root:/bin/sh\n', 0o644),
         'etc/group': ('root:x:0:\n', 0o644), 'etc/hostname': ('busybox\n', 0o644)}
DIRS = ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc/init.d', 'dev', 'proc', 'sys', 'tmp',
        'root', 'run', 'var/log', 'mnt']
_APPLETS = None


def _applets():
    global _APPLETS
    if _APPLETS is None:
        out = subprocess.run(['/bin/busybox', '--list-full'], check=True, capture_output=True,
                             text=True)
        _APPLETS = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return _APPLETS


def fill(rootfs, owner=(0, 0)):
    """Write a bootable busybox system into rootfs, files owned by `owner` (host ids)."""
    for d in DIRS:
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    os.chmod(os.path.join(rootfs, 'tmp'), 0o1777)
    shutil.copy2('/bin/busybox', os.path.join(rootfs, 'bin/busybox'))
    for applet in _applets():
        path = os.path.join(rootfs, applet.lstrip('/'))
        if applet != '/bin/busybox' and not os.path.lexists(path) and \
                applet.lstrip('/').split('/')[0] in ('bin', 'sbin', 'usr'):
            os.symlink('/bin/busybox', path)
    for name, (text, mode) in FILES.items():
        with open(os.path.join(rootfs, name), 'w') as f:
            f.write(text)
        os.chmod(os.path.join(rootfs, name), mode)
    for root, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), *owner)
    os.lchown(rootfs, *owner)
