"""Publish: an instance or snapshot directory packed as a unified image tarball.

Files of an unprivileged container belong to host ids (1000000 + n); the image must hold the ids
as the container sees them (n), so the packer maps every id it finds back through the instance's
idmap with GNU tar's --owner-map/--group-map (xattrs such as file capabilities are kept by tar).
A running container is frozen while its files are read: on a copy-on-write pool only for the
instant of a temporary snapshot, on `dir` for the whole copy.
"""
import logging
import os
import subprocess
import time
import uuid

from nova_lxd.backend.errors import BadRequest, NotFound
from nova_lxd.backend.images import metadata as image_metadata

LOG = logging.getLogger(__name__)

COMPRESSION_FLAGS = {
    'none': [], 'gzip': ['--gzip'], 'xz': ['--xz'], 'bzip2': ['--bzip2'], 'zstd': ['--zstd'],
}
SUFFIX = {'none': '.tar', 'gzip': '.tar.gz', 'xz': '.tar.xz', 'bzip2': '.tar.bz2',
          'zstd': '.tar.zst'}


def check_compression(value):
    if value not in COMPRESSION_FLAGS:
        raise BadRequest('Unsupported compression algorithm %r (one of %s)'
                         % (value, ', '.join(sorted(COMPRESSION_FLAGS))))
    return value


def image_metadata_for(path, properties, machine):
    """The new image's metadata: the instance's metadata.yaml (templates kept), dated now."""
    source = os.path.join(path, 'metadata.yaml')
    templates_dir = os.path.join(path, 'templates')
    if os.path.isfile(source):
        with open(source, 'rb') as f:
            present = set(os.listdir(templates_dir)) if os.path.isdir(templates_dir) else set()
            meta = image_metadata.parse(f.read(), present)
    else:
        meta = {'architecture': image_metadata.canonical_architecture(machine),
                'properties': {}, 'templates': {}, 'expiry_date': 0}
    meta['creation_date'] = int(time.time())
    meta['expiry_date'] = 0
    meta['properties'] = dict(meta['properties'], **(properties or {}))
    return meta


def _host_to_ns(idmap, kind):
    ranges = [(host, ns, count) for k, ns, host, count in idmap if k in (kind, 'b')]

    def shift(host_id):
        for host, ns, count in ranges:
            if host <= host_id < host + count:
                return ns + host_id - host
        return None
    return shift


