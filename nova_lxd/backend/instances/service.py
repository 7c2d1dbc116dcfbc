"""daemon.instances: system containers on liblxc - create, start/stop, update, rename, delete.

Records live in the db (kind 'instance'); the container's LXC config is regenerated from the
expanded config at every start into DATA/containers/<name>/config (the lxcpath), and the rootfs
lives in the storage pool of the root disk. liblxc calls block, so they run in worker threads
(op.run_blocking / self._blocking), never on the event loop.
"""
import asyncio
import datetime
import functools
import logging
import os
import re
import shutil
import subprocess
import time
import uuid

import lxc

from nova_lxd.backend import lxcfs as lxcfs_mod
from nova_lxd.backend.errors import ApiError, BadRequest, Conflict, NotFound
from nova_lxd.backend.instances import config as cfg
from nova_lxd.backend.instances import devices as device_registry
from nova_lxd.backend.instances import idmap as idmaps
from nova_lxd.backend.instances import limits, lxcconf, state, templates
from nova_lxd.backend.instances.paths import resolve_in_rootfs
from nova_lxd.backend.operations import (FROZEN, RUNNING, STOPPED, ERROR, STARTING, STOPPING,
                                         STATUS_NAMES)

LOG = logging.getLogger(__name__)
NAME = re.compile(r'^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$')
DEFAULT_STOP_TIMEOUT = 30
LXC_START = shutil.which('lxc-start') or '/usr/bin/lxc-start'
# No PATH: liblxc then writes the id maps itself (we are root) instead of running the setuid
# newuidmap/newgidmap helpers, which cost ~50 ms per start. The container's init gets a clean
# environment from liblxc either way.
LXC_START_ENV = {'PATH': '/nonexistent'}
_LXC_STATES = {'RUNNING': RUNNING, 'STOPPED': STOPPED, 'FROZEN': FROZEN, 'FREEZING': RUNNING,
               'THAWED': RUNNING, 'STARTING': STARTING, 'STOPPING': STOPPING,
               'ABORTING': STOPPING}


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _daemon_owned(key):
    """volatile keys only the daemon may write (they describe the rootfs's on-disk state)."""
    return key.startswith(('volatile.idmap.', 'volatile.last_state.')) or \
        key in ('volatile.uuid', 'volatile.base_image', 'volatile.apply_template')


def _load_kernel_modules(value):
    """linux.kernel_modules: load them on the host before the start, as LXD does."""
    for module in filter(None, (m.strip() for m in value.split(','))):
        if os.path.isdir('/sys/module/%s' % module.replace('-', '_')):
            continue
        result = subprocess.run(['modprobe', '--', module], capture_output=True, text=True)
        if result.returncode != 0:
            raise BadRequest('linux.kernel_modules: cannot load %s: %s'
                             % (module, result.stderr.strip()))


def _shift_volume(path, idmap):
    """Shift an unpacked image volume (root-owned files) into an id map."""
    idmaps.shift_rootfs(os.path.join(path, 'rootfs'), [], idmap)


def check_name(name):
    if not isinstance(name, str) or not NAME.match(name) or name.isdigit() or \
            name.endswith('-'):
        raise BadRequest('Invalid instance name %r: letters, digits and -, at most 63, not '
                         'only digits' % (name,))
    return name


