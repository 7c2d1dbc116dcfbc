"""Resize, cold migration and the live-migration pre-checks.

Resize and cold migration share one flow, whatever the destination:
  migrate_disk_and_power_off (source): stop; check a shrinking root disk still holds the data;
      rename the container to `<name>-resize` (the revert copy); create `<name>` on the
      destination from it: a local copy on the same host, else a pull over HTTPS between the
      two backends ([lxd] migration_endpoints / migration_server_certs / client_cert).
  finish_migration (destination): apply the new flavor's limits and NICs; start.
  confirm_migration (source): delete `<name>-resize`.
  finish_revert_migration (source, after Nova destroyed `<name>` on the destination): rename
      `<name>-resize` back and start it, untouched.
A failure before the destination holds a complete copy puts the source back as it was
(renamed back, started if it ran) and raises InstanceFaultRollback, so Nova recovers.

Live migration: stateful moves need CRIU on both backends, which these backends do not offer;
the pre-check refuses with an actionable message and touches nothing. `[lxd]
allow_stateless_live_migration` lets an operator accept a stateless move instead (stop, transfer,
start: the instance's processes restart).
"""
import shutil

from oslo_log import log as logging
from pylxd import exceptions as lxd_exceptions
import pylxd
from pylxd import client as pylxd_client

from nova import exception
from nova.i18n import _
from nova.objects import base as obj_base
from nova.objects import migrate_data as migrate_data_obj

from nova_lxd.virt import client as lxd_client
from nova_lxd.virt import conf
from nova_lxd.virt import flavor as lxd_flavor
from nova_lxd.virt import vif as lxd_vif

CONF = conf.CONF
LOG = logging.getLogger(__name__)
REVERT_SUFFIX = '-resize'


def revert_name(instance):
    return instance.name + REVERT_SUFFIX


def _not_found(exc):
    return getattr(getattr(exc, 'response', None), 'status_code', None) == 404


def find(client, name):
    try:
        return client.instances.get(name)
    except lxd_exceptions.LXDAPIException as exc:
        if _not_found(exc):
            return None
        raise


def peer_client(host):
    """A pylxd client for `host`'s backend over HTTPS, as the migration options describe it."""
    url = CONF.lxd.migration_endpoints.get(host)
    if not url or not url.startswith('https://'):
        raise exception.MigrationError(reason=_(
            'no HTTPS endpoint for host %(host)s in [lxd] migration_endpoints (host:https-URL '
            'of every compute host\'s backend); moves between hosts need it') % {'host': host})
    verify = CONF.lxd.migration_server_certs.get(host) or True
    cert = (CONF.lxd.client_cert, CONF.lxd.client_key) if CONF.lxd.client_cert else None
    try:
        session = pylxd_client.get_session_for_url(url, verify=verify, cert=cert)
        # REQUESTS_CA_BUNDLE in the environment would otherwise replace the pinned certificate
        session.trust_env = False
        client = pylxd.Client(endpoint=url, cert=cert, verify=verify,
                              timeout=CONF.lxd.timeout, session=session)
    except lxd_exceptions.ClientConnectionFailed as exc:
        raise exception.MigrationError(reason=_('cannot reach the backend of %(host)s at '
                                                '%(url)s: %(error)s') %
                                       {'host': host, 'url': url, 'error': exc})
    if not client.trusted:
        raise exception.MigrationError(reason=_(
            'the backend of %(host)s at %(url)s does not trust [lxd] client_cert; add it to '
            'that backend\'s trust store') % {'host': host, 'url': url})
    return client


def dest_compute(context, instance, dest_ip):
    """The destination's host name (Nova hands the driver only its IP)."""
    from nova import objects
    mig_ctx = instance.migration_context if 'migration_context' in instance else None
    if mig_ctx is not None and mig_ctx.migration_id:
        return objects.Migration.get_by_id(context, mig_ctx.migration_id).dest_compute
    if dest_ip in CONF.lxd.migration_endpoints:
        return dest_ip
    raise exception.MigrationError(reason=_('cannot tell which host %s is') % dest_ip)


# -- root disk size --------------------------------------------------------------------------

def used_bytes(container):
    """Bytes the container's root filesystem holds, or None when nothing can tell.

    A running container is measured inside (du): a pool's own count (btrfs quota groups) can
    lag behind what the guest has just written. A stopped one has the backend's count.
    """
    if container.status == 'Running':
        result = container.execute(['du', '-skx', '/'])
        if result.exit_code == 0:
            return int(result.stdout.split()[0]) * 1024
    try:
        root = (container.state().disk or {}).get('root') or {}
    except lxd_exceptions.LXDAPIException:
        return None
    return int(root['usage']) if root.get('usage') else None


def check_root_fits(container, instance, new_flavor):
    """Refuse (before anything changes) a root disk smaller than the data on it."""
    old_gb, new_gb = instance.flavor.root_gb, new_flavor.root_gb
    if not new_gb or (old_gb and new_gb >= old_gb):
        return
    used = used_bytes(container)
    if used is None:
        return
    if used > new_gb * 1024 ** 3:
        raise exception.InstanceFaultRollback(exception.ResizeError(reason=_(
            'the root disk of %(name)s holds %(used).1f GiB, more than the %(new)d GB of flavor '
            '%(flavor)s; free space in the instance or choose a flavor with a larger disk') %
            {'name': instance.name, 'used': used / 1024.0 ** 3, 'new': new_gb,
             'flavor': new_flavor.name}))


# -- moving the container ----------------------------------------------------------------------

