"""Scale: API latency with many instances, and density (how many running containers fit)."""
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pylxd

from benchmarks import host, images, rawlxc
from benchmarks.scenarios import Scenario, register, stopwatch

MB = 1 << 20
# What a daemon keeps once the deletes are over, not what it has yet to let go of: both keep each
# finished operation 5 s for their clients to read; the bundled one trims its heap 2 s after the
# last, while LXD's Go runtime hands freed heap back gradually (its scavenger, and a forced
# collection every 2 minutes), so both are read after this long (a few seconds with --quick).
AFTER_DELETE_QUIET = (5.0, 65.0)


def _parallel(target, names, work, workers=8):
    """Run work(client, name) for each name on a few threads (one pylxd client per thread).

    The daemons run what the threads ask side by side; 8 at a time keeps both CPUs busy on
    the daemons' side without queueing hundreds of operations on them. The clients' connections
    are closed at the end: pylxd keeps one per URL it used (up to 25 per client), and a daemon
    keeps each open connection, with its last request and reply, until the client closes it;
    left to the garbage collector, thousands would still be open when the daemon's memory
    after the density ramp is read.
    """
    local, made = threading.local(), []

    def one(name):
        client = getattr(local, 'client', None)
        if client is None:
            client = local.client = pylxd.Client(endpoint=target.socket)
            made.append(client)
        return work(client, name)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, names))
    finally:
        for client in made:
            client.api.session.close()


def _power_of_two(n):
    return n > 0 and n & (n - 1) == 0


def _remove(client, name):
    try:
        instance = client.instances.get(name)
        if instance.status != 'Stopped':
            instance.stop(force=True, wait=True)
        instance.delete(wait=True)
    except Exception:
        pass


@register
class ListLatency(Scenario):
    name = 'GET instances recursion'
    description = ('GET /1.0/instances?recursion=1 and =2 with N stopped instances '
                   '(500; 10 with --quick)')
    reps = (3, 10)
    cheap = True

    def __init__(self, quick):
        super().__init__(quick)
        self.count = 10 if quick else 500

    def setup(self, target):
        fingerprint = target.ensure_image(images.busybox())
        names = [target.unique('list') for _ in range(self.count)]
        state = {'names': names}

        def create(client, name):
            client.instances.create({'name': name, 'source': {
                'type': 'image', 'fingerprint': fingerprint}}, wait=True)
        try:
            _parallel(target, names, create)
        except Exception:
            self.teardown(target, state)
            raise
        return state

    def measure(self, target, state):
        wanted = set(state['names'])
        values = {}
        for recursion in (1, 2):
            with stopwatch() as t:
                listed = target.list_raw(recursion)
            names = {entry['name'] for entry in listed}
            target.check(wanted <= names, '%s: recursion=%d listed %d of the %d instances'
                         % (target.name, recursion, len(wanted & names), len(wanted)))
            if recursion == 2:
                target.check(all('state' in entry for entry in listed),
                             '%s: recursion=2 entries without state' % target.name)
            values['GET instances?recursion=%d (%d)' % (recursion, self.count)] = t.seconds
        return values

    def teardown(self, target, state):
        _parallel(target, state['names'], _remove)


@register
class ListRunningLatency(ListLatency):
    """The listing of running containers: each one's state (cgroups, its netns) is read.

    300 running busybox containers, the count the issue measured LXD at (1.18 s); both sides
    start them 4 at a time, untimed.
    """
    name = 'GET instances recursion running'
    description = ('GET /1.0/instances?recursion=1 and =2 with N running busybox containers '
                   '(300; 10 with --quick)')
    reps = (3, 7)
    cheap = False

    def __init__(self, quick):
        super().__init__(quick)
        self.count = 10 if quick else 300

    def setup(self, target):
        fingerprint = target.ensure_image(images.busybox())
        names = [target.unique('listrun') for _ in range(self.count)]
        state = {'names': names}

        def launch(client, name):
            client.instances.create({'name': name, 'source': {
                'type': 'image', 'fingerprint': fingerprint}}, wait=True).start(wait=True)
        try:
            _parallel(target, names, launch, workers=4)
        except Exception:
            self.teardown(target, state)
            raise
        return state

    def measure(self, target, state):
        values = super().measure(target, state)
        running = [entry for entry in target.list_raw(2) if entry['name'] in state['names']
                   and entry['status'] == 'Running' and entry['state']['pid'] > 0]
        target.check(len(running) == self.count, '%s: %d of the %d listed as running'
                     % (target.name, len(running), self.count))
        return {key + ' running': value for key, value in values.items()}


