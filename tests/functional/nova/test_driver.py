"""LXDDriver called directly (as the compute manager would) against a real backend.

What Nova's contract suite and the API harness do not reach: image formats and the image cache,
flavor quotas applied for real, rollback of a failed spawn, lifecycle events from the backend,
clean power-off, passwords, console bounds and diagnostics.
"""
import io
import os
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from unittest import mock

from nova import context as nova_context
from nova import exception
from nova import objects
from nova import test
from nova.tests import fixtures as nova_fixtures
from nova.tests.unit import utils as test_utils
from nova.virt import event as virtevent
from nova.virt import fake

from nova_lxd.virt import driver as lxd_driver
from nova_lxd.virt import events
from tests.functional.nova import backends
from tests.functional.nova import base
from tests.functional.nova import busybox_image


def _squashfs_image():
    """A squashfs root filesystem made from the busybox root tarball."""
    path = os.path.join(busybox_image.CACHE, 'busybox-rootfs-v2.squashfs')
    if not os.path.exists(path):
        with tempfile.TemporaryDirectory(dir='/var/tmp') as tmp:
            with tarfile.open(busybox_image.root_tarball('gz')) as tar:
                tar.extractall(tmp)
            subprocess.run(['mksquashfs', tmp, path + '.tmp', '-quiet', '-noappend',
                            '-all-root'], check=True)
        os.rename(path + '.tmp', path)
    return busybox_image.read(path)