def transfer(source_client, source_name, dest_client, dest_name, same_host):
    """Create dest_name on the destination backend as a copy of the (stopped) source_name."""
    if same_host:
        source_client.instances.create(
            {'name': dest_name, 'source': {'type': 'copy', 'source': source_name,
                                           'instance_only': True}}, wait=True)
        return
    source = source_client.instances.get(source_name)
    data = source.generate_migration_data()
    data['name'] = dest_name
    data.pop('epehemeral', None)   # pylxd's typo; the target would reject the unknown key
    data['source']['instance_only'] = True
    dest_client.instances.create(data, wait=True)


def _remove_partial(client, name):
    try:
        partial = find(client, name)
        if partial is not None:
            partial.delete(wait=True)
    except Exception:
        LOG.exception('Could not remove the partial copy %s', name)


def migrate_disk_and_power_off(client, instance, dest_host, new_flavor, stop):
    """Source side of resize / cold migration; see the module docstring."""
    container = client.instances.get(instance.name)
    source_host = instance.host
    same_host = dest_host == source_host
    check_root_fits(container, instance, new_flavor)
    was_running = container.status != 'Stopped'
    # Reach both backends before anything changes, so a bad configuration changes nothing.
    if same_host:
        src_client = dest_client = client
    else:
        try:
            src_client, dest_client = peer_client(source_host), peer_client(dest_host)
        except exception.MigrationError as exc:
            raise exception.InstanceFaultRollback(exc)
    stop(container)
    lxd_client.rename_instance(container, revert_name(instance))
    try:
        transfer(src_client, revert_name(instance), dest_client, instance.name, same_host)
    except Exception as exc:
        LOG.error('Moving %s to %s failed: %s; the source is put back', instance.name,
                  dest_host, exc, instance=instance)
        _remove_partial(dest_client, instance.name)
        restored = client.instances.get(revert_name(instance))
        lxd_client.rename_instance(restored, instance.name)
        if was_running:
            restored.start(wait=True)
        raise exception.InstanceFaultRollback(exception.MigrationError(reason=_(
            'moving %(name)s to %(dest)s failed: %(error)s') %
            {'name': instance.name, 'dest': dest_host, 'error': exc}))
    return ''


def apply_flavor(client, instance, network_info):
    """Give the moved container the instance's (new) flavor and this host's NICs."""
    container = client.instances.get(instance.name)
    pool = container.devices.get('root', {}).get('pool') or CONF.lxd.pool
    definition = lxd_flavor.instance_config(
        instance, instance.flavor, pool, client.storage_pools.get(pool).driver,
        nics=lxd_vif.nic_devices(network_info))
    config = {k: v for k, v in container.config.items()
              if not k.startswith(('limits.', 'security.'))}
    config.update(definition['config'])
    devices = {k: v for k, v in container.devices.items() if v.get('type') != 'nic'}
    devices.update(definition['devices'])
    container.config, container.devices = config, devices
    container.save(wait=True)
    return container


def confirm(client, instance):
    """Drop the revert copy left on the source."""
    backup = find(client, revert_name(instance))
    if backup is not None:
        backup.delete(wait=True)


def revert(client, instance):
    """The revert copy becomes the instance again (untouched since the move); returns it."""
    current = find(client, instance.name)
    backup = find(client, revert_name(instance))
    if backup is None:
        if current is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return current          # a retried revert: already renamed back
    if current is not None:     # Nova destroys the destination copy first; be sure of it
        if current.status != 'Stopped':
            current.stop(force=True, wait=True)
        current.delete(wait=True)
    lxd_client.rename_instance(backup, instance.name)
    return client.instances.get(instance.name)


# -- live migration ----------------------------------------------------------------------------

def refuse_stateful(instance):
    """The pre-check's verdict when stateless moves are not allowed."""
    criu = shutil.which('criu')
    raise exception.MigrationPreCheckError(reason=_(
        'live migration of container %(name)s needs checkpoint/restore (CRIU) on both '
        'backends, and %(why)s; the instance was not touched and keeps running. Use cold '
        'migration (openstack server migrate), or set [lxd] allow_stateless_live_migration = '
        'True on the compute hosts to accept a stateless move that restarts the instance\'s '
        'processes') % {'name': instance.name,
                        'why': _('CRIU is not installed on this host') if not criu else
                        _('nova-lxd does not drive CRIU checkpoints')})


@obj_base.NovaObjectRegistry.register
class LXDLiveMigrateData(migrate_data_obj.LiveMigrateData):
    """What the pre-checks hand on (nothing LXD-specific yet: the move is stateless)."""
    VERSION = '1.0'


def live_migrate_data():
    data = LXDLiveMigrateData()
    data.is_volume_backed = False
    return data


def stateless_move(client, instance, dest_host, stop):
    """Stop, transfer to dest_host under the same name, delete the source copy.

    Returns True when the instance is on dest_host (stopped, to be started there), False when
    the move failed and the source was put back (started again if it ran).
    """
    container = client.instances.get(instance.name)
    was_running = container.status != 'Stopped'
    src_client, dest_client = peer_client(instance.host), peer_client(dest_host)
    stop(container)
    try:
        transfer(src_client, instance.name, dest_client, instance.name, False)
    except Exception as exc:
        LOG.error('Stateless move of %s to %s failed: %s; restarting it here', instance.name,
                  dest_host, exc, instance=instance)
        _remove_partial(dest_client, instance.name)
        if was_running:
            container.start(wait=True)
        return False
    container.delete(wait=True)
    return True
