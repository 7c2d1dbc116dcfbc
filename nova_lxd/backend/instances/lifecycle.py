"""Starting, stopping, freezing: the LXC config written and the container run by liblxc.

A mixin of InstanceService (service.py). Start goes through `lxc-start` (see _lxc_start); stop
is a clean shutdown with the image's halt signal within a timeout, then a forced one. A device's
slow clean-up after a stop (a veth's deletion costs ~16 ms in the kernel) runs in the background
(deferred.py): the next start of the instance finishes it first.
"""
import logging
import os
import shutil
import subprocess
import time

from nova_lxd.backend.errors import ApiError, BadRequest
from nova_lxd.backend.instances import config as cfg
from nova_lxd.backend.instances import deferred
from nova_lxd.backend.instances import devices as device_registry
from nova_lxd.backend.instances import idmap as idmaps
from nova_lxd.backend.instances import lxcconf
from nova_lxd.backend.instances import monitor
from nova_lxd.backend.instances import reboot
from nova_lxd.backend.instances import shutdown
from nova_lxd.backend.instances.common import now
from nova_lxd.backend.instances.paths import resolve_in_rootfs

LOG = logging.getLogger(__name__)
DEFAULT_STOP_TIMEOUT = 30
LXC_START = shutil.which('lxc-start') or '/usr/bin/lxc-start'
# No PATH: liblxc then writes the id maps itself (we are root) instead of running the setuid
# newuidmap/newgidmap helpers, which cost ~50 ms per start. The container's init gets a clean
# environment from liblxc either way.
LXC_START_ENV = {'PATH': '/nonexistent'}
LXC_LOG_LIMIT = 1024 * 1024
FREEZE_TIMEOUT = 10.0
FREEZE_POLL = 0.002


def _load_kernel_modules(value):
    """linux.kernel_modules: load them on the host before the start, as LXD does."""
    for module in filter(None, (m.strip() for m in value.split(','))):
        if os.path.isdir('/sys/module/%s' % module.replace('-', '_')):
            continue
        result = subprocess.run(['modprobe', '--', module], capture_output=True, text=True)
        if result.returncode != 0:
            raise BadRequest('linux.kernel_modules: cannot load %s: %s'
                             % (module, result.stderr.strip()))


def _rotate(path, limit=LXC_LOG_LIMIT):
    """Keep liblxc's per-instance log bounded: one previous generation, as lxc.log.1."""
    try:
        if os.path.getsize(path) > limit:
            os.replace(path, path + '.1')
    except FileNotFoundError:
        pass


def _freezer_state(container):
    try:
        return (container.get_cgroup_item('freezer.state') or '').strip()
    except ValueError:
        # the bindings ask for the length, then the value: FREEZING became FROZEN in between
        return 'FREEZING'


def _freeze_v1(container):
    """Freeze through the cgroup v1 freezer, polled every few ms; None where there is none.

    liblxc's freeze() reads freezer.state once after writing FROZEN and, if the kernel still
    says FREEZING, sleeps a whole second before looking again: a snapshot of a running
    container (frozen for its instant) cost 1 s most of the time.
    """
    if not container.set_cgroup_item('freezer.state', 'FROZEN'):
        return None        # no v1 freezer (cgroup2): liblxc's freeze waits on events there
    deadline = time.monotonic() + FREEZE_TIMEOUT
    # reading freezer.state is what makes the kernel notice that every task is frozen
    while _freezer_state(container) != 'FROZEN':
        if time.monotonic() > deadline:
            container.set_cgroup_item('freezer.state', 'THAWED')
            return False
        time.sleep(FREEZE_POLL)
    # liblxc's own freeze now finds FROZEN at its first read: it records the state in the
    # monitor (container.state says FROZEN) and tells its state listeners, without the sleep
    return container.freeze()