class InstanceService:
    def __init__(self, daemon):
        self.daemon = daemon
        self.db = daemon.db
        self.lxcpath = daemon.config.path('containers')
        self.logs = daemon.config.path('logs')
        self.lxcfs = lxcfs_mod.Lxcfs(daemon.config.data_dir)
        self._locks = {}

    # -- start-up --------------------------------------------------------------------------------
    def prepare(self):
        for path in (self.lxcpath, self.logs):
            os.makedirs(path, mode=0o711, exist_ok=True)
        if not self.lxcfs.ensure():
            LOG.warning('lxcfs is not running: containers see the host\'s /proc files')
        self.reconcile()

    def start_background(self):
        self.lxcfs.start_supervision(self._blocking)
        self._autostart_task = asyncio.get_running_loop().create_task(self._autostart())

    async def _autostart(self):
        """Start the stopped instances with boot.autostart=true (after a host reboot), highest
        boot.autostart.priority first, waiting boot.autostart.delay seconds after each."""
        wanted = []
        for name in self.names():
            try:
                config = self.expanded(self._doc(name))[0]
            except ApiError:
                continue
            if cfg.is_true(config.get('boot.autostart', 'false')):
                wanted.append((-int(config.get('boot.autostart.priority') or 0), name,
                               int(config.get('boot.autostart.delay') or 0)))
        for _, name, delay in sorted(wanted):
            try:
                if await self._blocking(self.is_running, name):
                    continue
                LOG.info('Autostarting %s', name)
                op = await self.change_state(name, {'action': 'start'})
                await op.done.wait()
            except Exception:
                LOG.exception('Autostarting %s failed', name)
            if delay:
                await asyncio.sleep(delay)

    def stop_background(self):
        self.lxcfs.stop_supervision()
        if getattr(self, '_autostart_task', None):
            self._autostart_task.cancel()

    def reconcile(self):
        """After a (re)start: keep what runs, report what vanished, drop half-created rows."""
        for doc in self.db.list('instance'):
            name = doc['name']
            if doc.get('_creating'):
                LOG.warning('Instance %s was being created when the daemon stopped: removed', name)
                self._remove_everything(name, doc)
                continue
            running = self.container(name).running
            recorded = doc['config'].get('volatile.last_state.power')
            if running:
                LOG.info('Instance %s is running', name)
                if recorded != 'RUNNING':
                    self._set_volatile(name, {'volatile.last_state.power': 'RUNNING'})
            else:
                state.prune_monitor_cgroups(name)
            if not running and recorded == 'RUNNING':
                LOG.warning('Instance %s was running and its container is gone: now Stopped', name)
                self._set_volatile(name, {'volatile.last_state.power': 'STOPPED'})

    def _event(self, action, source, **context):
        """A lifecycle event for /1.0/events, and the same line in the daemon's log."""
        LOG.info('%s %s %s', action, source, context or '')
        self.daemon.events.lifecycle(action, source, **context)

    async def _blocking(self, func, *args):
        return await self.daemon.operations.run_blocking(func, *args)

    def _lock(self, name):
        return self._locks.setdefault(name, asyncio.Lock())

    # -- lookups (the contract other services use) -----------------------------------------------
    def exists(self, name):
        return self.db.get('instance', name) is not None

    def _doc(self, name):
        doc = self.db.get('instance', name)
        if doc is None or doc.get('_creating'):
            raise NotFound('Instance not found')
        return doc

    def _profiles(self, names):
        found = []
        for name in names:
            profile = self.db.get('profile', name)
            if profile is None:
                raise BadRequest('Profile %r not found' % name)
            found.append(profile)
        return found

    def expanded(self, doc):
        return cfg.expand(doc, self._profiles(doc.get('profiles') or []))

    def container(self, name):
        return lxc.Container(name, self.lxcpath)

    def _root(self, doc):
        _, devices = self.expanded(doc)
        _, root = cfg.root_disk(devices)
        if root is None:
            raise BadRequest('Instance %s has no root disk' % doc['name'])
        return root

    def _pool(self, pool_name):
        try:
            return self.daemon.storage.pool(pool_name)
        except NotFound:
            raise BadRequest('Storage pool %r not found' % pool_name)

    def pool_of(self, name):
        return self._pool(self._root(self._doc(name))['pool'])

    def instance_dir(self, name):
        return self.pool_of(name).instance_path(name)

    def rootfs(self, name):
        return os.path.join(self.instance_dir(name), 'rootfs')

    def idmap(self, name):
        return idmaps.from_json(self._doc(name)['config'].get('volatile.last_state.idmap', ''))

    def is_running(self, name):
        return self.container(name).running

    def init_pid(self, name):
        pid = self.container(name).init_pid
        return pid if pid and pid > 0 else None

    def console_log_path(self, name):
        return os.path.join(self.logs, name, 'console.log')

    def lxc_log_path(self, name):
        return os.path.join(self.logs, name, 'lxc.log')

    def log_files(self, name):
        self._doc(name)
        directory = os.path.join(self.logs, name)
        return sorted(os.listdir(directory)) if os.path.isdir(directory) else []

    def used_by_profile(self, profile):
        return [doc['name'] for doc in self.db.list('instance')
                if profile in (doc.get('profiles') or []) and not doc.get('_creating')]

    # -- the API object ---------------------------------------------------------------------------
    def _status(self, name, container=None):
        doc = self._doc(name)
        container = container or self.container(name)
        code = _LXC_STATES.get(container.state, STOPPED)
        if code == STOPPED and not os.path.isdir(self._rootfs_of(doc)):
            code = ERROR
        return code

    def _rootfs_of(self, doc):
        try:
            return os.path.join(self._pool(self._root(doc)['pool'])
                                .instance_path(doc['name']), 'rootfs')
        except ApiError:
            return ''

    def get(self, name):
        """The instance as GET /1.0/instances/{name} shows it (blocking: liblxc state query)."""
        doc = self._doc(name)
        config, devices = self.expanded(doc)
        code = self._status(name)
        view = {k: v for k, v in doc.items() if not k.startswith('_')}
        view.update({'expanded_config': config, 'expanded_devices': devices,
                     'status': STATUS_NAMES[code], 'status_code': code,
                     'location': 'none', 'project': 'default', 'type': 'container',
                     'stateful': False})
        return view

    def etag(self, name):
        doc = self._doc(name)
        return [doc.get('architecture'), doc.get('config'), doc.get('devices'),
                doc.get('ephemeral'), doc.get('profiles'), doc.get('description')]

    def names(self):
        return [doc['name'] for doc in self.db.list('instance') if not doc.get('_creating')]

    def state(self, name):
        """GET .../state (blocking: reads cgroups and the container's netns)."""
        doc = self._doc(name)
        container = self.container(name)
        code = self._status(name, container)
        result = {'status': STATUS_NAMES[code], 'status_code': code, 'pid': 0, 'processes': 0,
                  'cpu': {'usage': 0}, 'network': None,
                  'memory': {'usage': 0, 'usage_peak': 0, 'swap_usage': 0,
                             'swap_usage_peak': 0},
                  'disk': {}}
        try:
            result['disk'] = {'root': {'usage': self.pool_of(name).instance_usage(name)}}
        except Exception as exc:  # usage is informative; never fail the state for it
            LOG.debug('Disk usage of %s: %s', name, exc)
        if code in (RUNNING, FROZEN):
            pid = container.init_pid
            result['pid'] = pid
            result.update(state.cgroup_state(pid))
            result['memory'].pop('total', None)
            host_names = {dev['name']: doc['config'].get('volatile.%s.host_name' % dev_name, '')
                          for dev_name, dev in self.expanded(doc)[1].items()
                          if dev.get('type') == 'nic' and dev.get('name')}
            result['network'] = state.network_state(pid, host_names)
        return result

    # -- create ------------------------------------------------------------------------------------
    def _check(self, doc):
        """Validate a full instance document (config, devices, profiles, root disk)."""
        doc['config'] = cfg.validate_config(doc.get('config') or {})
        device_registry.validate_devices(doc.get('devices') or {})
        profiles = self._profiles(doc.get('profiles') or [])
        config, devices = cfg.expand(doc, profiles)
        cfg.validate_config(config, 'expanded config')
        _, root = cfg.root_disk(devices)
        if root is None:
            raise BadRequest('No root disk: add one with path / to the instance or a profile')
        self._pool(root['pool'])
        if 'limits.cpu' in config:
            limits.cgroup_items(config)   # refuses CPUs this host does not have
        return config, devices

    async def create(self, body):
        """Validate, reserve the name, and return an operation that builds the instance."""
        if not isinstance(body, dict):
            raise BadRequest('Request body must be an object')
        if body.get('type') not in (None, '', 'container'):
            raise BadRequest('Only containers are supported (type %r)' % body.get('type'))
        name = body.get('name') or 'nova-%s' % uuid.uuid4().hex[:10]
        check_name(name)
        source = body.get('source') or {'type': 'none'}
        if not isinstance(source, dict):
            raise BadRequest('source must be an object')
        kind = source.get('type', 'none')
        profiles = body.get('profiles')
        doc = {'name': name, 'description': body.get('description') or '',
               'architecture': body.get('architecture') or os.uname().machine,
               'config': dict(body.get('config') or {}), 'devices': dict(body.get('devices') or {}),
               'profiles': ['default'] if profiles is None else list(profiles),
               'ephemeral': bool(body.get('ephemeral', False)), 'created_at': _now(),
               'last_used_at': '1970-01-01T00:00:00Z', '_creating': True}
        doc['config'] = {k: v for k, v in doc['config'].items() if not _daemon_owned(k)}
        if kind == 'image':
            fingerprint = self.daemon.images.resolve(source)
            metadata = self.daemon.images.metadata(fingerprint)
            for key, value in (metadata.get('properties') or {}).items():
                doc['config'].setdefault('image.%s' % key, str(value))
            doc['config']['volatile.base_image'] = fingerprint
            if metadata.get('architecture'):
                doc['architecture'] = metadata['architecture']
        elif kind == 'copy':
            src = self._copy_source(source)
            base = dict(src['doc'])
            for key in ('config', 'devices', 'profiles', 'description', 'architecture',
                        'ephemeral'):
                if key not in ('config', 'devices') and body.get(key) is None:
                    doc[key] = base.get(key, doc[key])
            kept = {k: v for k, v in base['config'].items() if not k.startswith('volatile.')
                    or k == 'volatile.base_image'}
            doc['config'] = dict(kept, **doc['config'])
            doc['devices'] = dict(base.get('devices') or {}, **doc['devices'])
            fingerprint = None
        elif kind == 'none':
            fingerprint = None
        elif kind == 'migration':
            self.daemon.migration.check_sink(source)
            fingerprint = None
        else:
            raise BadRequest('Unknown source type %r' % kind)
        _, devices = self._check(doc)
        _, root = cfg.root_disk(devices)
        doc['config']['volatile.uuid'] = str(uuid.uuid4())
        if not self.db.insert('instance', name, doc):
            raise Conflict('Instance %r already exists' % name)
        if kind == 'migration':   # the migration sink receives the volume, then finish_volume
            return self.daemon.migration.start_sink(doc, body, root)

        async def work(op):
            try:
                await op.run_blocking(self._build, doc, kind, source, fingerprint, root)
            except BaseException:
                await op.run_blocking(self._remove_everything, name, doc)
                raise
            self._event('instance-created', '/1.0/instances/%s' % name)
            return None
        return self.daemon.operations.start(
            work, 'Creating instance', {'instances': ['/1.0/instances/%s' % name],
                                        'containers': ['/1.0/containers/%s' % name]})

    def _copy_source(self, source):
        ref = source.get('source') or ''
        parent, _, snapshot = ref.partition('/')
        try:
            doc = self._doc(parent)
        except NotFound:
            raise BadRequest('Copy source instance %r not found' % parent)
        pool = self.pool_of(parent)
        if snapshot:
            snap = self.db.get('snapshot', ref)
            if snap is None:
                raise BadRequest('Copy source snapshot %r not found' % ref)
            # a snapshot carries its own config; fall back to the parent's
            doc = dict(doc, config=snap.get('config') or doc['config'],
                       devices=snap.get('devices') or doc.get('devices') or {},
                       profiles=snap.get('profiles') or doc.get('profiles'))
            path = pool.snapshot_path(parent, snapshot)
        else:
            path = pool.instance_path(parent)
        return {'doc': doc, 'path': path}

    def _build(self, doc, kind, source, fingerprint, root):
        """Blocking: make the volume, shift it to the instance's id map, render templates."""
        name = doc['name']
        pool = self._pool(root['pool'])
        size = cfg.parse_size(root['size']) if root.get('size') else None
        trigger = 'create'
        previous = []
        config, _ = self.expanded(doc)
        wanted, base = idmaps.wanted_map(config, self._isolated_bases(name))
        if kind == 'image':
            # the pool keeps one copy of the image shifted to this id map and clones it, so a
            # copy-on-write pool still creates an unprivileged instance in O(1)
            prepare = variant = None
            if wanted:
                variant = 'idmap-%d-%d' % (wanted[0][2], wanted[0][3])
                prepare = functools.partial(_shift_volume, idmap=wanted)
                previous = wanted
            pool.create_instance_from_image(
                name, fingerprint, self.daemon.images.unpacker(fingerprint), size,
                prepare=prepare, variant=variant)
            self.daemon.images.mark_used(fingerprint)
        elif kind == 'copy':
            src = self._copy_source(source)
            pool.copy_instance(src['path'], name, size)
            previous = idmaps.from_json(src['doc']['config'].get('volatile.last_state.idmap'))
            trigger = 'copy'
        else:
            pool.create_empty_instance(name, size)
        self.finish_volume(doc, pool, previous, trigger, wanted, base)

    def finish_volume(self, doc, pool, previous, trigger, wanted=None, base=None):
        """Blocking: shift a new volume into the instance's id map and make it live.

        The volume's files are in id map `previous`; the templates of `trigger` are rendered
        and the record is no longer _creating.
        """
        name = doc['name']
        if wanted is None:
            wanted, base = idmaps.wanted_map(self.expanded(doc)[0], self._isolated_bases(name))
        rootfs = os.path.join(pool.instance_path(name), 'rootfs')
        idmaps.shift_rootfs(rootfs, previous, wanted)
        os.chmod(pool.instance_path(name), 0o711)
        doc['config'].update(self._idmap_volatile(wanted, base))
        doc['config']['volatile.last_state.idmap'] = idmaps.to_json(wanted)
        doc['config']['volatile.last_state.power'] = 'STOPPED'
        self._render(doc, trigger, wanted)
        doc.pop('_creating', None)
        self.db.put('instance', name, doc)

    def _idmap_volatile(self, idmap, base):
        return {'volatile.idmap.base': str(base or 0), 'volatile.idmap.current':
                idmaps.to_json(idmap), 'volatile.idmap.next': idmaps.to_json(idmap)}

    def _isolated_bases(self, exclude):
        return [int(d['config'].get('volatile.idmap.base', '0')) for d in self.db.list('instance')
                if d['name'] != exclude and cfg.is_true(
                    self.expanded(d)[0].get('security.idmap.isolated', 'false'))
                and d['config'].get('volatile.idmap.base', '0') != '0']

    def _render(self, doc, trigger, idmap):
        owner = (idmaps._to_host(idmap, 'u', 0), idmaps._to_host(idmap, 'g', 0))
        instance_dir = self._pool(self._root(doc)['pool']).instance_path(doc['name'])
        config, _ = self.expanded(doc)
        privileged = cfg.is_true(config.get('security.privileged', 'false'))
        templates.render(instance_dir, os.path.join(instance_dir, 'rootfs'), trigger,
                         dict(doc, config=config, privileged=privileged), owner)

    def _remove_everything(self, name, doc):
        """Blocking: delete volume, LXC dir, logs and records of an instance (idempotent)."""
        try:
            self._pool(self._root(doc)['pool']).delete_instance(name)
        except ApiError as exc:
            LOG.warning('Deleting the volume of %s: %s', name, exc.message)
        state.prune_monitor_cgroups(name)
        # never Container.destroy(): it deletes the rootfs even outside the lxcpath
        shutil.rmtree(os.path.join(self.lxcpath, name), ignore_errors=True)
        shutil.rmtree(os.path.join(self.logs, name), ignore_errors=True)
        for snap in self.db.names('snapshot'):
            if snap.startswith(name + '/'):
                self.db.delete('snapshot', snap)
        self.db.delete('instance', name)

    # -- start / stop ------------------------------------------------------------------------------
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
        wanted, base = idmaps.wanted_map(config, self._isolated_bases(name))
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
            raise
        ctx.volatile['volatile.last_state.power'] = 'RUNNING'
        self._set_volatile(name, ctx.volatile, last_used_at=_now())
        LOG.debug('Started %s in %.3fs (preparing %.3fs, lxc-start %.3fs)', name,
                  time.monotonic() - began, prepared - began, time.monotonic() - prepared)

    def _lxc_start(self, name):
        """Start through liblxc's lxc-start, never Container.start() in this process.

        liblxc moves the calling process into the container's monitor cgroup, and the calling
        process must be the throwaway monitor, not the daemon.
        """
        result = subprocess.run([LXC_START, '-P', self.lxcpath, '-n', name],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, close_fds=True, timeout=120,
                                env=LXC_START_ENV)
        if result.returncode != 0 or not self.container(name).running:
            state.prune_monitor_cgroups(name)
            raise ApiError('Failed to start instance %s: %s' % (name, self._lxc_log_tail(name)))

    def _lxc_log_tail(self, name):
        try:
            with open(self.lxc_log_path(name)) as f:
                lines = [line.strip() for line in f.readlines()[-5:]]
            return ' | '.join(lines) or 'no details in the LXC log'
        except OSError:
            return 'no LXC log'

    def _set_volatile(self, name, values, **fields):
        with self.db.transaction():
            doc = self.db.get('instance', name)
            if doc is None:
                return
            for key, value in values.items():
                if key.startswith('volatile.'):
                    if value is None:
                        doc['config'].pop(key, None)
                    else:
                        doc['config'][key] = value
            doc.update(fields)
            self.db.put('instance', name, doc)

    def _stop(self, name, force, timeout):
        """Blocking: clean shutdown within timeout (halt signal), then forced; devices cleaned."""
        doc = self._doc(name)
        container = self.container(name)
        if not container.running:
            raise BadRequest('The instance is already stopped')
        clean = False
        if container.state == 'FROZEN':
            container.unfreeze()
        if not force:
            if timeout is None or timeout < 0:
                timeout = int(cfg.expand(doc, self._profiles(doc.get('profiles') or []))[0]
                              .get('boot.host_shutdown_timeout', DEFAULT_STOP_TIMEOUT))
            clean = container.shutdown(timeout)
        if not clean and container.running:
            if not container.stop():
                raise ApiError('Failed to stop instance %s' % name)
        self._after_stop(name)
        return clean

    def _after_stop(self, name):
        for _ in range(50):   # the monitor exits a moment after the container
            state.prune_monitor_cgroups(name)
            if not any(os.path.exists('/sys/fs/cgroup/%s/lxc.monitor.%s' % (h, name))
                       for h in ('memory', 'pids')):
                break
            time.sleep(0.01)
        doc = self._doc(name)
        config, devices = self.expanded(doc)
        ctx = self._device_context(doc, config, self.idmap(name))
        for dev_name, dev in sorted(devices.items()):
            try:
                device_registry.get(dev['type']).post_stop(ctx, dev_name, dev)
            except Exception:
                LOG.exception('Cleaning up device %s of %s', dev_name, name)
        ctx.volatile['volatile.last_state.power'] = 'STOPPED'
        self._set_volatile(name, ctx.volatile)

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
        if not container.running:
            raise BadRequest('The instance isn\'t running')
        if container.state == 'FROZEN':
            raise BadRequest('The instance is already frozen')
        if not container.freeze():
            raise ApiError('Failed to freeze instance %s' % name)

    def _unfreeze(self, name):
        container = self.container(name)
        if container.state != 'FROZEN':
            raise BadRequest('The instance isn\'t frozen')
        if not container.unfreeze():
            raise ApiError('Failed to unfreeze instance %s' % name)

    freeze = _freeze
    unfreeze = _unfreeze

    # -- update ----------------------------------------------------------------------------------
    async def update(self, name, body, merge):
        """PUT (merge=False) / PATCH (merge=True) of config, devices, profiles, description."""
        async with self._lock(name):
            await self._blocking(self._update, name, body, merge)
        self._event('instance-updated', '/1.0/instances/%s' % name)

    def _update(self, name, body, merge):
        old = self._doc(name)
        new = dict(old)
        if not isinstance(body.get('config') or {}, dict):
            raise BadRequest('config must be an object')
        wanted = {k: v for k, v in (body.get('config') or {}).items() if not _daemon_owned(k)}
        owned = {k: v for k, v in old['config'].items() if _daemon_owned(k)}
        if merge:
            config = dict(old['config'], **wanted)
            new['config'] = {k: v for k, v in config.items() if v not in (None, '')}
            new['devices'] = dict(old.get('devices') or {}, **(body.get('devices') or {}))
        else:
            # volatile keys a client didn't send back (e.g. NIC MACs) are kept
            new['config'] = {k: v for k, v in old['config'].items() if k.startswith('volatile.')}
            new['config'].update({k: v for k, v in wanted.items() if v is not None})
            new['devices'] = body.get('devices') or {}
        new['config'].update(owned)
        if 'profiles' in body:
            if not isinstance(body['profiles'], list):
                raise BadRequest('profiles must be a list')
            new['profiles'] = list(body['profiles'])
        for key in ('description', 'ephemeral'):
            if key in body:
                new[key] = body[key]
        if 'architecture' in body and body['architecture'] not in ('', old.get('architecture')):
            raise BadRequest('The architecture of an instance cannot be changed')
        new_config, new_devices = self._check(new)
        old_config, old_devices = self.expanded(old)
        self.apply_live(name, old, old_config, old_devices, new_config, new_devices)
        self.db.put('instance', name, new)

    def apply_live(self, name, doc, old_config, old_devices, new_config, new_devices):
        """Blocking: push limit and device changes into a running container."""
        _, old_root = cfg.root_disk(old_devices)
        _, new_root = cfg.root_disk(new_devices)
        if old_root.get('pool') != new_root.get('pool'):
            raise BadRequest('The root disk\'s pool cannot be changed')
        if old_root.get('size') != new_root.get('size'):
            size = cfg.parse_size(new_root['size']) if new_root.get('size') else None
            self._pool(new_root['pool']).set_instance_size(name, size)
        container = self.container(name)
        if not container.running:
            return
        limits.apply_live(container, old_config, new_config)
        ctx = self._device_context(doc, new_config, self.idmap(name), container.init_pid)
        for dev_name in sorted(set(old_devices) | set(new_devices)):
            old_dev, new_dev = old_devices.get(dev_name), new_devices.get(dev_name)
            if old_dev == new_dev:
                continue
            if old_dev and new_dev and old_dev['type'] == new_dev['type']:
                device_registry.get(new_dev['type']).update(ctx, dev_name, old_dev, new_dev)
                continue
            if old_dev:
                device_registry.get(old_dev['type']).unplug(ctx, dev_name, old_dev)
            if new_dev:
                device_registry.get(new_dev['type']).hotplug(ctx, dev_name, new_dev)
        self._set_volatile(name, ctx.volatile)

    # -- rename / delete -------------------------------------------------------------------------
    async def rename(self, name, new_name):
        self._doc(name)
        check_name(new_name)
        if self.exists(new_name):
            raise Conflict('Instance %r already exists' % new_name)
        if await self._blocking(self.is_running, name):
            raise BadRequest('Renaming a running instance is not allowed')

        async def work(op):
            async with self._lock(name):
                await op.run_blocking(self._rename, name, new_name)
            self._event('instance-renamed', '/1.0/instances/%s' % new_name, old_name=name)
        return self.daemon.operations.start(
            work, 'Renaming instance', {'instances': ['/1.0/instances/%s' % name]})

    def _rename(self, name, new_name):
        if self.container(name).running:
            raise BadRequest('Renaming a running instance is not allowed')
        self.pool_of(name).rename_instance(name, new_name)
        for base in (self.lxcpath, self.logs):
            if os.path.exists(os.path.join(base, name)):
                os.rename(os.path.join(base, name), os.path.join(base, new_name))
        with self.db.transaction():
            doc = self.db.get('instance', name)
            doc['name'] = new_name
            self.db.delete('instance', name)
            self.db.put('instance', new_name, doc)
            for snap in self.db.names('snapshot'):
                if snap.startswith(name + '/'):
                    snap_doc = self.db.get('snapshot', snap)
                    new_snap = new_name + snap[len(name):]
                    snap_doc['name'] = snap_doc.get('name', new_snap)
                    self.db.delete('snapshot', snap)
                    self.db.put('snapshot', new_snap, snap_doc)

    async def delete(self, name):
        doc = self._doc(name)
        if await self._blocking(self.is_running, name):
            raise BadRequest('Instance is running')
        if cfg.is_true(self.expanded(doc)[0].get('security.protection.delete', 'false')):
            raise BadRequest('Instance is protected (security.protection.delete)')

        async def work(op):
            async with self._lock(name):
                if self.container(name).running:
                    raise BadRequest('Instance is running')
                if self._doc(name)['config'].get('volatile.last_state.power') == 'RUNNING':
                    await op.run_blocking(self._after_stop, name)
                await op.run_blocking(self._remove_everything, name, self._doc(name))
            self._locks.pop(name, None)
            self._event('instance-deleted', '/1.0/instances/%s' % name)
        return self.daemon.operations.start(
            work, 'Deleting instance', {'instances': ['/1.0/instances/%s' % name],
                                        'containers': ['/1.0/containers/%s' % name]})

    async def restore(self, name, snapshot):
        """PUT with {"restore": snap}: the snapshots service does the work."""
        snapshots = getattr(self.daemon, 'snapshots', None)
        if snapshots is None:
            raise BadRequest('Snapshots are not available in this backend yet')
        result = snapshots.restore(name, snapshot)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    # -- profiles ---------------------------------------------------------------------------------
    def profile_changed(self, profile, old_profile):
        """Blocking: a profile changed; push its effect into the running instances using it."""
        for name in self.used_by_profile(profile):
            doc = self._doc(name)
            profiles = [old_profile if p == profile else self.db.get('profile', p)
                        for p in doc.get('profiles') or []]
            old_config, old_devices = cfg.expand(doc, profiles)
            new_config, new_devices = self.expanded(doc)
            self.apply_live(name, doc, old_config, old_devices, new_config, new_devices)

    def check_profile_change(self, profile, new_profile):
        """Blocking: refuse a profile change that would leave an instance using it invalid."""
        for name in self.used_by_profile(profile):
            doc = self._doc(name)
            profiles = [new_profile if p == profile else self.db.get('profile', p)
                        for p in doc.get('profiles') or []]
            config, devices = cfg.expand(doc, profiles)
            if cfg.root_disk(devices)[1] is None:
                raise BadRequest('Instance %s would have no root disk' % name)
            if 'limits.cpu' in config:
                limits.cgroup_items(config)
