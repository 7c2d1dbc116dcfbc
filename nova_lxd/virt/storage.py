"""Instance storage beyond the root disk: the flavor's ephemeral disk as a custom pool volume.

The ephemeral disk is a custom volume `<instance name>-ephemeral0` in the instance's pool,
mounted at /mnt (where cloud-init and Nova's images expect it); its size is set where the pool
driver enforces sizes. It lives and dies with the instance.
"""
from oslo_log import log as logging

from nova_lxd.virt import flavor as lxd_flavor

LOG = logging.getLogger(__name__)
EPHEMERAL_DEVICE = 'ephemeral0'
EPHEMERAL_PATH = '/mnt'


def ephemeral_name(instance):
    return '%s-ephemeral0' % instance.name


def create_ephemeral(client, instance, pool, pool_driver):
    """Create the ephemeral volume if the flavor has one; return the devices to attach."""
    size = instance.flavor.ephemeral_gb
    if not size:
        return {}
    config = {}
    if pool_driver in lxd_flavor.SIZED_POOL_DRIVERS:
        config['size'] = '%dGB' % size
    name = ephemeral_name(instance)
    client.storage_pools.get(pool).volumes.create(
        {'name': name, 'type': 'custom', 'content_type': 'filesystem', 'config': config},
        wait=True)
    return {EPHEMERAL_DEVICE: {'type': 'disk', 'pool': pool, 'source': name,
                               'path': EPHEMERAL_PATH}}


def delete_ephemeral(client, instance, pool):
    """Delete the instance's ephemeral volume; absent is fine."""
    try:
        volume = client.storage_pools.get(pool).volumes.get('custom', ephemeral_name(instance))
    except Exception as exc:
        if getattr(getattr(exc, 'response', None), 'status_code', None) == 404:
            return
        raise
    volume.delete(wait=True)