class LifecycleMixin:
    def _device_context(self, doc, config, idmap, pid=None):
        return device_registry.DeviceContext(
            self.daemon, doc['name'], config, self._rootfs_of(doc), idmap,
            not idmap, init_pid=pid, volatile={k: v for k, v in doc['config'].items()
                                               if k.startswith('volatile.')})

    def _init_kind(self, rootfs):
        try:
            target = resolve_in_rootfs(rootfs, '/sbin/init')
        except ApiError:
            return ''
        base = os.path.basename(target)
        return 'busybox' if base == 'busybox' else 'systemd' if base == 'systemd' else ''

    @staticmethod
    def _post_stop_jobs():
        """Devices' slow clean-up after a stop, in the background (see deferred.py)."""
        return deferred.BACKGROUND

    def _start(self, name):
        """Blocking: write the LXC config and start the container."""
        began = time.monotonic()
        doc = self._doc(name)
        config, devices = self.expanded(doc)
        container = self.container(name)
        if container.running:
            raise BadRequest('The instance is already running')
        if doc['config'].get('volatile.last_state.power') == 'RUNNING':
            self._after_stop(name)   # it stopped on its own (poweroff inside): clean up first
            doc = self._doc(name)
        rootfs = self._rootfs_of(doc)
        if not os.path.isdir(rootfs):
            raise BadRequest('The instance\'s rootfs %s is missing' % rootfs)
        wanted, base = self._wanted_map(config, name, doc['config'].get('volatile.idmap.base'))
        current = idmaps.from_json(doc['config'].get('volatile.last_state.idmap', ''))
        if current != wanted:
            if cfg.is_true(config.get('security.protection.shift', 'false')):
                raise BadRequest('The rootfs would need shifting, refused by '
                                 'security.protection.shift')
            idmaps.shift_rootfs(rootfs, current, wanted)
            self._set_volatile(name, dict(self._idmap_volatile(wanted, base), **{
                'volatile.last_state.idmap': idmaps.to_json(wanted)}))
            doc = self._doc(name)
        _load_kernel_modules(config.get('linux.kernel_modules', ''))
        ctx = self._device_context(doc, config, wanted)
        lines = []
        started = []
        try:
            for dev_name, dev in sorted(devices.items()):
                handler = device_registry.get(dev['type'])
                handler.pre_start(ctx, dev_name, dev)
                started.append((handler, dev_name, dev))
                lines += handler.lxc_config(ctx, dev_name, dev)
            self._render(doc, 'start', wanted)
            os.makedirs(os.path.join(self.logs, name), mode=0o700, exist_ok=True)
            _rotate(self.lxc_log_path(name))
            os.makedirs(os.path.join(self.lxcpath, name), mode=0o700, exist_ok=True)
            text = lxcconf.build(name, rootfs, config, wanted, self.console_log_path(name),
                                 self.lxc_log_path(name), self._init_kind(rootfs),
                                 self.lxcfs.dir, lines)
            path = os.path.join(self.lxcpath, name, 'config')
            with open(path + '.tmp', 'w') as f:
                f.write(text)
            os.rename(path + '.tmp', path)
            prepared = time.monotonic()
            self._lxc_start(name)
        except BaseException:
            for handler, dev_name, dev in reversed(started):
                try:
                    handler.post_stop(ctx, dev_name, dev)
                except Exception:
                    LOG.exception('Cleaning up device %s of %s', dev_name, name)
            self._post_stop_jobs().drain_all()   # a failed start is reported once it is undone
            raise
        for handler, dev_name, dev in started:
            try:
                handler.post_start(ctx, dev_name, dev)
            except Exception:
                LOG.exception('Device %s of %s, after the start', dev_name, name)
        ctx.volatile['volatile.last_state.power'] = 'RUNNING'
        self._set_volatile(name, ctx.volatile, last_used_at=now())
        self._watch_monitor(name, monitor.started_pid(self.lxcpath, name))
        LOG.debug('Started %s in %.3fs (preparing %.3fs, lxc-start %.3fs)', name,
                  time.monotonic() - began, prepared - began, time.monotonic() - prepared)

    def _lxc_start(self, name):
        """Start through liblxc's lxc-start, never Container.start() in this process.

        liblxc moves the calling process into the container's monitor cgroup, and the calling
        process must be the throwaway monitor, not the daemon. A daemonized lxc-start exits 0
        only once its monitor reported RUNNING, so success needs no second query of the monitor
        (a round trip to a process that must be scheduled, several ms on a loaded host).
        """
        monitor.wait_gone(self.lxcpath, name, LXC_START)   # of the previous start or stop
        result = subprocess.run([LXC_START, '-P', self.lxcpath, '-n', name,
                                 '-p', monitor.pid_file(self.lxcpath, name)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, close_fds=True, timeout=120,
                                env=LXC_START_ENV)
        if result.returncode != 0:
            returned = time.time()
            # reported once liblxc has removed what it made (its monitor still tears down)
            monitor.wait_gone(self.lxcpath, name, LXC_START, always=True)
            monitor.remove_orphaned_cgroups(name, returned)
            raise ApiError('Failed to start instance %s: %s' % (name, self._lxc_log_reason(name)))

    def _lxc_log_reason(self, name):
        """Why liblxc failed: the first ERROR lines of its log, else its last lines.

        The last lines alone are often the clean-up's warnings after the failure (a full
        bridge's "Exchange full" came before five cgroup warnings).
        """
        try:
            with open(self.lxc_log_path(name)) as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return 'no LXC log'
        errors = [line for line in lines if ' ERROR ' in line]
        return ' | '.join(errors[:3] or lines[-5:]) or 'no details in the LXC log'

    def _stop(self, name, force, timeout):
        """Blocking: clean shutdown within timeout (halt signal), then forced; devices cleaned."""
        began = time.monotonic()
        doc = self._doc(name)
        container = self.container(name)
        lxc_state = container.state   # one query to the monitor, not two (running, then state)
        if lxc_state == 'STOPPED':
            raise BadRequest('The instance is already stopped')
        clean = False
        if lxc_state == 'FROZEN':
            container.unfreeze()
        if not force:
            if timeout is None or timeout < 0:
                timeout = int(cfg.expand(doc, self._profiles(doc.get('profiles') or []))[0]
                              .get('boot.host_shutdown_timeout', DEFAULT_STOP_TIMEOUT))
            clean = shutdown.clean_shutdown(container, timeout)
        if not clean and container.running:
            self._before_kill(name)
            if not container.stop():
                raise ApiError('Failed to stop instance %s' % name)
        stopped = time.monotonic()
        self._after_stop(name)
        LOG.debug('Stopped %s in %.3fs (%s %.3fs, clean-up %.3fs)', name,
                  time.monotonic() - began, 'shutdown' if clean else 'kill', stopped - began,
                  time.monotonic() - stopped)
        return clean

    def _devices_of(self, name):
        """(device context, [(device name, device), ...] in order) of an instance."""
        doc = self._doc(name)
        config, devices = self.expanded(doc)
        return self._device_context(doc, config, self.idmap(name)), sorted(devices.items())

    def _before_kill(self, name):
        ctx, devices = self._devices_of(name)
        for dev_name, dev in devices:
            device_registry.get(dev['type']).pre_kill(ctx, dev_name, dev)

    def _after_stop(self, name):
        self._forget_running(name)     # the listing's socket would keep the netns alive
        ctx, devices = self._devices_of(name)
        for dev_name, dev in devices:
            try:
                device_registry.get(dev['type']).post_stop(ctx, dev_name, dev)
            except Exception:
                LOG.exception('Cleaning up device %s of %s', dev_name, name)
        ctx.volatile['volatile.last_state.power'] = 'STOPPED'
        self._set_volatile(name, ctx.volatile)

    def _restart_in_place(self, name, timeout):
        """Blocking: a clean restart with the image's reboot signal; False if it has none.

        Not back within timeout: forced, as a clean stop is (see reboot.py).
        """
        config = self.expanded(self._doc(name))[0]
        if not reboot.wanted(config):
            return False
        if timeout is None or timeout < 0:
            timeout = int(config.get('boot.host_shutdown_timeout', DEFAULT_STOP_TIMEOUT))
        if reboot.reboot_in_place(self.container(name), timeout):
            return True
        if self.container(name).running:
            self._stop(name, True, 0)
        else:
            self._after_stop(name)     # its init halted instead of rebooting
        self._start(name)
        return True

    async def change_state(self, name, body):
        """PUT .../state: returns the operation."""
        action = body.get('action')
        if action not in ('start', 'stop', 'restart', 'freeze', 'unfreeze'):
            raise BadRequest('Unknown state action %r' % action)
        self._doc(name)
        if body.get('stateful'):
            raise BadRequest('Stateful stop/start needs CRIU, which does not work on this host')
        force = bool(body.get('force', False))
        timeout = body.get('timeout', -1)
        if not isinstance(timeout, (int, float)):
            raise BadRequest('timeout must be a number')
        source = '/1.0/instances/%s' % name

        async def work(op):
            async with self._lock(name):
                if action == 'start':
                    await op.run_blocking(self._start, name)
                    self._event('instance-started', source)
                elif action == 'restart' and not force and await op.run_blocking(
                        self._restart_in_place, name, timeout):
                    self._event('instance-restarted', source)
                elif action in ('stop', 'restart'):
                    clean = await op.run_blocking(self._stop, name, force, timeout)
                    self._event(
                        'instance-shutdown' if clean else 'instance-stopped', source)
                    if action == 'restart':
                        await op.run_blocking(self._start, name)
                        self._event('instance-restarted', source)
                    elif self._doc(name).get('ephemeral'):
                        await op.run_blocking(self._remove_everything, name, self._doc(name))
                        self._event('instance-deleted', source)
                elif action == 'freeze':
                    await op.run_blocking(self._freeze, name)
                    self._event('instance-paused', source)
                else:
                    await op.run_blocking(self._unfreeze, name)
                    self._event('instance-resumed', source)
        return self.daemon.operations.start(
            work, '%s instance' % {'start': 'Starting', 'stop': 'Stopping',
                                   'restart': 'Restarting', 'freeze': 'Freezing',
                                   'unfreeze': 'Unfreezing'}[action],
            {'instances': [source], 'containers': ['/1.0/containers/%s' % name]})

    def _freeze(self, name):
        container = self.container(name)
        lxc_state = container.state   # one query to the monitor, not two (running, then state)
        if lxc_state == 'STOPPED':
            raise BadRequest('The instance isn\'t running')
        if lxc_state == 'FROZEN':
            raise BadRequest('The instance is already frozen')
        began = time.monotonic()
        frozen = _freeze_v1(container)
        if frozen is None:
            frozen = container.freeze()
        if not frozen:
            raise ApiError('Failed to freeze instance %s' % name)
        LOG.debug('Froze %s in %.3fs', name, time.monotonic() - began)

    def _unfreeze(self, name):
        container = self.container(name)
        if container.state != 'FROZEN':
            raise BadRequest('The instance isn\'t frozen')
        if not container.unfreeze():
            raise ApiError('Failed to unfreeze instance %s' % name)

    freeze = _freeze
    unfreeze = _unfreeze
