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


# -- helpers for instance tests ------------------------------------------------------------------
import glob  # noqa: E402
import uuid  # noqa: E402


def unique(prefix='t'):
    """Container names are unique per host cgroup tree: keep test names unique too."""
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


def rootfs_path(backend, name):
    found = glob.glob(os.path.join(backend.data_dir, 'storage-pools', '*', 'containers', name,
                                   'rootfs'))
    assert len(found) == 1, found
    return found[0]


def host_root(privileged=False):
    """Host (uid, gid) of the container's root: the start of root's subordinate range."""
    if privileged:
        return 0, 0
    from nova_lxd.backend.instances import idmap
    (uid, _), (gid, _) = idmap.host_ranges()
    return uid, gid


def create_busybox(client, backend, name=None, config=None, devices=None, profiles=None):
    """An instance (source none) whose rootfs holds a busybox system; stopped."""
    name = name or unique()
    body = {'name': name, 'source': {'type': 'none'}, 'config': config or {},
            'devices': devices or {}}
    if profiles is not None:
        body['profiles'] = profiles
    instance = client.instances.create(body, wait=True)
    fill(rootfs_path(backend, name), mapped_root(instance))
    return instance


def mapped_root(instance):
    """Host (uid, gid) of the container's root in the map its rootfs is shifted to."""
    import json
    entries = json.loads(instance.config.get('volatile.last_state.idmap') or '[]')
    uid = [e['Hostid'] for e in entries if e['Isuid'] and e['Nsid'] == 0]
    gid = [e['Hostid'] for e in entries if e['Isgid'] and e['Nsid'] == 0]
    return (uid[0] if uid else 0), (gid[0] if gid else 0)


def attach(backend, name, *command):
    """Run a command inside a running container with liblxc's own lxc-attach."""
    out = subprocess.run(['lxc-attach', '-P', os.path.join(backend.data_dir, 'containers'),
                          '-n', name, '--clear-env', '--'] + list(command),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def cleanup(instance):
    try:
        instance.sync()
        if instance.status != 'Stopped':
            instance.stop(force=True, wait=True)
        instance.delete(wait=True)
    except Exception:
        pass
