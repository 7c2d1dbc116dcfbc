"""Nova scenarios (issues 6 and 7): boot, concurrent boots, snapshot, cold migration, resize.

Beside them, the retired nova-lxd's snapshot (stop, publish, start, export) through pylxd on both
daemons, the approach issue 7 compares the driver's snapshot with.

Every scenario drives nova-lxd's driver (`compute_driver = lxd.LXDDriver`) through Nova's own
in-process functional harness: the real API, conductor, scheduler, compute managers and placement,
with Nova's Glance and Neutron fixtures holding real image bytes. One harness serves the whole run:
each side (bundled backend, LXD 5.0.2) gets its own compute hosts in it, each host's driver on its
own daemon (`[lxd] endpoint`), so both sides share one control plane and the runner can alternate
them repetition by repetition. The harness starts once (untimed) and stops after the last scenario
(`close_shared`, called by the command before it stops the daemons); its start-up cost and the
first boot of each image on each host (the image download into the backend's cache) stay out of
the timed sections.

The harness is Nova's `ProviderUsageBaseTestCase`, set up through the move tests' base class
(tests/functional/nova/moves_base.py): the same per-host node identities, HTTPS between backends
with pinned certificates, and kept snapshot uploads as the driver's functional tests use.
Servers boot with `networks='none'` (no Neutron port; the driver's profile is what it is on both
sides). Nova's DEBUG logging is turned down to INFO after start-up, as a deployment would run.
"""
import contextlib
import io
import os
import statistics
import tarfile
import threading
import time
import uuid

# Native threads, as the driver's functional tests run Nova (tests/functional/nova/conftest.py);
# must be set before anything of nova is imported, which happens on first use below.
os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')

from benchmarks import images  # noqa: E402
from benchmarks.scenarios import OnInstance, Scenario, register, stopwatch  # noqa: E402

MB = 1 << 20

_harness = None


def harness():
    """The run's one Nova harness, started on first use."""
    global _harness
    if _harness is None:
        from benchmarks import nova_harness
        _harness = nova_harness.start()
    return _harness


def close_harness():
    global _harness
    if _harness is not None:
        try:
            _harness.close()
        finally:
            _harness = None


def percentile(samples, p):
    """The p-th percentile (inclusive method): p95 of 20 boots lies between the two slowest."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method='inclusive')[p - 1]


class _Nova(Scenario):
    """A scenario on a Nova compute host of each side; the harness outlives the scenario."""

    reps = (1, 2)
    image = staticmethod(images.busybox)
    # compute hosts per side this scenario needs
    hosts = 1

    @classmethod
    def close_shared(cls):
        close_harness()

    def setup(self, target):
        nova = harness()
        names = [nova.host(target, index) for index in range(self.hosts)]
        image_id = nova.glance_image(self.image())
        nova.warm(names[0], image_id)
        return {'hosts': names, 'image_id': image_id}

    @contextlib.contextmanager
    def server(self, target, state, flavor=None):
        """Untimed: (server, container, token) of a server ACTIVE on the side's first host.

        A fresh token is written in its container; the server is deleted afterwards.
        """
        nova = harness()
        server = nova.boot(state['hosts'][0], state['image_id'], flavor=flavor)
        try:
            container = self.check_server(target, server, state['hosts'][0])
            yield server, container, self.write_token(target, container)
        finally:
            nova.delete(server)

    def check_server(self, target, server, host_name, status='ACTIVE'):
        nova = harness()
        target.check(server['status'] == status, '%s: server %s is %s, not %s'
                     % (target.name, server['id'], server['status'], status))
        target.check(server['OS-EXT-SRV-ATTR:host'] == host_name, '%s: server %s is on %s, not %s'
                     % (target.name, server['id'], server['OS-EXT-SRV-ATTR:host'], host_name))
        container = nova.container(host_name, server)
        target.check_running(container)
        return container

    def run_in(self, target, container, *command):
        result = container.execute(list(command))
        target.check(result.exit_code == 0, '%s: %s in %s exited %s: %s'
                     % (target.name, ' '.join(command), container.name, result.exit_code,
                        result.stderr))
        return result.stdout.strip()

    def write_token(self, target, container):
        token = uuid.uuid4().hex
        self.run_in(target, container, 'sh', '-c', 'echo %s > /root/bench-token && sync' % token)
        return token

    def check_big_data(self, target, container, token):
        """The container holds what was written before the move, and the image's 200 MB."""
        found = self.run_in(target, container, 'cat', '/root/bench-token')
        target.check(found == token, '%s: %s holds token %r, not %r'
                     % (target.name, container.name, found, token))
        size = int(self.run_in(target, container, 'stat', '-c', '%s', '/' + images.BIG_BLOB_PATH))
        target.check(size == 200 * MB, '%s: %s has a %d-byte blob, not 200 MB'
                     % (target.name, container.name, size))


