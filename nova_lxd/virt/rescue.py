"""Rescue and unrescue: a second container boots, the instance's root filesystem mounted in it.

While an instance is rescued:
- its own container is stopped and its config, data and non-network devices stay as they
  were;
- a rescue container `<instance name>-rescue` runs from the rescue image (the instance's own
  image when Nova names none), with the instance's flavor limits and the instance's root
  filesystem bind-mounted read-write at [lxd] rescue_path (/mnt/rescue by default);
- the rescue container has the instance's network: the instance's nic devices, the same
  names, MACs and host ends, so it is reachable on the instance's ports (Neutron's port
  security lets exactly those MACs through). LXD refuses a MAC that another instance's nic
  carries, even a stopped one's, so the nics move: they are copied into the rescue container
  and kept in its config (user.nova.rescue_nics), then removed from the instance's
  container; unrescue puts the very same devices back before the instance starts;
- the rescue container shares the instance's id map (an isolated map is pinned to the
  instance's base), so files keep their owners;
- get_info reports the rescue container's power state, and get_console_output its console,
  as Nova expects of a RESCUED instance.

The rescue container carries the instance's uuid key (anything that cleans up an instance's
containers finds it) and a rescue marker, by which list_instances leaves it out. Unrescue and
destroy delete it; a rescue that fails gives the nics back and deletes what it created. The
steps are ordered so that a crash at any point leaves the nics on one of the two containers
(the rescue container keeps a copy until it is deleted), and the next rescue or unrescue
finishes the job.

The root filesystem is reached as a host path, so the backend must run on this host (as for
the config drive). The path follows LXD's pool layout: dir pools, and btrfs pools on the loop
file the backend created (<data>/disks/<pool>.img mounted at <data>/storage-pools/<pool>).
"""
import json
import os

from oslo_log import log as logging
from pylxd import exceptions as lxd_exceptions

from nova import exception
from nova.i18n import _

from nova_lxd.virt import conf
from nova_lxd.virt import flavor as lxd_flavor
from nova_lxd.virt import image as lxd_image
from nova_lxd.virt import password
from nova_lxd.virt import vif as lxd_vif

CONF = conf.CONF
LOG = logging.getLogger(__name__)
KEY = 'user.nova.rescue_of'     # on the rescue container: the name of the instance it rescues
NICS_KEY = 'user.nova.rescue_nics'   # on the rescue container: the instance's nic devices (JSON)
DEVICE = 'rescue-root'
SUFFIX = '-rescue'


def name(instance):
    return instance.name + SUFFIX


def is_rescue_container(config):
    return KEY in config


def find(client, instance):
    """The instance's rescue container, or None."""
    try:
        container = client.instances.get(name(instance))
    except lxd_exceptions.LXDAPIException as exc:
        if getattr(getattr(exc, 'response', None), 'status_code', None) == 404:
            return None
        raise
    return container if container.config.get(KEY) == instance.name else None


def rootfs_path(pool, instance):
    """Host path of the instance's root filesystem in the backend's pool."""
    source = pool.config.get('source') or ''
    if pool.driver == 'dir' and os.path.isabs(source):
        pool_dir = source
    elif pool.driver == 'btrfs' and source.endswith('/disks/%s.img' % pool.name):
        pool_dir = os.path.join(os.path.dirname(os.path.dirname(source)), 'storage-pools',
                                pool.name)
    else:
        raise exception.InstanceNotRescuable(
            instance_id=instance.uuid,
            reason=_('the root filesystem of %(name)s cannot be located on this host: '
                     'rescue supports dir pools and btrfs pools on the backend\'s loop file, '
                     'pool %(pool)s is %(driver)s with source %(source)r') %
            {'name': instance.name, 'pool': pool.name, 'driver': pool.driver,
             'source': source})
    return os.path.join(pool_dir, 'containers', instance.name, 'rootfs')


def _nics(container):
    return {key: dev for key, dev in container.devices.items() if dev.get('type') == 'nic'}


def _definition(instance, original, pool, alias, nics):
    definition = lxd_flavor.instance_config(instance, instance.flavor, pool.name, pool.driver)
    definition['name'] = name(instance)
    config = definition['config']
    config[KEY] = instance.name
    config[NICS_KEY] = json.dumps(nics, sort_keys=True)
    base = original.config.get('volatile.idmap.base')
    if config.get('security.idmap.isolated') == 'true' and base and base != '0':
        config['security.idmap.base'] = base   # the instance's own map: files keep owners
    definition['devices'].update(nics)
    definition['devices'][DEVICE] = {
        'type': 'disk', 'source': rootfs_path(pool, instance), 'path': CONF.lxd.rescue_path}
    definition['source'] = {'type': 'image', 'alias': alias}
    return definition


