"""LXDDriver: Nova's compute driver for system containers, over the LXD REST API (pylxd).

Thin by design: each method orchestrates; the modules beside it do the work (flavor, image, vif,
configdrive, host, events). Calls on one instance are serialised by a per-instance lock; calls on
different instances run in parallel.

Suspend and resume freeze and thaw the container's processes (cgroup freezer) rather than
checkpointing them to disk: CRIU does not work on the hosts this driver targets, so a suspended
container keeps its memory. Nova reports it as SUSPENDED all the same.
"""
import functools
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging
from pylxd import exceptions as lxd_exceptions

from nova.compute import power_state
from nova import exception
from nova.i18n import _
from nova.objects import diagnostics as diagnostics_obj
from nova.virt import driver
from nova.virt import hardware

from nova_lxd.virt import client as lxd_client
from nova_lxd.virt import conf
from nova_lxd.virt import configdrive
from nova_lxd.virt import events
from nova_lxd.virt import flavor as lxd_flavor
from nova_lxd.virt import host as lxd_host
from nova_lxd.virt import password
from nova_lxd.virt import storage
from nova_lxd.virt import image as lxd_image
from nova_lxd.virt import vif as lxd_vif
from nova_lxd.virt import interfaces as lxd_interfaces
from nova_lxd.virt import migration as lxd_migration
from nova_lxd.virt import snapshot as lxd_snapshot
from nova_lxd.virt import volumes as lxd_volumes
from nova_lxd.virt import rescue as lxd_rescue
from nova_lxd.virt import serial as lxd_serial
from nova_lxd.virt import device_metadata

CONF = conf.CONF
LOG = logging.getLogger(__name__)

POWER_STATES = {
    'Running': power_state.RUNNING,
    'Stopped': power_state.SHUTDOWN,
    'Frozen': power_state.PAUSED,
    'Error': power_state.CRASHED,
}


def _not_found(exc):
    return getattr(getattr(exc, 'response', None), 'status_code', None) == 404


def locked(func):
    """Serialise calls on one instance (the `instance` argument)."""
    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        instance = kwargs.get('instance')
        if instance is None:
            instance = next(a for a in args if hasattr(a, 'uuid'))
        with lockutils.lock('nova-lxd-instance-%s' % instance.uuid):
            return func(self, *args, **kwargs)
    return wrapper