@register
class NovaBoot(_Nova):
    name = 'nova boot'
    description = ('POST /servers until ACTIVE with a running container, through Nova\'s '
                   'in-process harness and LXDDriver; p50 and p95 over 20 boots (3 with --quick)')
    reps = (3, 20)
    P50, P95 = 'nova boot p50', 'nova boot p95'

    def measure(self, target, state):
        nova = harness()
        server = None
        try:
            with stopwatch() as t:
                server = nova.post_server(state['hosts'][0], state['image_id'])
                server = nova.wait_for(server, 'ACTIVE')
            self.check_server(target, server, state['hosts'][0])
        finally:
            if server is not None:
                nova.delete(server)
        return {self.P50: t.seconds}

    def derive(self, metrics):
        """p95 over all the boots of a side (one value), beside their median."""
        return {self.P95: [percentile(metrics[self.P50], 95)]}


@register
class NovaSnapshot(_Nova):
    name = 'nova snapshot 200 MB'
    description = ('createImage of a running server holding 200 MB until the image is uploaded '
                   'to Glance; and how long the instance was frozen meanwhile')
    image = staticmethod(images.big)
    units = {'nova snapshot pause': 's'}

    def measure(self, target, state):
        nova = harness()
        with self.server(target, state) as (server, container, token):
            pid = target.init_pid(container)
            with FreezeWatch(pid) as frozen:
                image_id, seconds = nova.snapshot(server)
            try:
                server = nova.wait_for(server, 'ACTIVE', task_state=None)
                container = self.check_server(target, server, state['hosts'][0])
                target.check(target.init_pid(container) == pid, '%s: the instance restarted '
                             'during its snapshot' % target.name)
                target.check(frozen.error is None and frozen.samples > 0,
                             '%s: freezer not watched: %s' % (target.name, frozen.error))
                check_image(target, nova.glance_data(image_id), token)
            finally:
                nova.forget_image(image_id)   # 200 MB in the Glance fixture's memory
        return {self.name: seconds, 'nova snapshot pause': frozen.seconds}


@register
class RetiredSnapshot(OnInstance):
    """The retired nova-lxd's snapshot, for issue 7's comparison: stop, publish, start, export.

    Measured through pylxd on both daemons (no Nova: the retired driver's calls in its order).
    The instance is down from the stop until it runs again.
    """
    name = 'retired snapshot 200 MB'
    description = ("the retired nova-lxd's snapshot of a running 200 MB container through pylxd: "
                   'stop, publish, start, export (no Nova); and its downtime')
    reps = (1, 2)

    def make(self, target):
        return target.launch(images.big())

    def measure(self, target, state):
        instance = state['instance']
        token = uuid.uuid4().hex
        instance.files.put('/root/bench-token', (token + '\n').encode())
        image = None
        try:
            with stopwatch() as t:
                with stopwatch() as down:
                    instance.stop(wait=True)
                    image = instance.publish(wait=True)
                    instance.start(wait=True)
                data = image.export().read()
            target.check_running(instance)
            check_image(target, data, token)
        finally:
            if image is not None:
                image.delete(wait=True)
        return {self.name: t.seconds, 'retired snapshot downtime': down.seconds}


@register
class NovaColdMigration(_Nova):
    name = 'nova cold migration 200 MB'
    description = ('migrate a running 200 MB server to a second compute host with its own '
                   'backend (HTTPS between the backends), until VERIFY_RESIZE')
    image = staticmethod(images.big)
    hosts = 2

    def measure(self, target, state):
        nova = harness()
        source, dest = state['hosts']
        with self.server(target, state) as (server, container, token):
            with stopwatch() as t:
                nova.action(server, {'migrate': {'host': dest}})
                server = nova.wait_for(server, 'VERIFY_RESIZE', task_state=None)
            moved = self.check_server(target, server, dest, 'VERIFY_RESIZE')
            self.check_big_data(target, moved, token)
            server = nova.confirm(server)
            target.check(not nova.containers(source), '%s: %s still holds %s after confirm'
                         % (target.name, source, nova.containers(source)))
        return {self.name: t.seconds}


