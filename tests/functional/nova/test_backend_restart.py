"""The driver survives its backend restarting under it, and nova-compute restarting over it.

Each test has a bundled backend of its own (stopped and started again on the same data dir):
- restarted (SIGTERM or SIGKILL) between driver calls: the driver's cached client goes on, the
  containers keep running (same init), their states are what they were;
- down while a call is made: the call waits for it to come back (bounded) and then succeeds;
- restarted during a long call (a clean power-off the container does not answer): the call ends
  with the container stopped; the other container runs on;
- gone for good: a clear HypervisorUnavailable naming the endpoint, no hang;
- stop and delete of an instance already stopped or deleted behind the driver's back succeed;
- a create, image alias, snapshot, publish or config PUT lost with the backend (killed with the
  request unread, or restarted after the create took effect) is sent again or found done.
And in Nova's in-process harness: a compute service restart (a new driver) keeps an ACTIVE
server running and a SHUTOFF one stopped, and init_host cleans what a crash left on the host.
"""
import io
import os
import signal
import threading
import time
import uuid
from urllib.parse import urlparse

import fixtures
import requests

from nova.compute import power_state
from nova import context as nova_context
from nova import exception
from nova import objects
from nova import test
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional import integrated_helpers
from nova.virt import fake

from nova_lxd.virt import client as lxd_client
from nova_lxd.virt import driver as lxd_driver
from tests.backend_fixture import BackendDaemon
from tests.functional.nova import base
from tests.functional.nova.conftest import API_PASTE
from tests.functional.nova import instances_path


def _restart(daemon, sig=signal.SIGTERM):
    daemon.stop(sig)
    daemon.start()


