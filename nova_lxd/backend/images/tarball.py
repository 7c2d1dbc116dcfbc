"""Image tarballs: compression detection, a validating read of every member, safe extraction.

An image is checked member by member once, when it is imported; only then is it stored. The checks
refuse what could make the daemon write outside the directory it unpacks into (absolute names, `..`,
a member reached through a symlink, a hard link to something that is not a regular file of the same
image) and what an image must not carry (device nodes). Extraction later uses GNU tar (fast, and
with its own defences) on the validated, immutable file.
"""
import functools
import posixpath
import subprocess

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.images import streams
from nova_lxd.backend.images import tarstream

# (magic bytes, offset, name) of what an uploaded file may be.
_MAGIC = [
    (b'\x1f\x8b', 0, 'gzip'),
    (b'\xfd7zXZ\x00', 0, 'xz'),
    (b'BZh', 0, 'bzip2'),
    (b'\x28\xb5\x2f\xfd', 0, 'zstd'),
    (b'hsqs', 0, 'squashfs'),
    (b'ustar', 257, 'tar'),
]

# metadata.yaml is small; refuse a huge one rather than parse it.
MAX_METADATA_BYTES = 1 << 20
MAX_TEMPLATE_BYTES = 1 << 20

UNIFIED_TOP = ('metadata.yaml', 'rootfs', 'templates')
METADATA_TOP = ('metadata.yaml', 'templates')


def detect_format(path):
    """'gzip', 'xz', 'bzip2', 'zstd', 'squashfs' or 'tar'; BadRequest for anything else."""
    with open(path, 'rb') as f:
        head = f.read(512)
    for magic, offset, name in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    raise BadRequest('Unsupported image file: not a tarball (plain, gzip, xz, bzip2) or squashfs')


class TarContent:
    """What a validated tarball holds: its member names and the small files the store needs."""

    def __init__(self):
        self.names = set()
        self.metadata_yaml = None
        self.templates = {}       # file name under templates/ -> bytes
        self.has_rootfs = False


def _clean_name(raw):
    name = raw
    while name.startswith('./'):
        name = name[2:]
    name = name.rstrip('/')
    if raw.startswith('/'):
        raise BadRequest('Invalid image tarball: absolute path %r' % raw)
    parts = name.split('/')
    if '..' in parts:
        raise BadRequest('Invalid image tarball: path %r contains ".."' % raw)
    return '/'.join(p for p in parts if p not in ('', '.'))


def scan(path, layout, fmt=None):
    """Read every member header of a tarball, refuse what is unsafe, return a TarContent.

    layout: 'unified' (metadata.yaml, rootfs/, templates/), 'metadata' (metadata.yaml,
    templates/) or 'rootfs' (the root filesystem itself, at the top of the archive).
    One pass: C-speed decompression feeding a strict header reader (tarstream), which reads
    the data only of metadata.yaml and templates; the rest of the stream is then decompressed
    to its end, so that a corrupt tail (a gzip CRC, a truncated xz) is refused too.
    """
    fmt = fmt or detect_format(path)
    if fmt == 'squashfs':
        raise BadRequest('A squashfs file is only accepted as the rootfs of a split image')
    content = TarContent()
    kinds = {}        # cleaned name -> 'dir' | 'file' | 'symlink' | 'other'
    try:
        with streams.chunks(path, fmt) as decompressed:
            read_chunk = functools.partial(next, decompressed, b'')
            for member in tarstream.walk(read_chunk):
                _check_member(member, layout, kinds, content)
            for _ in decompressed:
                pass
    except streams.ERRORS as exc:
        raise BadRequest('Corrupt or truncated image tarball: %s' % (exc or type(exc).__name__))
    if not kinds:
        raise BadRequest('Invalid image tarball: it is empty')
    if layout != 'rootfs' and content.metadata_yaml is None:
        raise BadRequest('Invalid image tarball: no metadata.yaml')
    if layout == 'unified' and not content.has_rootfs:
        raise BadRequest('Invalid image tarball: no rootfs/ directory')
    return content