class LXDDriver(driver.ComputeDriver):
    capabilities = dict(
        driver.ComputeDriver.capabilities,
        has_imagecache=True,
        supports_trusted_certs=True,   # Glance signature verification on download
        supports_multiattach=False,
        supports_extend_volume=True,   # a block device grows in place (test_volumes)
        supports_attach_interface=True,   # test_interfaces
        supports_device_tagging=True,   # tagged NICs: device_metadata.py (test_device_tagging)
        supports_tagged_attach_interface=True,
        supports_tagged_attach_volume=True,   # tagged volumes too (test_device_tagging)
        supports_evacuate=True,   # rebuilt from the image: pools are not shared (test_evacuate)
        supports_migrate_to_same_host=False,
        supports_image_type_raw=True,  # raw in Glance's terms: the container tarballs we accept
    )

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        self.client = None
        self._listener = None
        self._serial = lxd_serial.SerialConsoles(self._connect)

    # -- host ---------------------------------------------------------------------------------

    def _connect(self):
        if self.client is None:
            self.client = lxd_client.connect()
        return self.client

    def init_host(self, host):
        client = self._connect()
        env = client.host_info['environment']
        LOG.info('Connected to the LXD API at %s (%s %s)', lxd_client.endpoint(),
                 env.get('server'), env.get('server_version'))
        missing = lxd_host.missing_extensions(client)
        if missing:
            raise exception.HypervisorUnavailable(
                host=host, reason=_('the LXD API at %(endpoint)s lacks API extensions nova-lxd '
                                    'needs: %(missing)s') % {
                    'endpoint': lxd_client.endpoint(),
                    'missing': '; '.join('%s (%s)' % item for item in sorted(missing.items()))})
        lxd_host.pool_info(client)   # the pool must exist before anything is scheduled here
        self._reconcile_after_restart()
        if CONF.lxd.listen_events and self._listener is None:
            self._listener = events.Listener(client, self.emit_event, self._uuid_of)
            self._listener.start()

    def _reconcile_after_restart(self):
        """Undo what a crash mid-spawn may have left on this host.

        Containers themselves are Nova's to judge (its power-state sync and
        resume_guests_state_on_host_boot use list_instances/get_info); here the driver drops
        half-downloaded images and config drives of containers that no longer exist.
        """
        lxd_image.remove_partial_downloads()
        known = set(self.list_instance_uuids())
        configdrive.remove_orphans(known)

    def cleanup_host(self, host):
        self._serial.release_all()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def _uuid_of(self, name):
        try:
            return self.client.instances.get(name).config.get(lxd_flavor.UUID_KEY)
        except lxd_exceptions.LXDAPIException:
            return None

    def get_available_nodes(self, refresh=False):
        return [CONF.host]

    def get_available_resource(self, nodename):
        return lxd_host.available_resource(self._connect(), nodename)

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        existing = provider_tree.data(nodename).inventory
        ratios = self._get_allocation_ratios(existing)
        provider_tree.update_inventory(
            nodename, lxd_host.inventory(self._connect(), existing, ratios))

    def get_host_ip_addr(self):
        return CONF.my_ip

    def get_host_uptime(self):
        return lxd_host.uptime()

    def get_host_cpu_stats(self):
        return lxd_host.cpu_stats()

    def _nova_instances(self):
        return [i for i in self._connect().instances.all() if lxd_flavor.UUID_KEY in i.config
                and not lxd_rescue.is_rescue_container(i.config)]

    def list_instances(self):
        return [i.name for i in self._nova_instances()]

    def list_instance_uuids(self):
        return [i.config[lxd_flavor.UUID_KEY] for i in self._nova_instances()]

    def instance_exists(self, instance):
        return self._connect().instances.exists(instance.name)

    def get_num_instances(self):
        return len(self._nova_instances())

    # -- helpers ------------------------------------------------------------------------------

    def _get(self, instance):
        try:
            return self._connect().instances.get(instance.name)
        except lxd_exceptions.LXDAPIException as exc:
            if _not_found(exc):
                raise exception.InstanceNotFound(instance_id=instance.uuid)
            raise

    def _stop(self, container, timeout=0, retry_interval=0):
        """Clean shutdown within timeout, resent every retry_interval, then forced."""
        if container.status == 'Frozen':
            container.unfreeze(wait=True)
        deadline = time.monotonic() + timeout
        while timeout and time.monotonic() < deadline:
            chunk = max(1, int(min(retry_interval or timeout, deadline - time.monotonic())))
            try:
                container.stop(force=False, timeout=chunk, wait=True)
                return
            except lxd_exceptions.LXDAPIException as exc:
                LOG.debug('Clean stop of %s not finished: %s', container.name, exc)
                container.sync()
                if container.status == 'Stopped':
                    return
        self._force_stop(container)

    @staticmethod
    def _force_stop(container):
        """Forced stop; a clean stop the backend is still finishing is waited for."""
        def stop():
            container.sync()
            if container.status != 'Stopped':
                try:
                    container.stop(force=True, wait=True)
                except lxd_exceptions.LXDAPIException as exc:
                    # a clean stop that timed out for the client can still end on the backend
                    # between the check and the kill (LXD 5.0.2 in a rescue): stopped is done
                    if 'already stopped' not in str(exc).lower():
                        raise
        # a stop lost with a restarting backend is checked and sent again
        lxd_client.until_done('stopping %s' % container.name, stop)

    def _start(self, instance, network_info, block_device_info=None):
        container = self._get(instance)
        if container.status == 'Frozen':
            container.unfreeze(wait=True)
        elif container.status != 'Running':
            self._plug(instance, network_info)
            lxd_volumes.reconnect(container, block_device_info)
            lxd_vif.wait_for_stale_host_ends(network_info)
            _start_container(container)

    def _plug(self, instance, network_info):
        for vif in network_info or []:
            lxd_vif.plug(instance, vif)

    def _unplug(self, instance, network_info):
        for vif in network_info or []:
            lxd_vif.unplug(instance, vif)

    def _neutron_failed(self, event_name, instance):
        LOG.error('Neutron reported failure on event %s', event_name, instance=instance)
        if CONF.vif_plugging_is_fatal:
            raise exception.VirtualInterfaceCreateException()

    # -- lifecycle ----------------------------------------------------------------------------

    @locked
    def spawn(self, context, instance, image_meta, injected_files, admin_password, allocations,
              network_info=None, block_device_info=None, power_on=True, accel_info=None):
        client = self._connect()
        if client.instances.exists(instance.name):
            raise exception.InstanceExists(name=instance.name)
        lxd_volumes.refuse_root_volume(block_device_info)
        pool_driver = lxd_host.pool_driver(client)
        definition = lxd_flavor.instance_config(
            instance, instance.flavor, CONF.lxd.pool, pool_driver,
            nics=lxd_vif.nic_devices(network_info))
        alias = lxd_image.ensure_image(client, context, instance, image_meta)
        definition['source'] = {'type': 'image', 'alias': alias}
        created = volumes = drive = None
        try:
            timeout = CONF.vif_plugging_timeout
            with self.virtapi.wait_for_instance_event(
                    instance, lxd_vif.plugged_events(network_info) if timeout else [],
                    timeout=timeout, error_callback=self._neutron_failed):
                self._plug(instance, network_info)
            definition['devices'].update(
                storage.create_ephemeral(client, instance, CONF.lxd.pool, pool_driver))
            definition['devices'].update(lxd_volumes.connect_at_boot(block_device_info))
            volumes = block_device_info
            instance.device_metadata = device_metadata.build(context, instance, network_info)
            if configdrive.required(instance):
                # written while the backend creates the container (configdrive.Pending)
                drive = configdrive.prepare(instance, injected_files, admin_password,
                                            network_info)
                definition['devices'][configdrive.DEVICE] = configdrive.device(instance)
            created = lxd_client.create_instance(client, definition)
            if drive is not None:
                drive.finish(owner=configdrive.root_owner(created.config))
            if power_on:
                _start_container(created)
        except Exception:
            if drive is not None:
                drive.abandon()
            if created is not None:
                _rollback(instance, self._delete_container, created)
            if volumes:
                _rollback(instance, lxd_volumes.disconnect_all, volumes)
            _rollback(instance, storage.delete_ephemeral, client, instance, CONF.lxd.pool)
            _rollback(instance, self._unplug, instance, network_info)
            _rollback(instance, configdrive.remove, instance)
            raise
        LOG.info('Spawned container %s', instance.name, instance=instance)

    def _delete_container(self, container):
        self._force_stop(container)
        # LXD finishes its own stop bookkeeping after a failed start before a delete may run
        lxd_client.until_done('deleting %s' % container.name,
                              lambda: lxd_client.delete_instance(container))

    @locked
    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        self._serial.release(instance.uuid)
        lxd_rescue.remove(self._connect(), instance, self._delete_container)
        try:
            self._delete_container(self._get(instance))
        except exception.InstanceNotFound:
            LOG.debug('Container already gone', instance=instance)
        lxd_volumes.disconnect_all(block_device_info)
        self._cleanup(instance, network_info, destroy_disks)

    def cleanup(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, migrate_data=None, destroy_vifs=True, destroy_secrets=True):
        self._cleanup(instance, network_info if destroy_vifs else None, destroy_disks)

    def _cleanup(self, instance, network_info, destroy_disks=True):
        self._unplug(instance, network_info)
        if destroy_disks:
            storage.delete_ephemeral(self._connect(), instance, CONF.lxd.pool)
        configdrive.remove(instance)

    @locked
    def reboot(self, context, instance, network_info, reboot_type, block_device_info=None,
               bad_volumes_callback=None, accel_info=None, share_info=None):
        container = self._get(instance)
        if reboot_type == 'SOFT' and container.status == 'Running':
            try:
                container.restart(force=False, timeout=CONF.lxd.soft_reboot_timeout, wait=True)
                return
            except lxd_exceptions.LXDAPIException as exc:
                LOG.warning('Soft reboot failed (%s); rebooting hard', exc, instance=instance)
                container.sync()
        if container.status == 'Running':
            container.restart(force=True, wait=True)
        else:
            self._start(instance, network_info, block_device_info)

    @locked
    def power_off(self, instance, timeout=0, retry_interval=0):
        container = self._get(instance)
        if container.status != 'Stopped':
            self._stop(container, timeout, retry_interval)

    @locked
    def power_on(self, context, instance, network_info, block_device_info=None, accel_info=None,
                 share_info=None):
        self._start(instance, network_info, block_device_info)

    @locked
    def pause(self, instance):
        container = self._get(instance)
        if container.status != 'Frozen':
            container.freeze(wait=True)

    @locked
    def unpause(self, instance):
        container = self._get(instance)
        if container.status == 'Frozen':
            container.unfreeze(wait=True)

    @locked
    def suspend(self, context, instance):
        """Freeze (no CRIU here; see the module docstring)."""
        container = self._get(instance)
        if container.status != 'Frozen':
            container.freeze(wait=True)

    @locked
    def resume(self, context, instance, network_info, block_device_info=None, share_info=None):
        self._start(instance, network_info, block_device_info)

    @locked
    def resume_state_on_host_boot(self, context, instance, network_info, share_info,
                                  block_device_info=None):
        if not lxd_rescue.resume(self._connect(), instance, _start_container):
            self._start(instance, network_info, block_device_info)

    # -- rescue, soft delete (issue 7: rescue.py) ----------------------------------------------

    @locked
    def rescue(self, context, instance, network_info, image_meta, rescue_password,
               block_device_info, share_info):
        lxd_rescue.rescue(self._connect(), context, instance, self._get(instance), image_meta,
                          rescue_password, network_info, self._stop, self._delete_container,
                          _start_container)

    @locked
    def unrescue(self, context, instance):
        lxd_rescue.unrescue(self._connect(), instance, self._get(instance), self._stop,
                            self._delete_container)
        self._start(instance, instance.get_network_info())

    @locked
    def soft_delete(self, instance):
        """Kept, stopped: restore() starts it again, the reclaim task destroys it."""
        container = self._get(instance)
        if container.status != 'Stopped':
            self._stop(container, CONF.shutdown_timeout, 10)

    @locked
    def restore(self, instance):
        self._start(instance, instance.get_network_info())

    def poll_rebooting_instances(self, timeout, instances):
        """Nothing to poll: reboot() returns only once the container runs again."""
        return None

    def get_info(self, instance, use_cache=True):
        container = self._get(instance)
        if container.status == 'Stopped':   # while rescued, the rescue container's state counts
            container = lxd_rescue.find(self._connect(), instance) or container
        return hardware.InstanceInfo(state=POWER_STATES.get(container.status,
                                                            power_state.NOSTATE),
                                     internal_id=container.name)

    def _state(self, instance):
        try:
            return self._connect().api.instances[instance.name].state.get().json()['metadata']
        except lxd_exceptions.LXDAPIException as exc:
            if _not_found(exc):
                raise exception.InstanceNotFound(instance_id=instance.uuid)
            raise

    def get_diagnostics(self, instance):
        state = self._state(instance)
        diags = {'cpu_time_ns': (state.get('cpu') or {}).get('usage', 0),
                 'memory_usage_bytes': (state.get('memory') or {}).get('usage', 0),
                 'processes': state.get('processes', 0)}
        for name, nic in (state.get('network') or {}).items():
            counters = nic.get('counters') or {}
            diags['%s_rx' % name] = counters.get('bytes_received', 0)
            diags['%s_tx' % name] = counters.get('bytes_sent', 0)
        return diags

    def get_instance_diagnostics(self, instance):
        state = self._state(instance)
        container = self._get(instance)
        diags = diagnostics_obj.Diagnostics(
            state=power_state.STATE_MAP[POWER_STATES.get(container.status,
                                                         power_state.NOSTATE)],
            hypervisor='lxd', hypervisor_os='linux',
            config_drive=configdrive.DEVICE in container.devices)
        if instance.launched_at:
            diags.uptime = int(time.time() - instance.launched_at.timestamp())
        diags.add_cpu(id=0, time=(state.get('cpu') or {}).get('usage', 0))
        for name, nic in sorted((state.get('network') or {}).items()):
            if nic.get('type') == 'loopback':
                continue
            c = nic.get('counters') or {}
            diags.add_nic(mac_address=nic.get('hwaddr') or None,
                          rx_octets=c.get('bytes_received'), rx_packets=c.get('packets_received'),
                          rx_errors=c.get('errors_received'),
                          rx_drop=c.get('packets_dropped_inbound'),
                          tx_octets=c.get('bytes_sent'), tx_packets=c.get('packets_sent'),
                          tx_errors=c.get('errors_sent'),
                          tx_drop=c.get('packets_dropped_outbound'))
        memory = state.get('memory') or {}
        diags.memory_details = diagnostics_obj.MemoryDiagnostics(
            maximum=instance.flavor.memory_mb, used=int(memory.get('usage', 0)) // (1024 ** 2))
        return diags

    def get_console_output(self, context, instance):
        self._get(instance)
        name = lxd_rescue.console_name(self._connect(), instance)   # while rescued: its own
        try:
            response = self._connect().api.instances[name].console.get()
        except lxd_exceptions.LXDAPIException as exc:
            # LXD creates the log file only when the guest first writes to its console: an
            # instance that has printed nothing yet has no output, not an error.
            if 'no such file' not in str(exc).lower():
                raise
            return ''
        data = response.content[-CONF.lxd.console_log_max_bytes:]
        return data.decode('utf-8', 'replace')

    def get_serial_console(self, context, instance):
        """A TCP port on this host bridged to the container's console (serial.py)."""
        container = self._get(instance)
        if container.status != 'Running':
            raise exception.InstanceNotReady(instance_id=instance.uuid)
        return self._serial.console(
            instance.uuid, lambda client: lxd_rescue.console_name(client, instance))

    @locked
    def set_admin_password(self, instance, new_pass):
        """chpasswd in the container; images without it (busybox) get /etc/shadow edited."""
        container = self._get(instance)
        if container.status != 'Running':
            raise exception.InstanceNotRunning(instance_id=instance.uuid)
        user = instance.image_meta.properties.get('os_admin_user', 'root')
        if not password.valid_user(user):
            raise exception.InstancePasswordSetFailed(
                instance=instance.uuid, reason=_('invalid os_admin_user %s') % user)
        try:
            result = container.execute(['chpasswd'], stdin_payload='%s:%s\n' % (user, new_pass))
        except lxd_exceptions.LXDAPIException as exc:
            if 'not found' not in str(exc).lower():
                raise
            result = None
        if result is None or result.exit_code == 127:
            result = container.execute(password.shadow_command(user),
                                       stdin_payload=password.hash_password(new_pass) + '\n')
        if result.exit_code != 0:
            raise exception.InstancePasswordSetFailed(
                instance=instance.uuid, reason=result.stderr.strip() or
                _('exit status %d') % result.exit_code)

    # -- images -------------------------------------------------------------------------------

    def manage_image_cache(self, context, all_instances):
        lxd_image.remove_unused(self._connect(), all_instances)

    # -- networking ---------------------------------------------------------------------------

    def plug_vifs(self, instance, network_info):
        self._plug(instance, network_info)

    def unplug_vifs(self, instance, network_info):
        self._unplug(instance, network_info)

    # -- snapshot, resize, migration (issue 7: snapshot.py, migration.py) ----------------------

    @locked
    def snapshot(self, context, instance, image_id, update_task_state):
        try:
            container = self._get(instance)
        except exception.InstanceNotFound:
            # the compute manager (and the driver contract) read a vanished instance this way
            raise exception.InstanceNotRunning(instance_id=instance.uuid)
        lxd_snapshot.snapshot(context, container, image_id, update_task_state)

    @locked
    def migrate_disk_and_power_off(self, context, instance, dest, flavor, network_info,
                                   block_device_info=None, timeout=0, retry_interval=0):
        dest_host = lxd_migration.dest_compute(context, instance, dest)
        disk_info = lxd_migration.migrate_disk_and_power_off(
            self._connect(), instance, dest_host, flavor,
            lambda container: self._stop(container, timeout, retry_interval))
        # moved: the volumes leave this host (finish_* connects them where the instance starts)
        lxd_volumes.disconnect_all(block_device_info)
        return disk_info

    @locked
    def finish_migration(self, context, migration, instance, disk_info, network_info,
                         image_meta, resize_instance, allocations, block_device_info=None,
                         power_on=True, share_info=None):
        lxd_migration.apply_flavor(self._connect(), instance, network_info)
        if power_on:
            self._start(instance, network_info, block_device_info)

    @locked
    def confirm_migration(self, context, migration, instance, network_info):
        lxd_migration.confirm(self._connect(), instance)
        if migration.source_compute != migration.dest_compute:
            self._unplug(instance, network_info)

    @locked
    def finish_revert_migration(self, context, instance, network_info, migration,
                                block_device_info=None, power_on=True, share_info=None):
        lxd_migration.revert(self._connect(), instance)
        if power_on:
            self._start(instance, network_info, block_device_info)

    def check_can_live_migrate_destination(self, context, instance, src_compute_info,
                                           dst_compute_info, block_migration=False,
                                           disk_over_commit=False):
        if not CONF.lxd.allow_stateless_live_migration:
            lxd_migration.refuse_stateful(instance)
        return lxd_migration.live_migrate_data()

    def cleanup_live_migration_destination_check(self, context, dest_check_data):
        pass

    def check_can_live_migrate_source(self, context, instance, dest_check_data,
                                      block_device_info=None):
        if not CONF.lxd.allow_stateless_live_migration:
            lxd_migration.refuse_stateful(instance)
        return dest_check_data

    def pre_live_migration(self, context, instance, block_device_info, network_info, disk_info,
                           migrate_data):
        lxd_volumes.connect_for_move(block_device_info)   # Cinder's connections for this host
        return migrate_data

    def live_migration(self, context, instance, dest, post_method, recover_method,
                       block_migration=False, migrate_data=None):
        """Stateless ([lxd] allow_stateless_live_migration): the instance's processes restart."""
        with lockutils.lock('nova-lxd-instance-%s' % instance.uuid):
            moved = lxd_migration.stateless_move(
                self._connect(), instance, dest,
                lambda container: self._stop(container, CONF.shutdown_timeout, 10))
        if moved:
            post_method(context, instance, dest, block_migration, migrate_data)
        else:
            recover_method(context, instance, dest, migrate_data)

    def post_live_migration(self, context, instance, block_device_info, migrate_data=None):
        lxd_volumes.disconnect_all(block_device_info)   # the source's connections: moved away

    def post_live_migration_at_source(self, context, instance, network_info):
        self._unplug(instance, network_info)

    @locked
    def post_live_migration_at_destination(self, context, instance, network_info,
                                           block_migration=False, block_device_info=None):
        lxd_migration.apply_flavor(self._connect(), instance, network_info)
        self._start(instance, network_info, block_device_info)   # this host's volume devices

    def rollback_live_migration_at_destination(self, context, instance, network_info,
                                               block_device_info, destroy_disks=True,
                                               migrate_data=None):
        self.destroy(context, instance, network_info, block_device_info, destroy_disks)

    # -- interfaces (issue 7: interfaces.py) ----------------------------------------------------

    @locked
    def attach_interface(self, context, instance, image_meta, vif):
        lxd_interfaces.attach(self._get(instance), instance, vif)
        self._update_device_metadata(context, instance)

    @locked
    def detach_interface(self, context, instance, vif):
        lxd_interfaces.detach(self._get(instance), instance, vif)
        self._update_device_metadata(context, instance, leaving_macs=[vif['address']])

    @staticmethod
    def _update_device_metadata(context, instance, **leaving):
        instance.device_metadata = device_metadata.build(
            context, instance, instance.get_network_info(), **leaving)
        instance.save()

    # -- volumes (issue 7: volumes.py, os-brick) ------------------------------------------------

    def get_volume_connector(self, instance):
        return lxd_volumes.connector_properties()

    @locked
    def attach_volume(self, context, connection_info, instance, mountpoint, disk_bus=None,
                      device_type=None, encryption=None):
        lxd_volumes.attach(self._get(instance), connection_info, mountpoint)
        self._update_device_metadata(context, instance)

    @locked
    def detach_volume(self, context, connection_info, instance, mountpoint, encryption=None):
        try:
            container = self._get(instance)
        except exception.InstanceNotFound:
            # the destination of a failed live migration: only its connection is removed
            lxd_volumes.detach(None, connection_info, mountpoint)
            return
        lxd_volumes.detach(container, connection_info, mountpoint)
        self._update_device_metadata(context, instance, leaving_paths=[mountpoint])

    @locked
    def swap_volume(self, context, old_connection_info, new_connection_info, instance,
                    mountpoint, resize_to):
        lxd_volumes.swap(self._get(instance), old_connection_info, new_connection_info,
                         mountpoint, resize_to)
        # Nova records the swap in its BDM only after this returns
        device_metadata.refresh_after_swap(context, instance)

    def extend_volume(self, context, connection_info, instance, requested_size):
        return lxd_volumes.extend(connection_info)


def _start_container(container):
    """Start; when the backend cannot, its LXC log of the instance says why (in our log)."""
    try:
        lxd_client.start_instance(container)
    except lxd_exceptions.LXDAPIException:
        try:
            log = container.client.api.instances[container.name].logs['lxc.log'].get().text
        except Exception as exc:   # the start error matters more than a missing log
            log = 'no LXC log (%s)' % exc
        LOG.error('Starting %s failed; the end of its LXC log:\n%s', container.name,
                  '\n'.join(log.splitlines()[-15:]))
        raise


def _rollback(instance, func, *args):
    """One undo step of a failed spawn; its own error is logged so the first error wins."""
    try:
        func(*args)
    except Exception:
        LOG.exception('Rollback step %s failed', func.__name__, instance=instance)