@register
class NovaResize(_Nova):
    name = 'nova resize 200 MB'
    description = ('resize a running 200 MB server to a flavor with 2 vCPUs on the same host, '
                   'until VERIFY_RESIZE with the new limits')
    image = staticmethod(images.big)

    def measure(self, target, state):
        nova = harness()
        host_name = state['hosts'][0]
        small, large = nova.flavors()
        with self.server(target, state, flavor=small) as (server, container, token):
            target.check(self.run_in(target, container, 'nproc') == '1',
                         '%s: the small flavor does not give 1 CPU' % target.name)
            with nova.only_host(host_name), stopwatch() as t:
                nova.action(server, {'resize': {'flavorRef': large}})
                server = nova.wait_for(server, 'VERIFY_RESIZE', task_state=None)
            container = self.check_server(target, server, host_name, 'VERIFY_RESIZE')
            target.check(self.run_in(target, container, 'nproc') == '2',
                         '%s: after the resize the container sees %s CPUs'
                         % (target.name, self.run_in(target, container, 'nproc')))
            self.check_big_data(target, container, token)
            nova.confirm(server)
        return {self.name: t.seconds}


@register
class NovaConcurrentBoots(_Nova):
    name = 'nova 10 concurrent boots'
    description = ('10 servers in one POST /servers (min_count=10) until all are ACTIVE with '
                   'running containers (total time)')
    reps = (1, 2)
    count = 10

    def measure(self, target, state):
        nova = harness()
        host_name, image_id = state['hosts'][0], state['image_id']
        with stopwatch() as t:
            reservation = nova.post_servers(host_name, image_id, self.count)
            servers = nova.wait_for_reservation(reservation, self.count, 'ACTIVE')
        try:
            for server in servers:
                self.check_server(target, server, host_name)
            target.check(len(servers) == self.count, '%s: %d of %d servers'
                         % (target.name, len(servers), self.count))
        finally:
            nova.delete_all(servers)
        return {self.name: t.seconds}


def check_image(target, data, token):
    """The image is a unified tarball holding the token and the 200 MB blob."""
    found = {}
    wanted = {'rootfs/root/bench-token', 'rootfs/' + images.BIG_BLOB_PATH}
    with tarfile.open(fileobj=io.BytesIO(data), mode='r:*') as tar:
        for member in tar:
            name = member.name[2:] if member.name.startswith('./') else member.name
            if name == 'metadata.yaml':
                found[name] = True
            if name in wanted:
                found[name] = (tar.extractfile(member).read().strip()
                               if name.endswith('token') else member.size)
    target.check('metadata.yaml' in found, '%s: the snapshot image has no metadata.yaml'
                 % target.name)
    target.check(found.get('rootfs/root/bench-token') == token.encode(),
                 '%s: the snapshot image holds token %r, not %r'
                 % (target.name, found.get('rootfs/root/bench-token'), token))
    target.check(found.get('rootfs/' + images.BIG_BLOB_PATH) == 200 * MB,
                 '%s: the snapshot image\'s blob has %r bytes'
                 % (target.name, found.get('rootfs/' + images.BIG_BLOB_PATH)))


class FreezeWatch(threading.Thread):
    """How long a container's freezer cgroup is not THAWED, sampled every millisecond.

    `seconds` is the total time seen FREEZING or FROZEN (a pause shorter than the sampling period
    can be missed: 0 means under about a millisecond). The freezer (cgroup v1) is what both
    backends use to pause a container; an init that disappears ends the watch with an error.
    """

    PERIOD = 0.001

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.path = _freezer_state(pid)
        self.pid = pid
        self.seconds = 0.0
        self.samples = 0
        self.error = None if self.path else 'no freezer cgroup for pid %d' % pid
        self._done = threading.Event()

    def __enter__(self):
        if self.path:
            self.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        if self.path:
            self.join()

    def run(self):
        last = time.perf_counter()
        while not self._done.is_set():
            try:
                state = _read(self.path)
            except Exception as exc:
                self.error = 'reading the freezer state of pid %d: %s' % (self.pid, exc)
                return
            now = time.perf_counter()
            self.samples += 1
            if state != 'THAWED':
                self.seconds += now - last
            last = now
            time.sleep(self.PERIOD)


def _read(path):
    # os.open: Nova's harness poisons builtins.open on /sys (its tests must mock hardware)
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 64).decode().strip()
    finally:
        os.close(fd)


def _freezer_state(pid):
    try:
        with open('/proc/%d/cgroup' % pid) as f:
            for line in f:
                _id, controllers, path = line.rstrip('\n').split(':', 2)
                if 'freezer' in controllers.split(','):
                    return '/sys/fs/cgroup/freezer%s/freezer.state' % path
    except OSError:
        pass
    return None
