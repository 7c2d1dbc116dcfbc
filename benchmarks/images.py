"""The images every benchmark imports into both daemons: the same bytes on both sides.

Busybox images are built here from the host's static /bin/busybox (Debian's busybox-static) unless
tests/images.py (the project's image tool) provides them; a Debian+systemd image comes only from
tests/images.py, since building it costs a debootstrap. Built tarballs are cached under
.cache/benchmarks/ (git-ignored) and rebuilt when missing.
"""
import hashlib
import io
import os
import shutil
import subprocess
import tarfile

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, '.cache', 'benchmarks')
BUSYBOX = '/bin/busybox'
# A fixed date, so the same rootfs always gives the same tarball and fingerprint.
EPOCH = 1700000000
BIG_BLOB_PATH = 'opt/bench/blob.bin'
MARKER_PATH = 'etc/bench-marker'
MARKER = b'nova-lxd benchmark image\n'

INITTAB = b"""::sysinit:/bin/hostname -F /etc/hostname
::shutdown:/bin/sync
"""


class Image:
    """A unified image tarball on disk, with what a scenario needs to know about it."""

    def __init__(self, alias, path, description):
        self.alias = alias
        self.path = path
        self.description = description

    @property
    def fingerprint(self):
        h = hashlib.sha256()
        with open(self.path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        return h.hexdigest()

    @property
    def size(self):
        return os.path.getsize(self.path)

    def read(self):
        with open(self.path, 'rb') as f:
            return f.read()


def _applets():
    out = subprocess.run([BUSYBOX, '--list'], check=True, capture_output=True, text=True).stdout
    return [a for a in out.split() if a and a != 'busybox']


def busybox_rootfs_entries(extra_files=()):
    """(TarInfo, data-or-None) pairs of a minimal busybox system container rootfs under rootfs/."""
    entries = []

    def add_dir(path, mode=0o755):
        info = tarfile.TarInfo('rootfs/' + path if path else 'rootfs')
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, EPOCH
        entries.append((info, None))

    def add_file(path, data, mode=0o644):
        info = tarfile.TarInfo('rootfs/' + path)
        info.size, info.mode, info.mtime = len(data), mode, EPOCH
        entries.append((info, data))

    def add_link(path, target):
        info = tarfile.TarInfo('rootfs/' + path)
        info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, EPOCH
        entries.append((info, None))

    add_dir('')
    for d in ('bin', 'sbin', 'etc', 'dev', 'proc', 'sys', 'run', 'var', 'var/log', 'root',
              'usr', 'usr/bin', 'usr/sbin', 'opt', 'opt/bench'):
        add_dir(d)
    add_dir('tmp', 0o1777)
    with open(BUSYBOX, 'rb') as f:
        add_file('bin/busybox', f.read(), 0o755)
    for applet in _applets():
        if applet not in ('init',):
            add_link('bin/' + applet, 'busybox')
    add_link('sbin/init', '../bin/busybox')
    add_file('etc/inittab', INITTAB)
    add_file('etc/hostname', b'busybox\n')
    add_file('etc/passwd', b'root:x:0:0:root:/root:/bin/sh\n')
    add_file('etc/group', b'root:x:0:\n')
    add_file(MARKER_PATH, MARKER)
    for path, data in extra_files:
        add_file(path, data)
    return entries


def _metadata(description):
    return yaml.safe_dump({
        'architecture': os.uname().machine,
        'creation_date': EPOCH,
        'properties': {'os': 'busybox', 'release': '1.35', 'description': description},
        'templates': {'/etc/hostname': {'when': ['create', 'copy'],
                                        'template': 'hostname.tpl'}},
    }).encode()


def _write_unified(path, description, extra_files=(), compress=True):
    tmp = path + '.tmp'
    with tarfile.open(tmp, 'w:gz' if compress else 'w', format=tarfile.GNU_FORMAT) as tar:
        for name, data, mode in (('metadata.yaml', _metadata(description), 0o644),
                                 ('templates/hostname.tpl', b'{{ container.name }}\n', 0o644)):
            if name.startswith('templates/'):
                info = tarfile.TarInfo('templates')
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
                tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, EPOCH
            tar.addfile(info, io.BytesIO(data))
        for info, data in busybox_rootfs_entries(extra_files):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    os.replace(tmp, path)


def _cached(name, build):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, name)
    if not os.path.exists(path):
        build(path)
    return path


