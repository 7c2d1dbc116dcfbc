"""Glance images -> LXD images: format detection, a per-host cache under a lock, cleanup.

The cache lives in the backend's own image store: an image downloaded from Glance is imported
once and aliased by its Glance id, so later spawns from it start straight from the store.
Downloads go through nova.image.glance, which verifies Glance signatures when
[glance] verify_glance_signatures is set (with the instance's trusted certificates).
"""
import hashlib
import io
import os
import platform
import tarfile
import tempfile
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging
from oslo_utils import timeutils
import yaml

from nova import exception
from nova.i18n import _
from nova.image import glance

from nova_lxd.image import formats
from nova_lxd.virt import client as lxd_client
from nova_lxd.virt import conf

CONF = conf.CONF
LOG = logging.getLogger(__name__)
IMAGE_API = glance.API()

CACHE_DESCRIPTION = 'nova-lxd cache of Glance image %s'
SUPPORTED = _('an LXD unified tarball, a root filesystem tarball (root-tar: plain, gzip or xz) '
              'or a squashfs root filesystem')
DISK_FORMATS = ('qcow2', 'vmdk', 'vdi', 'vhd', 'vhdx', 'iso', 'ploop', 'ami', 'aki', 'ari')

UNIFIED, ROOT_TAR, SQUASHFS = 'unified', 'root-tar', 'squashfs'
_MAGIC = ((b'\x1f\x8b', 'gz'), (b'\xfd7zXZ\x00', 'xz'), (b'BZh', 'bz2'))


def detect_format(path):
    """What a downloaded image file is: UNIFIED, ROOT_TAR, SQUASHFS, or None."""
    with open(path, 'rb') as f:
        head = f.read(512)
    if head[:4] == b'hsqs':
        return SQUASHFS
    compressed = any(head.startswith(magic) for magic, _name in _MAGIC)
    if not compressed and head[257:262] != b'ustar':
        return None
    try:
        with tarfile.open(path, 'r:*') as tar:
            for count, member in enumerate(tar):
                name = member.name.lstrip('./')
                if name == 'metadata.yaml' or name == 'rootfs' or name.startswith('rootfs/'):
                    return UNIFIED
                if count >= 20:
                    break
    except (tarfile.TarError, EOFError, OSError):
        return None
    return ROOT_TAR


def container_properties(context, image_id):
    """halt_signal, reboot_signal and init_cmd among the Glance image's own properties.

    They are not ImageMetaProps fields (nova drops them from image_meta): read the record.
    """
    props = IMAGE_API.get(context, image_id).get('properties') or {}
    return {key: str(props[key]) for key in formats.CONTAINER_PROPERTIES if props.get(key)}


def metadata_tarball(image_meta, extra=None):
    """metadata.yaml for a root-tar or squashfs image, generated from the Glance properties.

    extra: more metadata properties (the image's container_properties).
    """
    props = image_meta.properties

    def prop(name):
        try:
            return props.get(name)
        except AttributeError:   # not an ImageMetaProps field
            return None

    meta = {
        'architecture': str(prop('hw_architecture') or platform.machine()),
        'creation_date': int(time.time()),
        'properties': {
            'description': image_meta.name if 'name' in image_meta else image_meta.id,
            'os': prop('os_distro') or 'unknown',
        },
    }
    meta['properties'].update(extra or {})
    data = yaml.safe_dump(meta).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        info = tarfile.TarInfo('metadata.yaml')
        info.size = len(data)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _disk_format(image_meta):
    return image_meta.disk_format if 'disk_format' in image_meta else None


def _convert_disk(image_meta, path, cache_dir, properties):
    """A raw or qcow2 disk image's Linux root filesystem as a unified tarball (issue 8).

    properties (the image's container_properties) override what the conversion recognises.
    """
    from nova_lxd.image import convert
    from nova_lxd.image import errors as image_errors
    out = path + '.unified.tar.gz'
    try:
        convert.disk_to_unified(path, out, properties=properties, workdir=cache_dir)
    except image_errors.ConvertRefused as exc:
        raise exception.ImageUnacceptable(
            image_id=image_meta.id,
            reason=_('%(fmt)s disk image cannot become a container: %(why)s; nova-lxd accepts '
                     '%(supported)s, or a raw/qcow2 disk holding a Linux root filesystem') %
            {'fmt': _disk_format(image_meta), 'why': exc, 'supported': SUPPORTED})
    os.unlink(path)
    return out


def _cached(client, alias):
    """Whether the backend has the alias (one request: the alias, not its image as well)."""
    try:
        client.api.images.aliases[alias].get()
    except Exception as exc:
        if _is_not_found(exc):
            return False
        raise
    return True


