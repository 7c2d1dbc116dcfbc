"""Nova snapshots of containers: a backend snapshot, published as an image, uploaded to Glance.

A running container is not stopped: the backend takes a copy-on-write snapshot (freezing the
container for the moment it takes), the image is published from that snapshot, and the
container keeps running throughout. The snapshot and the published image are backend-side
scratch: both are removed whether the upload succeeds or fails.
"""
import contextlib
import uuid

from oslo_log import log as logging

from nova.compute import task_states
from nova.image import glance

from nova_lxd.virt import client as lxd_client

LOG = logging.getLogger(__name__)
IMAGE_API = glance.API()

# How the uploaded image is described in Glance: an LXD unified tarball, which image.py
# recognises from its bytes when a server boots from it.
DISK_FORMAT = 'raw'
CONTAINER_FORMAT = 'bare'
IMAGE_FORMAT_PROPERTY = 'lxd_image_format'


def glance_metadata(container, snapshot_meta):
    """Glance metadata for the uploaded snapshot: formats plus what the container carries."""
    properties = dict(snapshot_meta.get('properties') or {})
    properties[IMAGE_FORMAT_PROPERTY] = 'unified'
    properties.setdefault('hw_architecture', container.architecture)
    return {
        'name': snapshot_meta.get('name'),
        'disk_format': DISK_FORMAT,
        'container_format': CONTAINER_FORMAT,
        'properties': properties,
    }


@contextlib.contextmanager
def _scratch_snapshot(container):
    name = 'nova-snapshot-%s' % uuid.uuid4().hex[:12]
    snap = lxd_client.create_snapshot(container, name)
    try:
        yield snap
    finally:
        with _logged('deleting snapshot %s' % name):
            snap.delete(wait=True)


@contextlib.contextmanager
def _published(snap):
    # the snapshot's name is unique: the image's alias tells a lost publish that it was done
    image = lxd_client.publish_snapshot(snap, alias=snap.name)
    try:
        yield image
    finally:
        with _logged('deleting published image %s' % image.fingerprint):
            image.delete(wait=True)


@contextlib.contextmanager
def _logged(what):
    """Cleanup steps log their own failure so the original error (if any) is the one raised."""
    try:
        yield
    except Exception:
        LOG.exception('Snapshot cleanup failed: %s', what)


def snapshot(context, container, image_id, update_task_state):
    """Snapshot `container` into the Glance image `image_id` (created by the API already)."""
    snapshot_meta = IMAGE_API.get(context, image_id)
    update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
    with _scratch_snapshot(container) as snap:
        with _published(snap) as image:
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            with contextlib.closing(image.export()) as data:
                IMAGE_API.update(context, image_id, glance_metadata(container, snapshot_meta),
                                 data=data, purge_props=False)
    LOG.info('Snapshot of %s uploaded as image %s', container.name, image_id)