def _project_images():
    """tests/images.py, the project's image tool, when it exists."""
    try:
        from tests import images
        return images
    except ImportError:
        return None


def busybox():
    """The small image every lifecycle scenario launches (about 1 MB compressed).

    tests/images.py's busybox image (the project's own, as users get it) when that tool exists,
    else one built here from the same /bin/busybox.
    """
    tool = _project_images()
    if tool is not None and hasattr(tool, 'busybox_image'):
        return Image('bench-busybox', str(tool.busybox_image()),
                     'busybox (nova-lxd-image build busybox)')
    return Image('bench-busybox',
                 _cached('busybox.tar.gz', lambda p: _write_unified(p, 'busybox benchmark')),
                 'busybox (static, %s)' % BUSYBOX)


def big(size_mb=200):
    """busybox plus an incompressible blob: the 200 MB container of publish, copy and migration."""
    def build(path):
        # Deterministic pseudo-random bytes, so every build has the same fingerprint.
        blob = bytearray()
        seed = b'nova-lxd-bench'
        while len(blob) < size_mb << 20:
            seed = hashlib.sha512(seed).digest()
            blob += hashlib.shake_256(seed).digest(1 << 20)
        _write_unified(path, 'busybox + %d MB blob' % size_mb,
                       extra_files=[(BIG_BLOB_PATH, bytes(blob[:size_mb << 20]))], compress=False)
    return Image('bench-big', _cached('busybox-%dm.tar' % size_mb, build),
                 'busybox + %d MB incompressible file' % size_mb)


def debian():
    """Debian 12 minbase with systemd as init.

    From tests/images.py when it offers one (shared cache with the tests), else built once with
    the project's image tool (debootstrap, about a minute).
    """
    tool = _project_images()
    builder = getattr(tool, 'debian_image', None) if tool else None
    if builder is not None:
        path = str(builder())
    else:
        from nova_lxd.image import debian as debian_tool
        from nova_lxd.image import pack
        name = debian_tool.image_name(debian_tool.DEFAULT_RELEASE, 'systemd',
                                      pack.host_architecture(), [], 'gz')
        path = os.path.join(CACHE, name)
        if not os.path.exists(path):
            path, _ = debian_tool.build(CACHE)
    return Image('bench-debian', path, 'Debian 12 minbase + systemd')


def _in_rootfs(name):
    """'rootfs/bin/sh' -> 'bin/sh', 'rootfs' -> '', anything else -> None."""
    name = name[2:] if name.startswith('./') else name
    if name.rstrip('/') == 'rootfs':
        return ''
    if name.startswith('rootfs/') and '..' not in name.split('/'):
        return name[len('rootfs/'):]
    return None


def rootfs_dir(image, dest, uid_base=0, gid_base=0):
    """Unpack an image's rootfs into dest/ for raw liblxc, ids shifted by the given bases.

    Returns the image's metadata properties (its halt signal, for one). Device nodes are skipped:
    liblxc's autodev makes /dev.
    """
    os.makedirs(dest, exist_ok=True)
    properties = {}
    with tarfile.open(image.path) as tar:
        for member in tar:
            if member.name.lstrip('./') == 'metadata.yaml':
                properties = yaml.safe_load(tar.extractfile(member)).get('properties') or {}
                continue
            rel = _in_rootfs(member.name)
            if rel is None:
                continue
            path = os.path.join(dest, rel)
            if member.isdir():
                os.makedirs(path, exist_ok=True)
            elif member.issym():
                os.symlink(member.linkname, path)
            elif member.islnk():
                os.link(os.path.join(dest, _in_rootfs(member.linkname)), path)
            elif member.isfile():
                with tar.extractfile(member) as src, open(path, 'wb') as f:
                    shutil.copyfileobj(src, f, 1 << 20)
            else:
                continue
            os.lchown(path, uid_base + member.uid, gid_base + member.gid)
            if not member.issym():
                os.chmod(path, member.mode)
    return properties