def _is_not_found(exc):
    response = getattr(exc, 'response', None)
    return getattr(response, 'status_code', None) == 404


def _sha256(path, prefix=b''):
    """The image fingerprint of the file at path (prefix: a split image's metadata tarball)."""
    digest = hashlib.sha256(prefix)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _import(client, path, fmt, image_meta, properties):
    metadata = None if fmt == UNIFIED else metadata_tarball(image_meta, properties)
    # the fingerprint is known before the upload: the same bytes may already be there under
    # another Glance id (shared), and an upload lost with a restarting backend may be done
    fingerprint = _sha256(path, metadata or b'')

    def uploaded():
        return client.images.get(fingerprint) if client.images.exists(fingerprint) else None

    def upload():
        with open(path, 'rb') as data:
            return client.images.create(data, metadata=metadata)
    return uploaded() or lxd_client.until_done('uploading image %s' % fingerprint, upload,
                                               done=uploaded)


def ensure_image(client, context, instance, image_meta):
    """The alias of the instance's image in the backend, importing it from Glance if needed."""
    image_id = image_meta.id
    with lockutils.lock('nova-lxd-image-%s' % image_id):
        if _cached(client, image_id):
            return image_id
        cache_dir = _download_dir()
        os.makedirs(cache_dir, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=image_id, dir=cache_dir)
        os.close(fd)
        downloaded = path
        try:
            IMAGE_API.download(context, image_id, dest_path=path,
                               trusted_certs=instance.trusted_certs
                               if 'trusted_certs' in instance else None)
            fmt = detect_format(path)
            # a unified tarball carries its own metadata.yaml; other formats get these
            properties = container_properties(context, image_id) if fmt != UNIFIED else {}
            if fmt is None and _disk_format(image_meta) in formats.CONVERTIBLE_DISK_FORMATS:
                path = _convert_disk(image_meta, path, cache_dir, properties)
                fmt = UNIFIED
            if fmt is None:
                raise exception.ImageUnacceptable(
                    image_id=image_id,
                    reason=_('disk_format %(fmt)s is not a container image; nova-lxd accepts '
                             '%(supported)s') % {'fmt': _disk_format(image_meta),
                                                 'supported': SUPPORTED})
            LOG.info('Importing Glance image %s (%s) into the backend', image_id, fmt,
                     instance=instance)
            image = _import(client, path, fmt, image_meta, properties)
            try:
                # an alias lost with a restarting backend may be there already
                lxd_client.until_done(
                    'aliasing image %s' % image.fingerprint,
                    lambda: image.add_alias(image_id, CACHE_DESCRIPTION % image_id) or True,
                    done=lambda: _cached(client, image_id) or None)
            except Exception:
                if not image.aliases:
                    image.delete(wait=True)
                raise
        finally:
            for leftover in {path, downloaded}:
                if os.path.exists(leftover):
                    os.unlink(leftover)
        return image_id


def _download_dir():
    return os.path.join(CONF.instances_path, '_lxd_images')


def remove_partial_downloads():
    """Files left in the download directory by an import that never finished."""
    directory = _download_dir()
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            LOG.info('Removing partial image download %s', name)
            os.unlink(os.path.join(directory, name))


def _last_used(image):
    stamps = [image.uploaded_at, image.last_used_at]
    parsed = []
    for stamp in stamps:
        if stamp and not stamp.startswith('0001-'):
            try:
                parsed.append(timeutils.normalize_time(timeutils.parse_isotime(stamp)))
            except ValueError:
                pass
    return max(parsed) if parsed else None


def cached_images(client):
    """{glance id: LXD image} for the images this driver imported."""
    cached = {}
    for image in client.images.all():
        for alias in image.aliases:
            if alias.get('description', '') == CACHE_DESCRIPTION % alias['name']:
                cached[alias['name']] = image
    return cached


def remove_unused(client, all_instances):
    """Delete cached images no instance uses once they are older than the configured age."""
    if not CONF.image_cache.remove_unused_base_images:
        return []
    in_use_ids = {inst.image_ref for inst in all_instances if inst.image_ref}
    in_use_fps = {i.config.get('volatile.base_image') for i in client.instances.all()}
    max_age = CONF.image_cache.remove_unused_original_minimum_age_seconds
    now = timeutils.utcnow()
    removed = []
    for image_id, image in cached_images(client).items():
        if image_id in in_use_ids or image.fingerprint in in_use_fps:
            continue
        used = _last_used(image)
        if used is not None and (now - used).total_seconds() < max_age:
            continue
        LOG.info('Removing cached image %s (%s): unused for %ss', image_id, image.fingerprint,
                 max_age)
        image.delete(wait=True)
        removed.append(image_id)
    return removed
