"""Scale: API latency with many instances, and density (how many running containers fit)."""
import statistics
from concurrent.futures import ThreadPoolExecutor

import pylxd

from benchmarks import host, images
from benchmarks.scenarios import Scenario, register, stopwatch

MB = 1 << 20


def _parallel(target, names, work, workers=4):
    """Run work(client, name) for each name on a few threads, one pylxd client per call."""
    def one(name):
        return work(pylxd.Client(endpoint=target.socket), name)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, names))


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
class Density(Scenario):
    """Start busybox containers until the limit or until the host's memory runs low.

    Host memory per container comes from MemAvailable before and after, so it counts everything a
    container costs (its processes, the daemon's monitors, page cache of its rootfs): on a machine
    other people use at the same time, it is noisy. The memory charged to the containers' own
    cgroups is reported beside it (less noisy; it misses what lives outside the containers).
    """
    name = 'density'
    description = ('start busybox containers until 1000 run (LXD, the reference: 200; 20 with '
                   '--quick) or memory runs low; launch time as the count grows, memory per '
                   'container, daemon memory')
    reps = (1, 1)
    units = {'density: running': 'n', 'density: host MB/container': 'MB',
             'density: cgroup MB/container': 'MB',
             'density: daemon MB before': 'MB', 'density: daemon MB at peak': 'MB',
             'density: daemon MB after delete': 'MB',
             'density: launch slowdown': 'x'}

    # LXD's ramp stops here: at 0.5-1 s a launch and ~1.4 s a forced delete on this machine
    # (loaded), 1000 LXD containers would take about 20 minutes, most of the 30 the full run may
    # take. The targets at 1000 are nova-lxd's own (count, MB each, flat launch, memory given
    # back); LXD is the reference.
    reference_limit = 200

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

    def measure(self, target, state):
        image = images.busybox()
        fingerprint = target.ensure_image(image)
        daemon_before = host.rss(target.pid)
        available_before = host.mem_available()
        running, launch_times, curve = [], [], []
        stopped_by = 'limit'
        limit = self.limit_for(target)
        try:
            while len(running) < limit:
                if host.mem_available() < self.memory_floor():
                    stopped_by = 'memory'
                    break
                name = target.unique('dense')
                try:
                    with stopwatch() as t:
                        instance = target.client.instances.create(
                            {'name': name,
                             'source': {'type': 'image', 'fingerprint': fingerprint}}, wait=True)
                        instance.start(wait=True)
                except Exception as exc:
                    # Running out of something is how a density ramp may end: keep what ran.
                    stopped_by = 'launch %d failed: %s' % (len(running) + 1, exc)
                    if target.client.instances.exists(name):
                        target.remove(target.client.instances.get(name))
                    break
                running.append(instance)
                launch_times.append(t.seconds)
                if len(running) % self.step == 0:
                    point = {
                        'running': len(running),
                        'launch_median_s': statistics.median(launch_times[-self.step:]),
                        'host_mb_per_container':
                            (available_before - host.mem_available()) / MB / len(running),
                        'daemon_rss_mb': host.rss(target.pid) / MB}
                    # The full listing at doubling counts only: at 1000 it may take a minute.
                    if _power_of_two(len(running) // self.step):
                        with stopwatch() as listing:
                            target.list_raw(2)
                        point['recursion2_s'] = listing.seconds
                    curve.append(point)
            with stopwatch() as peak_listing:
                listed = target.list_raw(2)
            target.check(len(listed) >= len(running), '%s: recursion=2 listed %d of %d'
                         % (target.name, len(listed), len(running)))
            pids = [target.check_running(instance) for instance in running]
            cgroups = sum(host.cgroup_memory(pid) for pid in pids)
            available_peak = host.mem_available()
            daemon_peak = host.rss(target.pid)
        finally:
            # A few at a time: deleting 1000 one by one would take longer than the ramp.
            with stopwatch() as cleanup:
                _parallel(target, [instance.name for instance in running], _remove)
        left = {url.rsplit('/', 1)[-1] for url in target.list_raw(0)}
        target.check(not left & {instance.name for instance in running},
                     '%s: density containers left after deleting them all' % target.name)
        count = len(running)
        target.check(count > 0, '%s: no container started' % target.name)
        first = curve[0]['launch_median_s'] if curve else statistics.median(launch_times)
        last = curve[-1]['launch_median_s'] if curve else first
        state['details'] = {'curve': curve, 'stopped_by': stopped_by,
                            'delete_all_s': cleanup.seconds,
                            'daemon_rss_before_mb': daemon_before / MB,
                            'host_mb_given_back': (host.mem_available() - available_peak) / MB}
        values = {
            'density: running': count,
            'density: host MB/container': (available_before - available_peak) / MB / count,
            'density: cgroup MB/container': cgroups / MB / count,
            'density: launch first %d' % self.step: first,
            'density: launch last %d' % self.step: last,
            'density: launch slowdown': last / first,
            'density: daemon MB before': daemon_before / MB,
            'density: daemon MB at peak': daemon_peak / MB,
            'density: daemon MB after delete': host.rss(target.pid) / MB,
        }
        values['density: GET recursion=2 at peak'] = peak_listing.seconds
        return values
