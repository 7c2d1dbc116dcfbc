"""`nova-lxd-image upload`: put an image into Glance with the formats the nova-lxd driver accepts.

Authentication is openstacksdk's: a clouds.yaml entry (--os-cloud / OS_CLOUD) or the standard
OS_* environment variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, ...).
"""
import os
import tarfile

import yaml

from nova_lxd.image import formats
from nova_lxd.image import pack
from nova_lxd.image.errors import ConvertRefused
from nova_lxd.image.errors import UploadError


def read_unified_metadata(path):
    """metadata.yaml of a unified tarball (it is the first member of ours, so this is cheap)."""
    try:
        with tarfile.open(path, 'r:*') as tar:
            for member in tar:
                if member.name.lstrip('./') == 'metadata.yaml' and member.isfile():
                    return yaml.safe_load(tar.extractfile(member).read(1 << 20)) or {}
    except (tarfile.TarError, OSError, EOFError, yaml.YAMLError) as exc:
        raise UploadError('%s is not a readable image tarball: %s' % (path, exc))
    raise UploadError('%s has no metadata.yaml: not an LXD unified tarball' % path)


def glance_fields(path):
    """(disk_format, container_format, properties) for the file at path.

    A unified tarball follows the convention in nova_lxd.image.formats and carries its
    architecture, os_distro and container properties; a raw or qcow2 disk image goes up as such
    (the driver converts it at boot) and needs architecture/os_distro given with --property.
    """
    with open(path, 'rb') as f:
        head = f.read(6)
    if head[:2] == b'\x1f\x8b' or head == b'\xfd7zXZ\x00':
        meta = read_unified_metadata(path)
        image_props = meta.get('properties') or {}
        props = {
            formats.PROP_IMAGE_FORMAT: formats.FORMAT_UNIFIED,
            'hypervisor_type': formats.HYPERVISOR_TYPE,
            'architecture': meta.get('architecture') or image_props.get('architecture'),
            'os_distro': (image_props.get('os') or '').lower() or None,
            'os_version': image_props.get('release'),
        }
        for key in formats.CONTAINER_PROPERTIES:
            if image_props.get(key):
                props[key] = str(image_props[key])
        return formats.DISK_FORMAT, formats.CONTAINER_FORMAT, props
    from nova_lxd.image import convert
    try:
        disk_format = convert.sniff_format(path)
    except ConvertRefused as exc:
        raise UploadError(str(exc))
    return disk_format, formats.CONTAINER_FORMAT, {'hypervisor_type': formats.HYPERVISOR_TYPE}


def upload(path, name, public=False, properties=None, cloud=None, connection=None):
    """Upload path to Glance as `name`; returns the image as a dict (id, name, ...)."""
    if not os.path.isfile(path):
        raise UploadError('%s is not a file' % path)
    disk_format, container_format, props = glance_fields(path)
    props.update(properties or {})
    props = {k: v for k, v in props.items() if v is not None}
    if connection is None:
        import openstack
        try:
            connection = openstack.connect(cloud=cloud)
        except Exception as exc:   # openstacksdk raises several config error types
            raise UploadError('cannot configure the OpenStack connection (OS_* variables or '
                              'clouds.yaml): %s' % exc)
    fingerprint = pack.sha256_file(path)
    try:
        image = connection.image.create_image(
            name, filename=path, disk_format=disk_format, container_format=container_format,
            visibility='public' if public else 'private', sha256=fingerprint, **props)
    except Exception as exc:
        raise UploadError('Glance upload failed: %s' % exc)
    return {'id': image.id, 'name': image.name, 'disk_format': disk_format,
            'container_format': container_format, 'properties': props,
            'fingerprint': fingerprint}