class _DriverTest(test.TestCase):
    __test__ = False
    backend_name = None

    def setUp(self):
        super().setUp()
        self.daemon = backends.get(self.backend_name)
        self.flags(endpoint=self.daemon.socket, listen_events=False, group='lxd')
        self.flags(instances_path=self.useFixture(nova_fixtures.TempDir()).path
                   if hasattr(nova_fixtures, 'TempDir') else tempfile.mkdtemp())
        self.flags(vif_plugging_timeout=0)
        self.glance = self.useFixture(nova_fixtures.GlanceFixture(self))
        self.ctxt = nova_context.get_admin_context()
        self.client = self.daemon.client()
        self.driver = lxd_driver.LXDDriver(fake.FakeVirtAPI())
        self.bridge = 'nlxdt%s' % uuid.uuid4().hex[:8]
        self.addCleanup(subprocess.run, ['ip', 'link', 'del', self.bridge], capture_output=True)
        self.addCleanup(self._remove_containers)

    def _remove_containers(self):
        for inst in self.client.instances.all():
            if 'user.nova.uuid' in inst.config:
                if inst.status != 'Stopped':
                    inst.stop(force=True, wait=True)
                inst.delete(wait=True)

    def _image(self, data, **props):
        return self.glance.create(self.ctxt, {
            'name': 'img', 'container_format': 'bare', 'disk_format': 'raw',
            'properties': props}, data=io.BytesIO(data))['id']

    def _instance(self, image_id, ephemeral_gb=0, **specs):
        flavor = objects.Flavor(self.ctxt, name='f%s' % uuid.uuid4().hex[:6],
                                flavorid=uuid.uuid4().hex, vcpus=1, memory_mb=128, root_gb=1,
                                ephemeral_gb=ephemeral_gb, swap=0, extra_specs=specs)
        flavor.create()
        inst = objects.Instance(self.ctxt, uuid=str(uuid.uuid4()), image_ref=image_id,
                                user_id=self.ctxt.user_id or 'u',
                                project_id=self.ctxt.project_id or 'p',
                                instance_type_id=flavor.id, flavor=flavor,
                                system_metadata={}, vcpus=1, memory_mb=128)
        inst.create()
        return inst

    def _network_info(self):
        nw = test_utils.get_test_network_info()
        nw[0]['type'] = 'bridge'
        nw[0]['network']['bridge'] = self.bridge
        nw[0]['devname'] = ('tap' + uuid.uuid4().hex)[:14]
        nw[0]['address'] = 'fa:16:3e:%02x:%02x:%02x' % tuple(os.urandom(3))
        return nw

    def _spawn(self, image_id, network_info=None, ephemeral_gb=0, **specs):
        inst = self._instance(image_id, ephemeral_gb, **specs)
        meta = objects.ImageMeta.from_dict(self.glance.show(self.ctxt, image_id))
        self.driver.spawn(self.ctxt, inst, meta, [], None, {}, network_info=network_info)
        return inst

    def _exec(self, inst, *command):
        result = self.client.instances.get(inst.name).execute(list(command))
        self.assertEqual(0, result.exit_code, result.stderr)
        return result.stdout.strip()

    # -- images -------------------------------------------------------------------------------

    def test_root_tar_and_squashfs_images_boot(self):
        images = [self._image(busybox_image.read(busybox_image.root_tarball('xz'))),
                  self._image(busybox_image.read(busybox_image.root_tarball(''))),
                  self._image(_squashfs_image())]
        for image_id in images:
            inst = self._spawn(image_id)
            self.assertEqual('busybox', self._exec(inst, 'cat', '/etc/hostname'))
            self.driver.destroy(self.ctxt, inst, [])

    def test_raw_disk_image_is_converted(self):
        with tempfile.TemporaryDirectory(dir='/var/tmp') as tmp:
            root = os.path.join(tmp, 'root')
            os.mkdir(root)
            with tarfile.open(busybox_image.root_tarball('gz')) as tar:
                tar.extractall(root)
            disk = os.path.join(tmp, 'disk.raw')
            subprocess.run(['truncate', '-s', '64M', disk], check=True)
            subprocess.run(['mkfs.ext4', '-q', '-d', root, disk], check=True)
            image_id = self._image(busybox_image.read(disk))
        inst = self._spawn(image_id)
        self.assertEqual('Running', self.client.instances.get(inst.name).status)
        self.assertIn('::sysinit:', self._exec(inst, 'cat', '/etc/inittab'))
        self.driver.destroy(self.ctxt, inst, [])
        self.assertEqual([], os.listdir(os.path.join(self.flags_instances_path(),
                                                     '_lxd_images')))

    def test_unsupported_image_is_refused_and_nothing_is_left(self):
        before = {i.fingerprint for i in self.client.images.all()}
        image_id = self._image(b'\x7fELF' + b'\0' * 4096)
        self.glance.update(self.ctxt, image_id, {'disk_format': 'vmdk'})
        inst = self._instance(image_id)
        meta = objects.ImageMeta.from_dict(self.glance.show(self.ctxt, image_id))
        error = self.assertRaises(exception.ImageUnacceptable, self.driver.spawn, self.ctxt,
                                  inst, meta, [], None, {}, network_info=[])
        self.assertIn('unified tarball', str(error))
        self.assertFalse(self.client.instances.exists(inst.name))
        self.assertEqual(before, {i.fingerprint for i in self.client.images.all()})

    def test_concurrent_spawns_download_once_and_cache_expires(self):
        data = busybox_image.read(busybox_image.root_tarball('gz'))
        image_id = self._image(data)
        downloads = []
        real_download = self.glance.download

        def counting_download(*args, **kwargs):
            downloads.append(image_id)
            return real_download(*args, **kwargs)
        self.glance.download = counting_download
        instances, errors = [], []

        def spawn():
            try:
                instances.append(self._spawn(image_id))
            except Exception as exc:   # reported below
                errors.append(exc)
        threads = [threading.Thread(target=spawn) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([], errors)
        self.assertEqual(1, len(downloads))
        cached = [i for i in self.client.images.all()
                  if any(a['name'] == image_id for a in i.aliases)]
        self.assertEqual(1, len(cached))
        # in use: kept whatever its age
        self.flags(remove_unused_original_minimum_age_seconds=0, group='image_cache')
        self.driver.manage_image_cache(self.ctxt, instances)
        self.assertTrue(self.client.images.exists(image_id, alias=True))
        for inst in instances:
            self.driver.destroy(self.ctxt, inst, [])
        # unused but young: kept; unused and old enough: removed
        self.flags(remove_unused_original_minimum_age_seconds=3600, group='image_cache')
        self.driver.manage_image_cache(self.ctxt, [])
        self.assertTrue(self.client.images.exists(image_id, alias=True))
        self.flags(remove_unused_original_minimum_age_seconds=0, group='image_cache')
        self.driver.manage_image_cache(self.ctxt, [])
        self.assertFalse(self.client.images.exists(image_id, alias=True))

    # -- flavors ------------------------------------------------------------------------------

    def test_cpu_quota_and_security_specs_reach_the_container(self):
        image_id = self._image(base.busybox_bytes())
        inst = self._spawn(image_id, **{'quota:cpu_quota': '20000', 'quota:cpu_period': '100000',
                                        'lxd:nested_allowed': 'true'})
        container = self.client.instances.get(inst.name)
        self.assertEqual('20ms/100ms', container.config['limits.cpu.allowance'])
        self.assertEqual('true', container.config['security.nesting'])
        self.assertEqual('Running', container.status)
        quota = self._exec(inst, 'sh', '-c', 'mkdir -p /tmp/cg && '
                           'mount -t cgroup -o cpu cpu /tmp/cg && '
                           'cat /tmp/cg/cpu.cfs_quota_us /tmp/cg/cpu.cfs_period_us; umount /tmp/cg')
        self.assertEqual(['20000', '100000'], quota.split())

    def test_unknown_lxd_extra_spec_fails_before_anything_is_made(self):
        image_id = self._image(base.busybox_bytes())
        self.assertRaises(exception.InvalidInput, self._spawn, image_id,
                          **{'lxd:turbo': 'true'})
        self.assertEqual([], self.driver.list_instances())

    def test_ephemeral_disk_lives_and_dies_with_the_instance(self):
        image_id = self._image(base.busybox_bytes())
        inst = self._spawn(image_id, ephemeral_gb=1)
        self.assertIn(' /mnt ', self._exec(inst, 'cat', '/proc/mounts'))
        self._exec(inst, 'sh', '-c', 'echo data > /mnt/file && chown root /mnt/file')
        pool = self.client.storage_pools.get('default')
        names = [v.name for v in pool.volumes.all() if v.type == 'custom']
        self.assertIn(inst.name + '-ephemeral0', names)
        self.driver.destroy(self.ctxt, inst, [])
        names = [v.name for v in pool.volumes.all() if v.type == 'custom']
        self.assertNotIn(inst.name + '-ephemeral0', names)

    # -- lifecycle ----------------------------------------------------------------------------

    def test_failed_start_removes_everything_spawn_made(self):
        image_id = self._image(base.busybox_bytes())
        nw = self._network_info()
        self.flags(force_config_drive=True)
        # the nic's host-side name is taken, so the backend cannot start the container
        subprocess.run(['ip', 'link', 'add', nw[0]['devname'], 'type', 'veth', 'peer', 'name',
                        nw[0]['devname'] + 'p'], check=True)
        self.addCleanup(subprocess.run, ['ip', 'link', 'del', nw[0]['devname']],
                        capture_output=True)
        inst = self._instance(image_id)
        meta = objects.ImageMeta.from_dict(self.glance.show(self.ctxt, image_id))
        # whichever error the backend gives, spawn must fail and undo its work
        self.assertRaises(Exception, self.driver.spawn, self.ctxt, inst,  # noqa: H202
                          meta, [], None, {}, network_info=nw)
        self.assertFalse(self.client.instances.exists(inst.name))
        self.assertFalse(os.path.exists(os.path.join(self.flags_instances_path(), inst.uuid)))

    def flags_instances_path(self):
        from nova_lxd.virt import conf
        return conf.CONF.instances_path

    def test_power_off_is_clean_within_timeout(self):
        image_id = self._image(base.busybox_bytes())
        inst = self._spawn(image_id)
        self.driver.power_off(inst, timeout=30, retry_interval=10)
        self.assertEqual('Stopped', self.client.instances.get(inst.name).status)
        # busybox init ran its shutdown action: the stop was clean, not a kill
        self.assertIn(busybox_image.SHUTDOWN_LINE,
                      self.driver.get_console_output(self.ctxt, inst))
        self.driver.power_on(self.ctxt, inst, [])
        self.assertEqual('Running', self.client.instances.get(inst.name).status)
        self.driver.destroy(self.ctxt, inst, [])
        self.driver.destroy(self.ctxt, inst, [])   # idempotent
        self.assertRaises(exception.InstanceNotFound, self.driver.get_info, inst)

    def test_forced_stop_of_an_instance_that_stopped_meanwhile(self):
        inst = self._spawn(self._image(base.busybox_bytes()))
        container = self.client.instances.get(inst.name)
        self.client.instances.get(inst.name).stop(force=True, wait=True)
        # the race: the driver's check saw it running, then it stopped before the kill
        with mock.patch.object(type(container), 'sync'):
            self.driver._force_stop(container)
        self.assertEqual('Stopped', self.client.instances.get(inst.name).status)
        self.driver.destroy(self.ctxt, inst, [])

    def _assert_event(self, seen, inst, transition, timeout=30):
        """Within timeout, an event of seen tells of this transition of inst."""
        wanted = (inst.uuid, transition)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and wanted not in [
                (e.get_instance_uuid(), e.get_transition()) for e in seen]:
            time.sleep(0.1)
        self.assertIn(wanted, [(e.get_instance_uuid(), e.get_transition()) for e in seen])

    def _listening(self):
        """The driver follows the backend's events (init_host): the list its events go to."""
        self.flags(listen_events=True, group='lxd')
        seen = []
        self.driver.register_event_listener(seen.append)
        self.driver.init_host('host1')
        self.addCleanup(self.driver.cleanup_host, 'host1')
        return seen

    def test_events_from_the_backend(self):
        seen = self._listening()
        image_id = self._image(base.busybox_bytes())
        inst = self._spawn(image_id)
        # stopped behind Nova's back
        self.client.instances.get(inst.name).stop(force=True, wait=True)
        self._assert_event(seen, inst, virtevent.EVENT_LIFECYCLE_STOPPED)
        self.driver.destroy(self.ctxt, inst, [])

    def test_a_poweroff_inside_the_guest_is_an_event(self):
        seen = self._listening()
        inst = self._spawn(self._image(base.busybox_bytes()))
        self.client.instances.get(inst.name).execute(['poweroff'])
        self._assert_event(seen, inst, virtevent.EVENT_LIFECYCLE_STOPPED)
        self.assertEqual('Stopped', self.client.instances.get(inst.name).status)
        self.driver.destroy(self.ctxt, inst, [])

    def test_events_missed_while_the_stream_was_lost(self):
        seen = []
        listener = events.Listener(self.client, seen.append, self.driver._uuid_of)
        self.addCleanup(listener.stop)
        inst = self._spawn(self._image(base.busybox_bytes()))
        listener.start()
        self.assertTrue(listener.following.wait(30))
        # The stream goes (as at a backend restart); the container stops before the listener
        # reconnects (a second later), so no event of the stream can tell of it.
        listener._ws.close()
        self.client.instances.get(inst.name).stop(force=True, wait=True)
        self._assert_event(seen, inst, virtevent.EVENT_LIFECYCLE_STOPPED)
        self.assertTrue(listener.following.wait(30))
        self.driver.destroy(self.ctxt, inst, [])

    def test_password_console_and_diagnostics(self):
        image_id = self._image(base.busybox_bytes())
        nw = self._network_info()
        inst = self._spawn(image_id, network_info=nw)
        self.driver.set_admin_password(inst, 'n3w-Secret')
        self.assertTrue(self._exec(inst, 'grep', '^root:', '/etc/shadow').startswith('root:$6$'))
        self.flags(console_log_max_bytes=1024, group='lxd')
        self._exec(inst, 'sh', '-c', 'for i in $(seq 300); do echo line-$i > /dev/console; done')
        output = self.driver.get_console_output(self.ctxt, inst)
        self.assertLessEqual(len(output.encode()), 1024)
        self.assertIn('line-300', output)
        diags = self.driver.get_instance_diagnostics(inst)
        self.assertEqual([nw[0]['address']], [n.mac_address for n in diags.nic_details])
        self.assertEqual(128, diags.memory_details.maximum)
        self.assertGreater(diags.cpu_details[0].time, 0)
        self.driver.destroy(self.ctxt, inst, nw)
        self.assertNotIn(nw[0]['devname'], base.host_links())

    def test_console_output_before_the_guest_wrote_any(self):
        # LXD has no console log file until the guest writes to its console: empty, not an error
        inst = self._instance(self._image(base.busybox_bytes()))
        self.client.instances.create({'name': inst.name, 'source': {'type': 'none'}}, wait=True)
        self.addCleanup(self.client.instances.get(inst.name).delete, wait=True)
        self.assertEqual('', self.driver.get_console_output(self.ctxt, inst))

    def test_host_resources_and_inventory(self):
        res = self.driver.get_available_resource('host1')
        self.assertEqual(os.cpu_count(), res['vcpus'])
        self.assertGreater(res['local_gb'], 0)
        from nova.compute import provider_tree
        tree = provider_tree.ProviderTree()
        tree.new_root('host1', uuid.uuid4())
        self.flags(reserved_host_memory_mb=333, reserved_host_disk_mb=2048,
                   cpu_allocation_ratio=4.0)
        self.driver.update_provider_tree(tree, 'host1')
        inv = tree.data('host1').inventory
        self.assertEqual(333, inv['MEMORY_MB']['reserved'])
        self.assertEqual(2, inv['DISK_GB']['reserved'])
        self.assertEqual(4.0, inv['VCPU']['allocation_ratio'])
        self.assertEqual(res['local_gb'], inv['DISK_GB']['total'])


base.for_each_backend(globals(), _DriverTest, 'TestLXDDriver')
