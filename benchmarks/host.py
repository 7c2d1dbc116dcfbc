"""What the benchmarks read from the host itself (/proc): checks and memory, same for every side."""
import os
import time


def wait_for(predicate, timeout=30, interval=0.02):
    """Poll until predicate() is true; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def cpu_busy(window=0.25):
    """Fraction of the host's CPU time busy (not idle or waiting for I/O) over a short window."""
    def sample():
        values = [int(v) for v in _read('/proc/stat').split('\n', 1)[0].split()[1:]]
        return sum(values) - values[3] - values[4], sum(values)
    busy_before, total_before = sample()
    time.sleep(window)
    busy_after, total_after = sample()
    return (busy_after - busy_before) / max(1, total_after - total_before)


def wait_quiet(threshold=0.25, timeout=20.0):
    """Wait (bounded) until the host's CPU is mostly idle: what was just launched has booted.

    Before a timed step that follows untimed work (containers booting, their DHCP exchanges),
    so that the step measures the operation at that count, not the boot of the previous ones.
    Returns the seconds waited.
    """
    began = time.monotonic()
    while cpu_busy() > threshold and time.monotonic() < began + timeout:
        pass
    return time.monotonic() - began


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ''


def is_container_init(pid):
    """True when host pid `pid` is an init (/sbin/init, systemd) in a pid namespace of its own."""
    if not pid or pid <= 0:
        return False
    cmdline = _read('/proc/%d/cmdline' % pid).split('\0')[0]
    try:
        own_ns = os.readlink('/proc/%d/ns/pid' % pid) != os.readlink('/proc/self/ns/pid')
    except OSError:
        return False
    return own_ns and ('init' in cmdline or 'systemd' in cmdline)


def process_gone(pid):
    """True when pid no longer runs (exited, or a zombie waiting for its parent)."""
    for line in _read('/proc/%d/status' % pid).splitlines():
        if line.startswith('State:'):
            return line.split()[1] in ('Z', 'X')
    return True


def init_ready(pid):
    """True once the init has installed its signal handlers, so a clean stop is not lost."""
    for line in _read('/proc/%d/status' % pid).splitlines():
        if line.startswith('SigCgt:'):
            return int(line.split()[1], 16) != 0
    return False


def _pid_namespace(pid):
    try:
        return os.readlink('/proc/%d/ns/pid' % pid)
    except OSError:
        return None


def _boot_script_runs(pid):
    namespace = _pid_namespace(pid)
    for entry in os.listdir('/proc'):
        if entry.isdigit() and int(entry) != pid and _pid_namespace(int(entry)) == namespace:
            if 'rcS' in _read('/proc/%s/cmdline' % entry):
                return True
    return False


def wait_boot(pid, timeout=60, settle=2.0, interval=0.05):
    """Wait until init is ready for a halt signal and its boot script (rcS) has finished.

    busybox init records a signal that arrives during sysinit and acts on it only afterwards, so
    a clean stop asked for during boot would measure the rest of the boot. rcS must be seen
    running and then gone; if it is never seen within `settle` seconds (a script faster than the
    polling, or an image without one), the boot counts as done. Returns False on timeout.
    """
    start = time.monotonic()
    seen = False
    while time.monotonic() - start < timeout:
        if init_ready(pid):
            if _boot_script_runs(pid):
                seen = True
            elif seen or time.monotonic() - start > settle:
                return True
        time.sleep(interval)
    return False


def meminfo():
    values = {}
    for line in _read('/proc/meminfo').splitlines():
        key, _, rest = line.partition(':')
        values[key] = int(rest.split()[0]) * 1024
    return values


def mem_available():
    return meminfo()['MemAvailable']


def drop_caches():
    """Write back and drop the page cache, dentries and inodes (root only; False if refused).

    Before a memory sample, so that files read since the last one (images unpacked, logs,
    other people's builds) do not count as memory the containers took or gave back.
    """
    os.sync()
    try:
        with open('/proc/sys/vm/drop_caches', 'w') as f:
            f.write('3\n')
        return True
    except OSError:
        return False


# Kernel memory no process's RSS shows: what namespaces, veths, cgroups and page tables cost.
KERNEL_FIELDS = ('SUnreclaim', 'Percpu', 'KernelStack', 'PageTables')


def settled_memory(samples=5, interval=0.4):
    """(MemAvailable, kernel memory) after dropping caches, each the median of a few samples.

    One reading on a shared machine swings by hundreds of MB (someone's compile, a page-cache
    burst); the median of several after a drop is what is held, give or take that. The kernel
    part (unreclaimable slab, per-cpu, stacks, page tables) moves much less with other people's
    programs than MemAvailable does.
    """
    drop_caches()
    time.sleep(interval)
    available, kernel = [], []
    for _ in range(samples):
        values = meminfo()
        available.append(values['MemAvailable'])
        kernel.append(sum(values.get(field, 0) for field in KERNEL_FIELDS))
        time.sleep(interval)
    return sorted(available)[samples // 2], sorted(kernel)[samples // 2]


def pss(pid):
    """Proportional set size of one process in bytes (shared pages split among their users)."""
    for line in _read('/proc/%d/smaps_rollup' % pid).splitlines():
        if line.startswith('Pss:'):
            return int(line.split()[1]) * 1024
    return 0


def parent(pid):
    for line in _read('/proc/%d/status' % pid).splitlines():
        if line.startswith('PPid:'):
            return int(line.split()[1])
    return 0


def rss(pid):
    """Resident memory of one process in bytes (0 when gone)."""
    for line in _read('/proc/%d/status' % pid).splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
    return 0


def cgroup_memory(pid):
    """Bytes charged to the memory cgroup (v1) that pid's container runs in, 0 if unknown."""
    for line in _read('/proc/%d/cgroup' % pid).splitlines():
        _, controllers, path = line.split(':', 2)
        if 'memory' in controllers.split(','):
            usage = _read('/sys/fs/cgroup/memory%s/memory.usage_in_bytes' % path).strip()
            return int(usage) if usage.isdigit() else 0
    return 0


def machine():
    """A short description of the machine a run happened on, for the table and the JSON."""
    uname = os.uname()
    model = ''
    for line in _read('/proc/cpuinfo').splitlines():
        if line.startswith('model name'):
            model = line.split(':', 1)[1].strip()
            break
    return {
        'hostname': uname.nodename,
        'kernel': uname.release,
        'cpus': os.cpu_count(),
        'cpu_model': model,
        'memory_gib': round(meminfo().get('MemTotal', 0) / (1 << 30), 1),
        'load_average_at_start': list(os.getloadavg()),
    }