def _check_member(member, layout, kinds, content):
    name = _clean_name(member.name)
    kind = member.type
    if not name:        # the archive's own '.' entry
        if kind != tarstream.DIRECTORY:
            raise BadRequest('Invalid image tarball: top-level entry is not a directory')
        return
    top = name.split('/', 1)[0]
    allowed = {'unified': UNIFIED_TOP, 'metadata': METADATA_TOP}.get(layout)
    if allowed is not None and top not in allowed:
        raise BadRequest('Invalid image tarball: unexpected entry %r (expected only %s)'
                         % (member.name, ', '.join(allowed)))
    # No member may be reached through a link: extraction would follow it out of the tree.
    parent = name
    while '/' in parent:
        parent = parent.rsplit('/', 1)[0]
        if kinds.get(parent, 'dir') != 'dir':
            raise BadRequest('Invalid image tarball: %r lies beneath %r, which is not a directory'
                             % (member.name, parent))
    if kinds.get(name) == 'dir' and kind != tarstream.DIRECTORY:
        raise BadRequest('Invalid image tarball: %r replaces a directory' % member.name)
    in_rootfs = layout == 'rootfs' or top == 'rootfs'
    if layout != 'rootfs':
        if name in ('rootfs', 'templates') and kind != tarstream.DIRECTORY:
            raise BadRequest('Invalid image tarball: %r must be a directory' % member.name)
        if name == 'metadata.yaml' and kind != tarstream.REGULAR:
            raise BadRequest('Invalid image tarball: metadata.yaml must be a regular file')
    if kind in (tarstream.CHAR, tarstream.BLOCKDEV):
        raise BadRequest('Invalid image tarball: device node %r (images may not carry devices)'
                         % member.name)
    if kind == tarstream.SYMLINK:
        if not in_rootfs:
            raise BadRequest('Invalid image tarball: symlink %r outside rootfs/' % member.name)
        _check_symlink(name, member.linkname, layout)
        kinds[name] = 'symlink'
    elif kind == tarstream.HARDLINK:
        try:
            target = _clean_name(member.linkname)
        except BadRequest as exc:
            raise BadRequest('Invalid image tarball: hard link %r: %s'
                             % (member.name, str(exc).split(': ', 1)[-1]))
        if kinds.get(target) != 'file':
            raise BadRequest('Invalid image tarball: hard link %r points to %r, which is not a '
                             'regular file earlier in the image' % (member.name, member.linkname))
        if in_rootfs != (layout == 'rootfs' or target.split('/', 1)[0] == 'rootfs'):
            raise BadRequest('Invalid image tarball: hard link %r crosses out of rootfs/'
                             % member.name)
        kinds[name] = 'file'
    elif kind == tarstream.DIRECTORY:
        kinds[name] = 'dir'
    elif kind == tarstream.REGULAR:
        kinds[name] = 'file'
        _keep_small_file(name, member, layout, content)
    elif kind == tarstream.FIFO:
        if not in_rootfs:
            raise BadRequest('Invalid image tarball: fifo %r outside rootfs/' % member.name)
        kinds[name] = 'other'
    else:
        raise BadRequest('Invalid image tarball: unsupported member type of %r' % member.name)
    if top == 'rootfs':
        content.has_rootfs = True
    content.names.add(name)


def _check_symlink(name, target, layout):
    """A relative symlink must stay inside the rootfs; absolute ones resolve in the container."""
    if target.startswith('/'):
        return
    depth_base = name if layout == 'rootfs' else name.split('/', 1)[1] if '/' in name else ''
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(depth_base), target))
    if resolved == '..' or resolved.startswith('../'):
        raise BadRequest('Invalid image tarball: symlink %r -> %r points outside the rootfs'
                         % (name, target))


def _keep_small_file(name, member, layout, content):
    if layout == 'rootfs':
        return
    if name == 'metadata.yaml':
        if member.size > MAX_METADATA_BYTES:
            raise BadRequest('Invalid image: metadata.yaml is larger than %d bytes'
                             % MAX_METADATA_BYTES)
        content.metadata_yaml = member.read()
    elif name.startswith('templates/'):
        if member.size > MAX_TEMPLATE_BYTES:
            raise BadRequest('Invalid image: template %r is too large' % name)
        content.templates[name[len('templates/'):]] = member.read()


# -- extraction --------------------------------------------------------------------------------

def extract(path, dest):
    """Unpack a validated tarball into the existing directory dest (numeric ids, modes, xattrs)."""
    fmt = detect_format(path)
    cmd = ['tar', '-C', dest, '-x', '-f', path, '--numeric-owner', '--preserve-permissions',
           '--same-owner', '--xattrs', '--xattrs-include=*', '--no-overwrite-dir']
    if fmt == 'zstd':
        cmd.append('--zstd')
    _run(cmd, 'unpack image')


def extract_squashfs(path, dest):
    """Unpack a squashfs rootfs into dest (which must not exist yet)."""
    _run(['unsquashfs', '-n', '-f', '-d', dest, path], 'unpack squashfs rootfs')


def check_squashfs(path):
    """Refuse a squashfs rootfs that is corrupt or carries device nodes."""
    proc = subprocess.run(['unsquashfs', '-n', '-lls', path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BadRequest('Corrupt squashfs rootfs: %s' % (proc.stderr.strip()[-300:] or
                                                          'unsquashfs failed'))
    for line in proc.stdout.splitlines():
        if line[:1] in ('c', 'b') and 'squashfs-root' in line:
            name = line.split('squashfs-root', 1)[-1]
            raise BadRequest('Invalid image: device node %r in the squashfs rootfs' % name)


def _run(cmd, what):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError('Failed to %s: %s' % (what, proc.stderr.strip()[-500:]))
