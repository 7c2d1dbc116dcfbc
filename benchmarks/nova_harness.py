"""Nova's in-process harness for the Nova benchmark scenarios, started once per run.

It is the move tests' harness (tests/functional/nova/moves_base.py, itself Nova's
ProviderUsageBaseTestCase) with no compute host at start: the benchmark adds hosts as scenarios
ask for them, each on a benchmark daemon (a side's own, or a second daemon of the same kind for
migrations), reachable over HTTPS with the tests' client certificate and its server certificate
pinned. The test case is driven by hand (setUp, then its cleanups at close): no test runner.

Artefacts of running a whole cloud in one test process are removed here, because a deployment
does not have them (benchmarks/README.md, the Nova paragraphs):
- oslo.messaging's fake transport polls its queues every 50 ms; a broker pushes. Its listeners
  here wake when a message is delivered (`_push_delivery`).
- Nova's wait helpers poll the API every 0.5 s, and a tight poll would take the GIL from the very
  services it waits for (each GET costs the API tens of ms of Python). The waits here ask the API
  again after each write of an instance record that may have reached the awaited state
  (`_wake_on_instance_changes`, `reaching`), and every second at the latest; the end of a timed
  flow is still the API answering with the state waited for.
- Nova's cell-database fixture serialises cell switches with a writer-preferring lock; under
  native threads that deadlocks (`_reader_preferring_cell_lock`).
- Every service's RPC thread pool lives in one process (`_small_rpc_pools`).
"""
import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings

# Nova's TestCase would arm a SIGALRM timeout or capture stdout/stderr (the progress lines) when
# a test runner's variables are in the environment: not in a benchmark.
for _var in ('OS_TEST_TIMEOUT', 'OS_STDOUT_CAPTURE', 'OS_STDERR_CAPTURE'):
    os.environ.pop(_var, None)
os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')


def _dump_threads(signum, frame):
    """Every thread's stack to stderr (faulthandler stops at 100 threads; Nova runs more)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, stack in sys._current_frames().items():
        print('--- thread %s (%s)' % (ident, names.get(ident)), file=sys.stderr)
        traceback.print_stack(stack, file=sys.stderr)
    sys.stderr.flush()


# `kill -USR1 <pid>`: a Nova flow that hangs can be diagnosed.
signal.signal(signal.SIGUSR1, _dump_threads)

# Monkey patching policy, TestCase fixes and the nova.virt.lxd alias, as in the driver's tests.
from tests.functional.nova import conftest  # noqa: E402,F401,I100
from tests.functional.nova import hosts as test_hosts  # noqa: E402
from tests.functional.nova import moves_base  # noqa: E402

import fixtures  # noqa: E402
from futurist import _thread as futurist_thread  # noqa: E402
from nova import objects as nova_objects  # noqa: E402
from nova.tests import fixtures as nova_fixtures  # noqa: E402
from nova.tests.functional.api import client as api_client  # noqa: E402
from oslo_messaging._drivers import base as messaging_base  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_messaging._drivers import impl_fake  # noqa: E402
from oslo_messaging import server as messaging_server  # noqa: E402
import pylxd  # noqa: E402

from benchmarks.targets import CheckFailed  # noqa: E402
from nova_lxd.virt import conf as lxd_conf  # noqa: E402

FLOW_TIMEOUT = 180      # a Nova flow slower than this on the shared machine counts as failed
POLL = 1.0              # the API is asked at least this often while a wait is not woken
# API status -> the vm_state Nova writes when an instance reaches it
VM_STATES = {'ACTIVE': 'active', 'VERIFY_RESIZE': 'resized', 'SHUTOFF': 'stopped',
             'PAUSED': 'paused', 'SUSPENDED': 'suspended', 'ERROR': 'error'}


class _Changes:
    """Instance records Nova wrote (uuid, vm_state, or None when destroyed), to wake the waits.

    A wait says which writes may have reached what it waits for; only those make it ask the
    API again (see the module docstring).
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._events = []

    def changed(self, uuid, vm_state):
        with self._cond:
            self._events.append((uuid, vm_state))
            self._cond.notify_all()

    def count(self):
        with self._cond:
            return len(self._events)

    def wait_after(self, seen, relevant, timeout):
        """Until a relevant write after the count() `seen`, or timeout; returns the new count."""
        def found():
            return any(relevant(*event) for event in self._events[seen:])
        with self._cond:
            self._cond.wait_for(found, timeout)
            return len(self._events)