def _take_nics(original, nics):
    """The instance's (stopped) container lets go of the nics the rescue container now has."""
    if nics:
        original.sync()
        original.devices = {k: v for k, v in original.devices.items() if k not in nics}
        original.save(wait=True)


def _give_back_nics(container, original):
    """The instance's nics, as kept on the (stopped) rescue container, back on the instance.

    They leave the rescue container first: LXD refuses a MAC that another nic carries.
    """
    container.sync()
    nics = json.loads(container.config.get(NICS_KEY) or '{}')
    if any(key in container.devices for key in nics):
        container.devices = {k: v for k, v in container.devices.items() if k not in nics}
        container.save(wait=True)
    original.sync()
    missing = {k: v for k, v in nics.items() if k not in original.devices}
    if missing:
        original.devices = dict(original.devices, **missing)
        original.save(wait=True)


def _set_root_password(container, instance, new_pass):
    """Best effort, as in other drivers: a rescue image without /etc/shadow still rescues."""
    try:
        result = container.execute(password.shadow_command('root'),
                                   stdin_payload=password.hash_password(new_pass) + '\n')
        failed = result.exit_code != 0 and (result.stderr.strip() or result.exit_code)
    except lxd_exceptions.LXDAPIException as exc:
        failed = exc
    if failed:
        LOG.warning('The rescue password could not be set in %s: %s', container.name, failed,
                    instance=instance)


def rescue(client, context, instance, original, image_meta, rescue_password, network_info,
           stop, delete, start):
    """Stop `original` (the instance's container) and boot its rescue container.

    stop(container) stops, delete(container) stops and deletes, start(container) starts one;
    they are the driver's, which knows how to wait for a busy backend.
    """
    unrescue(client, instance, original, stop, delete)   # a rescue interrupted by a crash
    if original.status != 'Stopped':
        stop(original)
    pool = client.storage_pools.get(CONF.lxd.pool)
    meta = image_meta if 'id' in image_meta else instance.image_meta
    if 'id' not in meta or not meta.id:
        raise exception.InstanceNotRescuable(
            instance_id=instance.uuid, reason=_('no rescue image and no instance image'))
    alias = lxd_image.ensure_image(client, context, instance, meta)
    nics = _nics(original)
    definition = _definition(instance, original, pool, alias, nics)
    created = None
    try:
        # created while the instance still has its nics (LXD checks MACs at start, not here)
        created = client.instances.create(definition, wait=True)
        _take_nics(original, nics)
        lxd_vif.wait_for_stale_host_ends(network_info)   # the instance's own, just stopped
        start(created)
        if rescue_password:
            _set_root_password(created, instance, rescue_password)
    except Exception:
        if created is not None:
            try:
                stop(created)
                _give_back_nics(created, original)
                delete(created)
            except Exception:
                LOG.exception('Removing the failed rescue container failed', instance=instance)
        raise
    LOG.info('Rescue container %s runs with the root filesystem of %s at %s and its nics %s',
             created.name, instance.name, CONF.lxd.rescue_path, sorted(nics),
             instance=instance)


def unrescue(client, instance, original, stop, delete):
    """Give the instance's nics back to `original` and delete the rescue container, if any."""
    container = find(client, instance)
    if container is not None:
        if container.status != 'Stopped':
            stop(container)
        _give_back_nics(container, original)
        delete(container)
        LOG.info('Rescue container %s removed', container.name, instance=instance)


def remove(client, instance, delete):
    """Delete the instance's rescue container, if any (destroy: the nics go with it)."""
    container = find(client, instance)
    if container is not None:
        delete(container)
        LOG.info('Rescue container %s removed', container.name, instance=instance)


def console_name(client, instance):
    """The container whose console is the instance's: the rescue container while rescued."""
    container = find(client, instance)
    return container.name if container is not None else instance.name


def resume(client, instance, start):
    """After a host reboot: a rescued instance's rescue container runs again, not the instance.

    Returns whether the instance is rescued (then the instance's own container stays stopped).
    """
    container = find(client, instance)
    if container is None:
        return False
    if container.status != 'Running':
        start(container)
    return True