def _id_maps(rootfs, idmap, workdir):
    """Write tar owner/group map files for every id found under rootfs; [] when unmapped."""
    if not idmap:
        return []
    uids, gids = set(), set()
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for entry in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            st = os.lstat(entry)
            uids.add(st.st_uid)
            gids.add(st.st_gid)
    args = []
    for kind, ids, option in (('u', uids, '--owner-map'), ('g', gids, '--group-map')):
        shift = _host_to_ns(idmap, kind)
        lines = []
        for host_id in sorted(ids):
            ns_id = shift(host_id)
            # an id outside the map is nobody inside the container: keep it so
            lines.append('+%d +%d' % (host_id, 65534 if ns_id is None else ns_id))
        map_file = os.path.join(workdir, option.strip('-'))
        with open(map_file, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        args.append('%s=%s' % (option, map_file))
    return args


def pack(path, workdir, meta, compression, idmap):
    """Write <workdir>/image<suffix> from path's rootfs/ and templates/ -> the file's path."""
    check_compression(compression)
    rootfs = os.path.join(path, 'rootfs')
    if not os.path.isdir(rootfs):
        raise NotFound('No root filesystem at %s' % path)
    meta_dir = os.path.join(workdir, 'meta')
    os.makedirs(meta_dir)
    with open(os.path.join(meta_dir, 'metadata.yaml'), 'w') as f:
        f.write(image_metadata.dump(meta))
    out = os.path.join(workdir, 'image' + SUFFIX[compression])
    cmd = ['tar', '-c', '-f', out, '--numeric-owner', '--xattrs', '--xattrs-include=*',
           '--sparse'] + COMPRESSION_FLAGS[compression] + _id_maps(rootfs, idmap, workdir)
    cmd += ['-C', meta_dir, 'metadata.yaml', '-C', path, 'rootfs']
    if os.path.isdir(os.path.join(path, 'templates')):
        cmd.append('templates')
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # 1 = "file changed as we read it": only on a live dir pool, and tar still wrote it whole
    if proc.returncode not in (0, 1):
        raise RuntimeError('Packing the image failed: %s' % proc.stderr.strip()[-500:])
    return out


# -- POST /1.0/images with source.type instance / snapshot ----------------------------------------

def parse_request(body):
    """(instance, snapshot or None, options) from a publish request; BadRequest when malformed."""
    source = body.get('source') or {}
    kind, name = source.get('type'), source.get('name')
    if not isinstance(name, str) or not name:
        raise BadRequest('source.name is required to publish an instance or snapshot')
    if kind == 'snapshot':
        if name.count('/') != 1:
            raise BadRequest('A snapshot source is named <instance>/<snapshot>')
        instance, snapshot = name.split('/')
    elif kind in ('instance', 'container'):
        if '/' in name:
            raise BadRequest('Use source.type "snapshot" to publish a snapshot')
        instance, snapshot = name, None
    else:
        raise BadRequest('Unsupported image source type %r' % (kind,))
    properties = body.get('properties') or {}
    if not isinstance(properties, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in properties.items()):
        raise BadRequest('properties must be a map of strings')
    aliases = body.get('aliases') or []
    if not isinstance(aliases, list) or not all(
            isinstance(a, dict) and isinstance(a.get('name'), str) for a in aliases):
        raise BadRequest('aliases must be a list of {"name": ..., "description": ...}')
    compression = body.get('compression_algorithm')
    if compression:
        check_compression(compression)
    public = body.get('public', False)
    if not isinstance(public, bool):
        raise BadRequest('public must be a boolean')
    return instance, snapshot, {'properties': properties, 'aliases': aliases,
                                'compression': compression or None, 'public': public,
                                'filename': body.get('filename') or ''}


def root_pool(instance_doc, default_pool):
    devices = instance_doc.get('expanded_devices') or instance_doc.get('devices') or {}
    for device in devices.values():
        if device.get('type') == 'disk' and device.get('path') == '/' and device.get('pool'):
            return device['pool']
    return default_pool


def check_source(daemon, instance):
    """NotFound before any operation starts when the instance does not exist."""
    instances = getattr(daemon, 'instances', None)
    if instances is None:
        raise BadRequest('Instances are not available in this daemon')
    if not instances.exists(instance):
        raise NotFound('Instance %r not found' % instance)


async def publish(daemon, instance, snapshot, options, op):
    """Make an image of an instance or one of its snapshots -> {'fingerprint': ..., 'size': ...}."""
    check_source(daemon, instance)
    instances = daemon.instances
    doc = await op.run_blocking(instances.get, instance)      # liblxc state: not on the loop
    driver = daemon.storage.pool(root_pool(doc, daemon.storage.default_pool()))
    idmap = instances.idmap(instance)
    running = await op.run_blocking(instances.is_running, instance)
    # a container the user froze stays frozen; otherwise it is frozen only while it must be
    thaw = doc.get('status') != 'Frozen'

    async def freeze():
        if thaw:
            await op.run_blocking(instances.freeze, instance)

    async def unfreeze():
        if thaw:
            await op.run_blocking(instances.unfreeze, instance)

    def pack_dir(path):
        if not os.path.isdir(path):
            raise NotFound('Snapshot %s/%s not found' % (instance, snapshot))
        return daemon.images.import_directory(path, idmap=idmap, **options)

    if snapshot is not None:
        fingerprint = await op.run_blocking(pack_dir, driver.snapshot_path(instance, snapshot))
    elif not running:
        fingerprint = await op.run_blocking(pack_dir, instances.instance_dir(instance))
    elif driver.copy_on_write:
        temporary = 'publish-' + uuid.uuid4().hex[:12]
        await freeze()
        try:
            await op.run_blocking(driver.create_snapshot, instance, temporary)
        finally:
            await unfreeze()
        try:
            fingerprint = await op.run_blocking(
                pack_dir, driver.snapshot_path(instance, temporary))
        finally:
            await op.run_blocking(driver.delete_snapshot, instance, temporary)
    else:
        await freeze()
        try:
            fingerprint = await op.run_blocking(pack_dir, instances.instance_dir(instance))
        finally:
            await unfreeze()
    return {'fingerprint': fingerprint, 'size': daemon.images.get(fingerprint)['size']}