@register
class Density(Scenario):
    """Start busybox containers until the limit or until the host's memory runs low.

    Host memory per container: MemAvailable before the ramp and at its peak, each the median
    of several samples after dropping the page cache (host.settled_memory), so that it counts
    everything a container costs (its processes, its monitor, kernel objects, the daemon) but
    not files someone read meanwhile. On a machine other people use at the same time it still
    moves with their programs, so it is reported beside figures that count only what is the
    containers': the memory charged to their cgroups; that plus the proportional share (PSS)
    of each container's liblxc monitor process; and the accounted total, that plus the growth
    of the kernel's own memory (unreclaimable slab, per-cpu, stacks, page tables: namespaces,
    veths, cgroups) and of the daemon, per container.
    """
    name = 'density'
    description = ('start busybox containers until 1000 run (LXD, the reference: 200; 20 with '
                   '--quick) or memory runs low; launch time as the count grows, memory per '
                   'container, daemon memory')
    reps = (1, 1)
    units = {'density: running': 'n', 'density: host MB/container': 'MB',
             'density: cgroup MB/container': 'MB',
             'density: cgroup+monitor MB/container': 'MB',
             'density: accounted MB/container': 'MB',
             'density: daemon MB before': 'MB', 'density: daemon MB at peak': 'MB',
             'density: daemon MB after delete': 'MB',
             'density: launch slowdown': 'x', 'density: raw lxc-start slowdown': 'x'}

    # LXD's ramp stops here: at 0.5-1 s a launch and ~1.4 s a forced delete on this machine
    # (loaded), 1000 LXD containers would take about 20 minutes, most of the 30 the full run may
    # take. The targets at 1000 are nova-lxd's own (count, MB each, flat launch, memory given
    # back); LXD is the reference.
    reference_limit = 200
    # raw lxc-starts beside nova-lxd's containers at the first and the last step (--no-raw: off)
    raw_reference = True

    def __init__(self, quick):
        super().__init__(quick)
        self.limit = 20 if quick else 1000
        self.step = 5 if quick else 50

    def limit_for(self, target):
        return self.limit if target.kind == 'nova-lxd' else min(self.limit,
                                                                self.reference_limit)

    @staticmethod
    def memory_floor():
        # Leave room for everyone else on the machine.
        return max(3 << 30, host.meminfo()['MemTotal'] // 6)

    def _launch(self, client, fingerprint, name):
        """Create + start one; (instance, seconds) or (None, the error), never half-made."""
        try:
            with stopwatch() as t:
                instance = client.instances.create(
                    {'name': name, 'source': {'type': 'image', 'fingerprint': fingerprint}},
                    wait=True)
                instance.start(wait=True)
            return instance, t.seconds
        except Exception as exc:
            try:
                if client.instances.exists(name):
                    _remove(client, name)
            except Exception:
                pass
            return None, exc

    @staticmethod
    def _raw_launch(raw, started):
        """One raw lxc-start on the target's bridge, timed; kept in `started`.

        Kept until the step's timed launches are done, booting as the target's own do, so
        that each side's launches follow the same background.
        """
        container = raw.define()
        started.append(container)
        with stopwatch() as t:
            raw.start(container)
        return t.seconds

    def _ramp(self, target, fingerprint, limit, raw=None):
        """Launch in steps until the limit; returns (running, launch times, curve, why it ended).

        Of each step, the first fifth is launched one after another, each timed alone with
        nothing else going on (once the previous step's containers have booted): those give
        the launch time at that count. The rest of the step
        is launched a few at a time, untimed, which only brings the count up faster. At the
        first and the last step, `raw` (RawLXC on the target's bridge, if given) starts as
        many containers of the same rootfs straight through liblxc, each paired with one of
        the timed launches (alternately before and after it) and left running until the
        step's timed launches are done: the physical reference at the same count, on the same
        host and bridge, under the same conditions.
        """
        running, launch_times, curve = [], [], []
        timed = max(1, self.step // 5)
        while len(running) < limit:
            if host.mem_available() < self.memory_floor():
                return running, launch_times, curve, 'memory'
            size = min(self.step, limit - len(running))
            paired = raw is not None and (not curve or len(running) + size >= limit)
            step_times, raw_times, raw_started = [], [], []
            settle = host.wait_quiet()     # the previous step's containers have booted
            try:
                for i in range(min(timed, size)):
                    # paired with raw: ABBA order, so that neither side always follows the other
                    if paired and i % 2:
                        raw_times.append(self._raw_launch(raw, raw_started))
                    instance, seconds = self._launch(target.client, fingerprint,
                                                     target.unique('dense'))
                    if instance is None:  # running out of something ends a ramp: keep what ran
                        return running, launch_times, curve, 'launch %d failed: %s' % (
                            len(running) + 1, seconds)
                    running.append(instance)
                    step_times.append(seconds)
                    if paired and not i % 2:
                        raw_times.append(self._raw_launch(raw, raw_started))
            finally:
                for container in raw_started:
                    raw.discard(container)
            names = [target.unique('dense') for _ in range(size - len(step_times))]
            launched = _parallel(target, names, lambda client, name: self._launch(
                client, fingerprint, name), workers=4)
            running.extend(instance for instance, _ in launched if instance is not None)
            launch_times.extend(step_times)
            failed = [error for instance, error in launched if instance is None]
            if failed:
                return running, launch_times, curve, 'a launch near %d failed: %s' % (
                    len(running) + 1, failed[0])
            point = {'running': len(running), 'launch_median_s': statistics.median(step_times),
                     'settle_s': settle,
                     'daemon_rss_mb': host.rss(target.pid) / MB}
            if raw_times:
                point['raw_launch_median_s'] = statistics.median(raw_times)
            # the full listing at doubling counts (50, 100, 200, 400, 800)
            if len(running) % self.step == 0 and _power_of_two(len(running) // self.step):
                with stopwatch() as listing:
                    target.list_raw(2)
                point['recursion2_s'] = listing.seconds
            curve.append(point)
        return running, launch_times, curve, 'limit'

    def measure(self, target, state):
        fingerprint = target.ensure_image(images.busybox())
        daemon_before = host.rss(target.pid)
        available_before, kernel_before = host.settled_memory()
        running = []
        # the physical reference of nova-lxd's ramp, the one the flatness target is about
        raw = None
        if self.raw_reference and target.kind == 'nova-lxd':
            raw = rawlxc.RawLXC(bridge=target.bridge)
        try:
            with stopwatch() as ramp:
                running, launch_times, curve, stopped_by = self._ramp(
                    target, fingerprint, self.limit_for(target), raw)
            # three in a row, as a client polling the list: the first also learns the inits
            # started since the last listing of the ramp (the details keep all three)
            listings = []
            for _ in range(3):
                with stopwatch() as peak_listing:
                    listed = target.list_raw(2)
                listings.append(peak_listing.seconds)
            target.check(len(listed) >= len(running), '%s: recursion=2 listed %d of %d'
                         % (target.name, len(listed), len(running)))
            pids = [target.check_running(instance) for instance in running]
            cgroups = sum(host.cgroup_memory(pid) for pid in pids)
            monitors = sum(host.pss(host.parent(pid)) for pid in pids)
            available_peak, kernel_peak = host.settled_memory()
            daemon_peak = host.rss(target.pid)
        finally:
            if raw is not None:
                raw.close()
            with stopwatch() as cleanup:
                _parallel(target, [instance.name for instance in running], _remove)
        left = {url.rsplit('/', 1)[-1] for url in target.list_raw(0)}
        target.check(not left & {instance.name for instance in running},
                     '%s: density containers left after deleting them all' % target.name)
        count = len(running)
        target.check(count > 0, '%s: no container started' % target.name)
        available_after, kernel_after = host.settled_memory()
        daemon_deleted = host.rss(target.pid)
        time.sleep(AFTER_DELETE_QUIET[0 if self.quick else 1])
        daemon_after = host.rss(target.pid)
        first = curve[0]['launch_median_s'] if curve else statistics.median(launch_times)
        last = curve[-1]['launch_median_s'] if curve else first
        state['details'] = {'curve': curve, 'stopped_by': stopped_by,
                            'delete_all_s': cleanup.seconds,
                            'delete_per_container_s': cleanup.seconds / count,
                            'ramp_s': ramp.seconds,
                            'recursion2_at_peak_s': listings,
                            'host_mb_available_before': available_before / MB,
                            'host_mb_available_peak': available_peak / MB,
                            'host_mb_available_after': available_after / MB,
                            'kernel_mb_before': kernel_before / MB,
                            'kernel_mb_peak': kernel_peak / MB,
                            'kernel_mb_after': kernel_after / MB,
                            'host_mb_given_back_per_container':
                                (available_after - available_peak) / MB / count,
                            'daemon_rss_before_mb': daemon_before / MB,
                            'daemon_rss_right_after_delete_mb': daemon_deleted / MB}
        values = {
            'density: running': count,
            'density: host MB/container': (available_before - available_peak) / MB / count,
            'density: cgroup MB/container': cgroups / MB / count,
            'density: cgroup+monitor MB/container': (cgroups + monitors) / MB / count,
            'density: accounted MB/container':
                (cgroups + monitors + kernel_peak - kernel_before + daemon_peak - daemon_before)
                / MB / count,
            'density: launch first %d' % self.step: first,
            'density: launch last %d' % self.step: last,
            'density: launch slowdown': last / first,
            'density: GET recursion=2 at peak': statistics.median(listings),
            'density: daemon MB before': daemon_before / MB,
            'density: daemon MB at peak': daemon_peak / MB,
            'density: daemon MB after delete': daemon_after / MB,
        }
        raw_curve = [point['raw_launch_median_s'] for point in curve
                     if 'raw_launch_median_s' in point]
        if len(raw_curve) == 2:
            values.update({'density: raw lxc-start first %d' % self.step: raw_curve[0],
                           'density: raw lxc-start last %d' % self.step: raw_curve[1],
                           'density: raw lxc-start slowdown': raw_curve[1] / raw_curve[0]})
        return values