class TestDriverAcrossBackendRestarts(test.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = BackendDaemon()
        self.daemon.start()
        self.addCleanup(self.daemon.destroy)
        self.flags(endpoint=self.daemon.socket, listen_events=False, group='lxd')
        self.flags(instances_path=self.useFixture(fixtures.TempDir()).path)
        self.flags(vif_plugging_timeout=0)
        self.glance = self.useFixture(nova_fixtures.GlanceFixture(self))
        self.ctxt = nova_context.get_admin_context()
        self.driver = lxd_driver.LXDDriver(fake.FakeVirtAPI())
        self.driver.init_host('host1')
        self.image_id = self.glance.create(self.ctxt, {
            'name': 'busybox', 'container_format': 'bare', 'disk_format': 'raw',
            'properties': {'lxd_image_format': 'unified'}},
            data=io.BytesIO(base.busybox_bytes()))['id']

    def _spawn(self, power_on=True):
        flavor = objects.Flavor(self.ctxt, name='f%s' % uuid.uuid4().hex[:6],
                                flavorid=uuid.uuid4().hex, vcpus=1, memory_mb=128, root_gb=1,
                                ephemeral_gb=0, swap=0, extra_specs={})
        flavor.create()
        inst = objects.Instance(self.ctxt, uuid=str(uuid.uuid4()), image_ref=self.image_id,
                                user_id='u', project_id='p', instance_type_id=flavor.id,
                                flavor=flavor, system_metadata={}, vcpus=1, memory_mb=128)
        inst.create()
        meta = objects.ImageMeta.from_dict(self.glance.show(self.ctxt, self.image_id))
        self.driver.spawn(self.ctxt, inst, meta, [], None, {}, power_on=power_on)
        self.addCleanup(self._remove, inst)
        return inst

    def _remove(self, inst):
        if self.daemon.process is None:     # a test failed while its backend was down
            self.daemon.start()
        client = self.daemon.client()
        if client.instances.exists(inst.name):
            container = client.instances.get(inst.name)
            if container.status != 'Stopped':
                container.stop(force=True, wait=True)
            container.delete(wait=True)

    def _init_pid(self, inst):
        return self.daemon.client().instances.get(inst.name).state().pid

    def _state(self, inst):
        return self.driver.get_info(inst).state

    def test_restart_between_calls(self):
        running, stopped = self._spawn(), self._spawn(power_on=False)
        pid = self._init_pid(running)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _restart(self.daemon, sig)
            # the same driver, its cached client: every kind of call works again
            self.assertEqual(power_state.RUNNING, self._state(running))
            self.assertEqual(power_state.SHUTDOWN, self._state(stopped))
            self.assertEqual(pid, self._init_pid(running))
            self.assertEqual(sorted([running.uuid, stopped.uuid]),
                             sorted(self.driver.list_instance_uuids()))
            self.assertTrue(self.driver.get_available_resource('host1')['memory_mb'])
            self.assertGreater(self.driver.get_diagnostics(running)['processes'], 0)
        self.driver.power_on(self.ctxt, stopped, [])
        self.assertEqual(power_state.RUNNING, self._state(stopped))
        self.driver.power_off(running)
        self.assertEqual(power_state.SHUTDOWN, self._state(running))
        self.driver.destroy(self.ctxt, running, [])
        self.assertFalse(self.driver.instance_exists(running))

    def test_calls_wait_for_a_backend_that_is_coming_back(self):
        inst = self._spawn()
        pid = self._init_pid(inst)
        self.daemon.stop(signal.SIGKILL)
        answers = {}

        def call(key, func, *args):
            try:
                answers[key] = func(*args)
            except Exception as exc:
                answers[key] = exc
        threads = [threading.Thread(target=call, args=('info', self._state, inst)),
                   threading.Thread(target=call, args=('uuids', self.driver.list_instance_uuids))]
        for thread in threads:
            thread.start()
        # the calls are waiting for the backend, not failed
        time.sleep(2 * lxd_client.RETRY_INTERVAL)
        self.assertEqual({}, answers)
        self.daemon.start()
        for thread in threads:
            thread.join(lxd_client.RECONNECT_TIMEOUT + 30)
        self.assertEqual({'info': power_state.RUNNING, 'uuids': [inst.uuid]}, answers)
        self.assertEqual(pid, self._init_pid(inst))

    def test_restart_during_a_long_clean_power_off(self):
        inst, bystander = self._spawn(), self._spawn()
        bystander_pid = self._init_pid(bystander)
        # an init that does not answer the halt signal: the clean stop waits its whole timeout
        os.kill(self._init_pid(inst), signal.SIGSTOP)
        done = threading.Event()
        failure = []

        def power_off():
            try:
                self.driver.power_off(inst, timeout=20, retry_interval=20)
            except Exception as exc:
                failure.append(exc)
            done.set()
        thread = threading.Thread(target=power_off)
        thread.start()
        client = self.daemon.client()
        deadline = time.monotonic() + 60
        while not _running_operations(client) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(_running_operations(client), ('the clean stop never started', failure))
        _restart(self.daemon, signal.SIGKILL)
        thread.join(120)
        self.assertTrue(done.is_set())
        self.assertEqual([], failure)
        self.assertEqual(power_state.SHUTDOWN, self._state(inst))
        self.assertEqual(power_state.RUNNING, self._state(bystander))
        self.assertEqual(bystander_pid, self._init_pid(bystander))
        self.driver.power_on(self.ctxt, inst, [])
        self.assertEqual(power_state.RUNNING, self._state(inst))

    def test_a_backend_that_stays_down_is_a_clear_error(self):
        inst = self._spawn()
        self.daemon.stop()
        self.useFixture(fixtures.MonkeyPatch(
            'nova_lxd.virt.client.RECONNECT_TIMEOUT', 1.0))
        for call in (lambda: self.driver.get_info(inst),
                     lambda: self.driver.power_off(inst),
                     lxd_client.connect):
            err = self.assertRaises(exception.HypervisorUnavailable, call)
            self.assertIn(self.daemon.socket, str(err))
        self.daemon.start()
        self.assertEqual(power_state.RUNNING, self._state(inst))

    def test_stop_and_delete_of_what_is_already_stopped_or_deleted(self):
        inst = self._spawn()
        container = self.daemon.client().instances.get(inst.name)
        container.stop(force=True, wait=True)
        _restart(self.daemon)
        self.driver.power_off(inst)
        self.assertEqual(power_state.SHUTDOWN, self._state(inst))
        container.delete(wait=True)
        _restart(self.daemon, signal.SIGKILL)
        self.driver.destroy(self.ctxt, inst, [])
        self.assertFalse(self.driver.instance_exists(inst))

    # -- calls that are not idempotent, lost mid-request (client.py: until_done with a check) --

    def _on_request(self, method, path, before):
        """Run before(request) once, when the driver first sends method to a URL ending in path.

        Returns the list of such requests sent (by anyone) from then on.
        """
        real_send = requests.Session.send
        sent = []

        def send(session, request, **kwargs):
            if request.method == method and urlparse(request.url).path.endswith(path):
                sent.append(request.url)
                if len(sent) == 1:
                    before(request)
            return real_send(session, request, **kwargs)
        self.useFixture(fixtures.MonkeyPatch('requests.Session.send', send))
        return sent

    def _lose_unread(self, request):
        """The backend is frozen before it reads the request, then killed and started again."""
        os.kill(self.daemon.process.pid, signal.SIGSTOP)

        def kill_and_start():
            time.sleep(0.5)   # the request is in the socket by then, unread
            _restart(self.daemon, signal.SIGKILL)
        threading.Thread(target=kill_and_start).start()

    def _logged(self):
        return self.stdlog.logger.output

    def test_create_lost_unread_is_sent_again(self):
        posts = self._on_request('POST', '/1.0/instances', self._lose_unread)
        inst = self._spawn()
        self.assertEqual(power_state.RUNNING, self._state(inst))
        self.assertEqual(2, len(posts))
        self.assertIn('The backend restarted during creating %s' % inst.name, self._logged())

    def test_image_alias_lost_unread_is_sent_again(self):
        aliases = self._on_request('POST', '/1.0/images/aliases', self._lose_unread)
        inst = self._spawn()
        self.assertEqual(power_state.RUNNING, self._state(inst))
        self.assertEqual(2, len(aliases))
        self.assertTrue(self.daemon.client().images.get_by_alias(self.image_id))

    def test_config_put_lost_unread_is_sent_again(self):
        inst = self._spawn()
        container = self.driver._get(inst)   # through the driver's client
        puts = self._on_request('PUT', '/1.0/instances/%s' % inst.name, self._lose_unread)
        container.config = dict(container.config, **{'user.marker': 'kept'})
        container.save(wait=True)
        # sent again (as often as the restarting backend refused it) until it was answered
        self.assertGreaterEqual(len(puts), 2)
        self.assertEqual('kept',
                         self.daemon.client().instances.get(inst.name).config['user.marker'])

    def test_create_done_before_restart_is_not_repeated(self):
        first = self._spawn()   # the image is cached: the next spawn's first wait is its create's
        created = []

        def restart_when_created(request):
            # the create has happened; the restarted backend no longer knows its operation
            client = self.daemon.client()
            deadline = time.monotonic() + 60
            while len(client.instances.all()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            created.extend(i.name for i in client.instances.all() if i.name != first.name)
            _restart(self.daemon, signal.SIGKILL)
        posts = self._on_request('POST', '/1.0/instances', lambda request: None)
        self._on_request('GET', '/wait', restart_when_created)
        inst = self._spawn()
        self.assertEqual([inst.name], created)
        self.assertEqual(1, len(posts))
        self.assertEqual(power_state.RUNNING, self._state(inst))
        self.assertIn('creating %s: done before the backend restarted' % inst.name,
                      self._logged())

    def _snapshot_losing(self, lost):
        """A driver snapshot whose first POST to the path `lost` is lost unread.

        It must reach Glance and leave nothing behind in the backend; returns how many POSTs
        went to each path (the snapshot's, the publish's).
        """
        inst = self._spawn()
        image_id = self.glance.create(self.ctxt, {'name': 'snap'})['id']
        client = self.daemon.client()
        images_before = {i.fingerprint for i in client.images.all()}
        sent = {path: self._on_request('POST', path, self._lose_unread if path == lost
                                       else (lambda request: None))
                for path in ('/snapshots', '/1.0/images')}
        self.driver.snapshot(self.ctxt, inst, image_id, lambda **kwargs: None)
        # (the Glance fixture keeps no data: the metadata the upload sets stands for it)
        self.assertIn('hw_architecture', self.glance.show(self.ctxt, image_id)['properties'])
        client = self.daemon.client()
        self.assertEqual([], client.instances.get(inst.name).snapshots.all())
        self.assertEqual(images_before, {i.fingerprint for i in client.images.all()})
        return {path: len(urls) for path, urls in sent.items()}

    def test_snapshot_lost_unread_is_sent_again(self):
        self.assertEqual({'/snapshots': 2, '/1.0/images': 1}, self._snapshot_losing('/snapshots'))

    def test_publish_lost_unread_is_sent_again(self):
        self.assertEqual({'/snapshots': 1, '/1.0/images': 2}, self._snapshot_losing('/1.0/images'))


def _running_operations(client):
    ops = client.api.operations.get().json()['metadata'] or {}
    return ops.get('running') or []


class TestComputeServiceRestart(integrated_helpers.ProviderUsageBaseTestCase):
    """Nova's harness: a compute service restart with a brand-new driver over the same backend."""
    compute_driver = 'lxd.LXDDriver'

    def setUp(self):
        self.flags(api_paste_config=API_PASTE, group='wsgi')
        super().setUp()
        self.daemon = BackendDaemon()
        self.daemon.start()
        self.addCleanup(self.daemon.destroy)
        self.flags(endpoint=self.daemon.socket, group='lxd')
        self.flags(vif_plugging_timeout=0)
        # init_host cleans instances_path: never another test process's
        instances_path.use_private(self)
        self.client = self.daemon.client()
        self.image = self.glance.create(None, {
            'name': 'busybox', 'container_format': 'bare', 'disk_format': 'raw',
            'properties': {'lxd_image_format': 'unified'}},
            data=io.BytesIO(base.busybox_bytes()))
        self.compute = self._start_compute('host1')

    def _settle(self, server, status):
        return self._wait_for_server_parameter(
            server, {'status': status, 'OS-EXT-STS:task_state': None}, max_retries=240)

    def _boot(self, name):
        body = self._build_server(name=name, image_uuid=self.image['id'], flavor_id='1',
                                  networks='none')
        server = self._settle(self.api.post_server({'server': body}), 'ACTIVE')
        self.addCleanup(self._delete, server)
        return server

    def _delete(self, server):
        try:
            self._delete_server(server)
        except Exception:
            name = server['OS-EXT-SRV-ATTR:instance_name']
            if self.client.instances.exists(name):
                container = self.client.instances.get(name)
                if container.status != 'Stopped':
                    container.stop(force=True, wait=True)
                container.delete(wait=True)

    def _container(self, server):
        return self.client.instances.get(server['OS-EXT-SRV-ATTR:instance_name'])

    def test_restart_keeps_states_and_init_host_reconciles(self):
        active, shutoff = self._boot('active'), self._boot('shutoff')
        self.api.post_server_action(shutoff['id'], {'os-stop': None})
        shutoff = self._settle(shutoff, 'SHUTOFF')
        pid = self._container(active).state().pid
        # what a crash mid-spawn/mid-delete leaves: a partial image download, an orphan drive
        from nova_lxd.virt import conf
        downloads = os.path.join(conf.CONF.instances_path, '_lxd_images')
        os.makedirs(downloads, exist_ok=True)
        partial = os.path.join(downloads, 'partial-download')
        open(partial, 'w').close()
        orphan = os.path.join(conf.CONF.instances_path, str(uuid.uuid4()), 'config-drive')
        os.makedirs(orphan)

        # and the backend restarts too
        _restart(self.daemon, signal.SIGKILL)
        self.compute = self.restart_compute_service(self.compute,
                                                    keep_hypervisor_state=False)

        self.assertEqual('ACTIVE', self._settle(active, 'ACTIVE')['status'])
        self.assertEqual('SHUTOFF', self._settle(shutoff, 'SHUTOFF')['status'])
        self.assertEqual('Running', self._container(active).status)
        self.assertEqual(pid, self._container(active).state().pid)
        self.assertEqual('Stopped', self._container(shutoff).status)
        self.assertFalse(os.path.exists(partial))
        self.assertFalse(os.path.exists(orphan))
        # the new compute service drives them as before
        self.api.post_server_action(shutoff['id'], {'os-start': None})
        self._settle(shutoff, 'ACTIVE')
        self.assertEqual('Running', self._container(shutoff).status)
        self.api.post_server_action(active['id'], {'os-stop': None})
        self._settle(active, 'SHUTOFF')
        self.assertEqual('Stopped', self._container(active).status)