CHANGES = _Changes()


def any_write(uuid, vm_state):
    return True


def reaching(status, server_ids=None):
    """Which writes may bring a server (of server_ids, or any) to status or to ERROR."""
    wanted = {VM_STATES.get(status), 'error'}

    def relevant(uuid, vm_state):
        return ((server_ids is None or uuid in server_ids)
                and (vm_state in wanted or status not in VM_STATES))
    return relevant


def deleting(server_id):
    return lambda uuid, vm_state: uuid == server_id and vm_state is None


def wait(predicate, what, timeout=FLOW_TIMEOUT, relevant=any_write, interval=POLL, gap=0.0):
    """Until predicate() holds: asked at once, after each relevant instance write, every interval.

    relevant(uuid, vm_state) picks the instance writes (_Changes) that may have made it hold.
    gap: the least time between two asks (a listing of many servers is costly to ask often).
    """
    deadline = time.monotonic() + timeout
    seen = CHANGES.count()
    while True:
        asked = time.monotonic()
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise CheckFailed('%s: still not done after %d s' % (what, timeout))
        time.sleep(max(0.0, asked + gap - time.monotonic()))
        seen = CHANGES.wait_after(seen, relevant,
                                  max(0.0, min(interval, deadline - time.monotonic())))


class Harness(moves_base.MovesTestBase):
    host_count = 0      # hosts are added by host()

    def runTest(self):
        """testtools needs a test method to exist; the benchmark calls setUp and close itself."""

    def setUp(self):
        _reader_preferring_cell_lock(self)
        _small_rpc_pools(self)
        super().setUp()
        _push_delivery(self)
        _wake_on_instance_changes(self)
        # A deployment runs at INFO; Nova's fixture formats every DEBUG message.
        logging.getLogger().setLevel(logging.INFO)
        # Nova's warnings fixture reset the filters; pylxd warns about every unknown API field.
        warnings.filterwarnings('ignore', category=UserWarning, module='pylxd')
        self.names = {}          # (side, index) -> compute host name
        self.images = {}         # benchmark image path -> Glance image id
        self.warmed = set()
        self.uploaded = {}       # Glance image id -> when its data finished uploading
        self._flavors = None
        self.work_dir = tempfile.mkdtemp(prefix='nova-lxd-bench-nova-', dir='/var/tmp')
        self.addCleanup(shutil.rmtree, self.work_dir, ignore_errors=True)
        print('nova harness: work dir %s' % self.work_dir, file=sys.stderr, flush=True)
        # Nova's default instances_path (under site-packages) is shared by every Nova test
        # process on the machine; a compute starting there removes others' partial downloads.
        self.flags(instances_path=os.path.join(self.work_dir, 'instances'))
        # Ten concurrent one-vCPU boots on a 2-core host: Nova's initial ratio (4) leaves room
        # for 8; containers share cores, as operators overcommit them.
        self.flags(cpu_allocation_ratio=16.0)
        self._time_uploads()

    def _time_uploads(self):
        kept = self.glance.update

        def update(context, image_id, metadata, data=None, purge_props=False):
            result = kept(context, image_id, metadata, data=data, purge_props=purge_props)
            if data is not None:
                self.uploaded[image_id] = time.perf_counter()
            return result
        self.glance.update = update

    def close(self, timeout=2 * FLOW_TIMEOUT):
        """Stop the harness; give up after `timeout` when it hangs.

        Under native threads Nova's test fixtures can deadlock (seen with ten concurrent builds:
        their per-database write lock held by a thread that waits for the compute's resource
        lock). A wedged harness must not keep the run, or its exit, from ending: its threads are
        left to the process's end and futurist's exit hook, which would join them, is removed.
        The daemons are deleted afterwards by the command, with whatever the harness left.
        """
        closer = threading.Thread(target=self._close, name='nova-harness-close', daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            print('nova harness: did not stop within %d s (wedged); left to the process exit'
                  % timeout, file=sys.stderr)
            atexit.unregister(futurist_thread._clean_up)
            shutil.rmtree(getattr(self, 'work_dir', ''), ignore_errors=True)

    def _close(self):
        try:
            self.delete_all(self.api.get_servers(detail=False))
        except Exception as exc:
            print('nova harness: deleting servers failed: %s' % exc, file=sys.stderr)
        # the thread pools log their shutdown after the log fixture is gone: to the terminal
        logging.getLogger('nova.thread_pool_factory').setLevel(logging.WARNING)
        while self._cleanups:
            function, args, kwargs = self._cleanups.pop()
            try:
                function(*args, **kwargs)
            except Exception as exc:
                print('nova harness: clean-up %s failed: %s'
                      % (getattr(function, '__name__', function), exc), file=sys.stderr)

    # -- hosts and images -----------------------------------------------------------------------

    def host(self, target, index=0):
        """The compute host number `index` of a side, started on first use."""
        key = (target.name, index)
        if key not in self.names:
            daemon = target if index == 0 else target.spawn_peer()
            name = '%s-%d' % (target.name, index + 1)
            url, cert = self._https(daemon, name)
            lxd = lxd_conf.CONF.lxd
            self.flags(migration_endpoints=dict(lxd.migration_endpoints, **{name: url}),
                       migration_server_certs=dict(lxd.migration_server_certs, **{name: cert}),
                       group='lxd')
            # the driver connects in init_host: the endpoint is read as the service starts
            self.flags(endpoint=daemon.socket, group='lxd')
            self.clients[name] = pylxd.Client(endpoint=daemon.socket)
            self.computes[name] = self._start_host(name)
            self.names[key] = name
        return self.names[key]

    def _https(self, daemon, name):
        """(url, pinned server certificate) of a daemon trusting the tests' client certificate."""
        client = pylxd.Client(endpoint=daemon.socket)
        crt, _key = test_hosts.client_cert()
        with open(crt) as f:
            pem = f.read().strip()
        if not any(c.certificate.strip() == pem for c in client.certificates.all()):
            client.certificates.create('', pem.encode())
        address = client.api.get().json()['metadata']['config'].get('core.https_address')
        if not address:
            with socket.socket() as probe:
                probe.bind(('127.0.0.1', 0))
                address = '127.0.0.1:%d' % probe.getsockname()[1]
            client.api.patch(json={'config': {'core.https_address': address}})
        cert = os.path.join(self.work_dir, name + '.crt')
        with open(cert, 'w') as f:
            f.write(pylxd.Client(endpoint=daemon.socket).host_info['environment']['certificate'])
        return 'https://' + address, cert

    def glance_image(self, bench_image):
        """The Glance image id of a benchmark image (uploaded with its real bytes once)."""
        if bench_image.path not in self.images:
            with open(bench_image.path, 'rb') as data:
                image = self.glance.create(None, {
                    'name': bench_image.alias, 'container_format': 'bare', 'disk_format': 'raw',
                    'size': bench_image.size, 'properties': {'lxd_image_format': 'unified'}},
                    data=data)
            self.images[bench_image.path] = image['id']
        return self.images[bench_image.path]

    def warm(self, host_name, image_id):
        """One untimed boot, so the host's backend has the image cached for the timed ones."""
        if (host_name, image_id) not in self.warmed:
            server = self.wait_for(self.post_server(host_name, image_id), 'ACTIVE')
            self.delete(server)
            self.warmed.add((host_name, image_id))

    def flavors(self):
        """(small, large) flavor ids for the resize: 1 and 2 vCPUs."""
        if self._flavors is None:
            self._flavors = tuple(
                self.api.post_flavor({'flavor': {
                    'name': 'bench-%s-%s' % (size, uuid.uuid4().hex[:6]), 'vcpus': vcpus,
                    'ram': ram, 'disk': 2}})['id']
                for size, vcpus, ram in (('small', 1, 256), ('large', 2, 512)))
        return self._flavors

    # -- servers --------------------------------------------------------------------------------

    def post_server(self, host_name, image_id, flavor='1', **extra):
        body = self._build_server(name='bench-%s' % uuid.uuid4().hex[:8], image_uuid=image_id,
                                  flavor_id=flavor, networks='none', host=host_name)
        return self.api.post_server({'server': dict(body, **extra)})

    def post_servers(self, host_name, image_id, count):
        """One request for `count` servers (Nova's multi-create); returns its reservation id."""
        return self.post_server(host_name, image_id, min_count=count, max_count=count,
                                return_reservation_id=True)['reservation_id']

    def boot(self, host_name, image_id, flavor=None):
        return self.wait_for(self.post_server(host_name, image_id, flavor or '1'), 'ACTIVE')

    def _matches(self, server, status, expected):
        if server['status'] == 'ERROR' and status != 'ERROR':
            raise CheckFailed('server %s went to ERROR: %s%s'
                              % (server['id'], server.get('fault', {}).get('message'),
                                 self._first_error(server['id'])))
        return all(server.get(k) == v for k, v in expected.items())

    def _first_error(self, server_id):
        """The first ERROR Nova logged about a server (its fault says only 'retries')."""
        for line in self.stdlog.logger.output.splitlines():
            if ' ERROR ' in line and server_id in line:
                # a reschedule's traceback ends with the reason: the end says what went wrong
                return '; first error: %s ... %s' % (line[:120], line[-600:])
        return ''

    def wait_for(self, server, status, **params):
        """The server once it has `status` (and OS-EXT-STS:task_state, if given)."""
        expected = {'status': status}
        if 'task_state' in params:
            expected['OS-EXT-STS:task_state'] = params['task_state']
        latest = [server]

        def reached():
            latest[0] = self.api.get_server(server['id'])
            return self._matches(latest[0], status, expected)
        wait(reached, 'server %s to be %s' % (server['id'], expected),
             relevant=reaching(status, {server['id']}))
        return latest[0]

    def wait_for_reservation(self, reservation_id, count, status):
        """The `count` servers of one request, once all have `status`."""
        latest = []

        def reached():
            latest[:] = self.api.get_servers(
                detail=True, search_opts={'reservation_id': reservation_id})
            return (len(latest) == count
                    and all([self._matches(s, status, {'status': status}) for s in latest]))
        try:
            wait(reached, '%d servers to be %s' % (count, status), relevant=reaching(status),
                 gap=0.2)
        except CheckFailed:
            self.delete_all(latest)
            raise
        return list(latest)

    def delete(self, server):
        self.delete_all([server])

    def delete_all(self, servers):
        for server in servers:
            try:
                self.api.delete_server(server['id'])
            except api_client.OpenStackApiNotFoundException:
                pass
        deadline = time.monotonic() + FLOW_TIMEOUT
        for server in servers:
            wait(lambda: self._gone(server), 'deleting server %s' % server['id'],
                 max(1, deadline - time.monotonic()), relevant=deleting(server['id']))

    def _gone(self, server):
        try:
            self.api.get_server(server['id'])
        except api_client.OpenStackApiNotFoundException:
            return True
        return False

    def action(self, server, body):
        return self.api.post_server_action(server['id'], body)

    def confirm(self, server):
        """Confirm a resize or migration: ACTIVE, and no revert copy left on any host."""
        self.action(server, {'confirmResize': None})
        server = self.wait_for(server, 'ACTIVE', task_state=None)
        revert = server['OS-EXT-SRV-ATTR:instance_name'] + '-resize'
        wait(lambda: not any(revert in self.containers(h) for h in self.clients),
             'removal of %s after confirm' % revert, interval=0.05)
        return server

    def snapshot(self, server):
        """createImage: (image id, seconds from the request until Glance has the data)."""
        start = time.perf_counter()
        image_id = self.action(server, {'createImage': {'name': 'bench-snapshot'}})['image_id']
        wait(lambda: image_id in self.uploaded, 'upload of snapshot %s' % image_id,
             interval=0.05)
        return image_id, self.uploaded[image_id] - start

    def glance_data(self, image_id):
        return self.glance._imagedata[image_id]

    def forget_image(self, image_id):
        self.glance.images.pop(image_id, None)
        self.glance._imagedata.pop(image_id, None)
        self.uploaded.pop(image_id, None)

    @contextlib.contextmanager
    def only_host(self, host_name):
        """The other compute services disabled, so a resize stays on host_name."""
        others = [s for s in self.api.get_services(binary='nova-compute')
                  if s['host'] != host_name and s['status'] == 'enabled']
        for service in others:
            self.api.put_service(service['id'], {'status': 'disabled'})
        try:
            yield
        finally:
            for service in others:
                self.api.put_service(service['id'], {'status': 'enabled'})

    # -- backends -------------------------------------------------------------------------------

    def container(self, host_name, server):
        return self._container(host_name, server)

    def containers(self, host_name):
        return self._nova_containers(host_name)


class _ReaderPreferringLock(nova_fixtures.ReaderWriterLock):
    """A reader-writer lock whose readers do not queue behind a waiting writer.

    Nova's CellDatabases fixture holds its cell lock as a reader for the whole body of a
    target_cell() and takes it as a writer to switch cells (the API's listings and quota counts
    switch to cell0). With fasteners' writer preference, native threads deadlock (seen here with
    ten concurrent builds): a service heartbeat holds the per-database write lock
    (DatabaseWriteLock) and asks for a reader lock, which waits behind the API thread's pending
    writer, which waits for a conductor thread's reader lock, held while that thread waits for
    the heartbeat's database lock. The writer's own section only swaps a pointer, so letting
    readers in first cannot deadlock; a writer waits until readers drain.
    """

    def _acquire_read_lock(self, me):
        with self._cond:
            while self._writer is not None and self._writer != me:
                self._cond.wait()
            self._readers[me] = self._readers.get(me, 0) + 1


def _reader_preferring_cell_lock(case):
    """Nova's cell fixture builds its lock in setUp: the class it uses is swapped before."""
    case.useFixture(fixtures.MonkeyPatch('nova.tests.fixtures.nova.ReaderWriterLock',
                                         _ReaderPreferringLock))


def _small_rpc_pools(case):
    """Eight RPC handler threads per service instead of oslo.messaging's 64.

    Its thread pool starts a new thread for each request until it is full, and every idle thread
    wakes once a second; with all the services in one process (one GIL) that grew the CPU time of
    a boot by half within 16 boots (0.54 -> 0.84 s; 46 threads instead of 134 with a small pool).
    A deployment has one pool per service process. Nova's builds run in its own long-task pool,
    not in the RPC handler, so eight handlers serve ten concurrent boots.
    """
    cfg.CONF.register_opts(messaging_server._pool_opts)
    kept = cfg.CONF.executor_thread_pool_size
    cfg.CONF.set_default('executor_thread_pool_size', 8)
    case.addCleanup(cfg.CONF.set_default, 'executor_thread_pool_size', kept)


def _push_delivery(case):
    """The fake transport's listeners wake on delivery instead of sleeping 50 ms between polls.

    The listener's loop is oslo.messaging's FakeListener.poll with its sleep replaced by a wait
    on a condition that every delivery notifies (checked against a counter, so a message
    delivered between the queue check and the wait is not missed).
    """
    delivered = threading.Condition()
    count = [0]
    deliver = impl_fake.FakeExchange.deliver_message

    def deliver_message(self, *args, **kwargs):
        deliver(self, *args, **kwargs)
        with delivered:
            count[0] += 1
            delivered.notify_all()

    def poll(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.is_set():
            with delivered:
                seen = count[0]
            for target in self._targets:
                exchange = self._exchange_manager.get_exchange(target.exchange)
                ctxt, message, reply_q, requeue = exchange.poll(target, self._pool)
                if message is not None:
                    return impl_fake.FakeIncomingMessage(ctxt, message, reply_q, requeue)
            pause = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if pause < 0:
                break
            with delivered:
                delivered.wait_for(lambda: count[0] != seen, pause)
        return None

    case.useFixture(fixtures.MonkeyPatch(
        'oslo_messaging._drivers.impl_fake.FakeExchange.deliver_message', deliver_message))
    case.useFixture(fixtures.MonkeyPatch(
        'oslo_messaging._drivers.impl_fake.FakeListener.poll',
        messaging_base.batch_poll_helper(poll)))


def _wake_on_instance_changes(case):
    """Every write of an instance record (state changes, deletion) is told to the waits."""
    for method, gone in (('save', False), ('destroy', True)):
        kept = getattr(nova_objects.Instance, method)

        def changed(self, *args, _kept=kept, _gone=gone, **kwargs):
            try:
                return _kept(self, *args, **kwargs)
            finally:
                CHANGES.changed(self.uuid, None if _gone else self.vm_state)
        case.useFixture(fixtures.MonkeyPatch('nova.objects.Instance.%s' % method, changed))


def start():
    case = Harness()
    try:
        case.setUp()
    except BaseException:
        case.close()
        raise
    return case


# -- where a boot's time goes (`python -m benchmarks.nova_harness [BOOTS]`) ---------------------

# (stage, how its end is found: (function label, start or end of its first call))
STAGES = (
    ('API: POST /servers answered', None),
    ('conductor: scheduler RPC and scheduling', ('select_destinations', 'end')),
    ('conductor: cell records, BDMs, cast to the compute', ('build_and_run_instance', 'start')),
    ('compute: saves, claim, networks, BDMs', ('spawn', 'start')),
    ('driver.spawn', ('spawn', 'end')),
    ('compute: ACTIVE saved', ('active saved', 'end')),
    ('harness: the API shows ACTIVE', None),
)


def _record(case, owner, name, path, calls, label):
    """Append (label(args), start, end) to calls for each call of owner.name (patched at path)."""
    kept = getattr(owner, name)

    def timed(*args, **kwargs):
        start_ = time.perf_counter()
        try:
            return kept(*args, **kwargs)
        finally:
            calls.append((label(args), start_, time.perf_counter()))
    case.useFixture(fixtures.MonkeyPatch(path, timed))


def breakdown(boots=12):
    """Boot `boots` servers on a private bundled backend; print each stage's median and range.

    Stages end at timestamps of Nova's and the driver's own functions, wrapped for it (RPC
    endpoints through oslo.messaging's dispatcher: the services hold their endpoints bound).
    """
    import statistics
    from benchmarks import images, targets
    from nova_lxd.virt import driver as lxd_driver
    from oslo_messaging.rpc import dispatcher

    side = targets.BundledTarget.start()
    case = None
    try:
        case = start()
        host = case.host(side)
        image_id = case.glance_image(images.busybox())
        case.warm(host, image_id)
        calls = []
        # RPC endpoints by the name of the method dispatched (args: self, endpoint, method ...)
        _record(case, dispatcher.RPCDispatcher, '_do_dispatch',
                'oslo_messaging.rpc.dispatcher.RPCDispatcher._do_dispatch', calls,
                lambda args: args[2])
        _record(case, lxd_driver.LXDDriver, 'spawn', 'nova_lxd.virt.driver.LXDDriver.spawn',
                calls, lambda args: 'spawn')
        _record(case, nova_objects.Instance, 'save', 'nova.objects.Instance.save', calls,
                lambda args: 'active saved' if args[0].vm_state == 'active' else 'saved')
        stages = {name: [] for name, _ in STAGES}
        totals = []
        for _ in range(boots):
            del calls[:]
            t0 = time.perf_counter()
            server = case.post_server(host, image_id)
            answered = time.perf_counter()
            server = case.wait_for(server, 'ACTIVE')
            done = time.perf_counter()
            ends = [answered]
            for name, found in STAGES[1:-1]:
                label, which = found
                hits = [c for c in calls if c[0] == label]
                ends.append((hits[0][2] if which == 'end' else hits[0][1]) if hits else ends[-1])
            ends.append(done)
            previous = t0
            for (name, _), end in zip(STAGES, ends):
                stages[name].append(end - previous)
                previous = end
            totals.append(done - t0)
            case.delete(server)
        print('%d boots, load average %.1f' % (boots, os.getloadavg()[0]))
        for name, values in list(stages.items()) + [('total', totals)]:
            print('%-52s %.3f s  (%.3f-%.3f)'
                  % (name, statistics.median(values), min(values), max(values)))
    finally:
        if case is not None:
            case.close()
        side.close()


if __name__ == '__main__':
    breakdown(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
