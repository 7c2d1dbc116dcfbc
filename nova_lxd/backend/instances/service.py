"""daemon.instances: system containers on liblxc - lookups, state, update, rename, delete.

Records live in the db (kind 'instance'); the container's LXC config is regenerated from the
expanded config at every start into DATA/containers/<name>/config (the lxcpath), and the rootfs
lives in the storage pool of the root disk. liblxc calls block, so they run in worker threads
(op.run_blocking / self._blocking), never on the event loop. Creation is in creation.py,
start/stop in lifecycle.py (mixins of InstanceService).
"""
import asyncio
import collections
import logging
import os
import shutil
import time

import lxc

from nova_lxd.backend import cgroups
from nova_lxd.backend import lxcfs as lxcfs_mod
from nova_lxd.backend.errors import ApiError, BadRequest, Conflict, NotFound
from nova_lxd.backend.instances import config as cfg
from nova_lxd.backend.instances import devices as device_registry
from nova_lxd.backend.instances import idmap as idmaps
from nova_lxd.backend.instances import limits, monitor, state
from nova_lxd.backend.instances import snapshots as snapshot_records
from nova_lxd.backend.instances.common import check_name, daemon_owned
from nova_lxd.backend.instances.creation import CreationMixin
from nova_lxd.backend.instances.lifecycle import LifecycleMixin
from nova_lxd.backend.operations import (FROZEN, RUNNING, STOPPED, ERROR, STARTING, STOPPING,
                                         STATUS_NAMES)

LOG = logging.getLogger(__name__)
_LXC_STATES = {'RUNNING': RUNNING, 'STOPPED': STOPPED, 'FROZEN': FROZEN, 'FREEZING': RUNNING,
               'THAWED': RUNNING, 'STARTING': STARTING, 'STOPPING': STOPPING,
               'ABORTING': STOPPING}


# what _observe read once: the db document, its expansion, liblxc's view, the root pool
_Observed = collections.namedtuple('_Observed',
                                   'doc config devices container code pool pid start')
# what one listing reads once for all its instances (InstanceService.listing)
_Listing = collections.namedtuple('_Listing', 'docs profiles snapshots active')


def _merge_volatile(config, values):
    """Record volatile.* changes ({key: value, or None to drop it}) into an instance's config."""
    for key, value in values.items():
        if key.startswith('volatile.'):
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value


class InstanceService(CreationMixin, LifecycleMixin):
    def __init__(self, daemon):
        self.daemon = daemon
        self.db = daemon.db
        self.lxcpath = daemon.config.path('containers')
        self.logs = daemon.config.path('logs')
        # cheap cgroup moves for every start and stop; set again after each lxcfs start
        self._favor_moves = (cgroups.favor_dynamic_changes
                             if daemon.config.cgroup_favordynmods else None)
        self.lxcfs = lxcfs_mod.Lxcfs(daemon.config.data_dir, after_start=self._favor_moves)
        self._locks = {}
        self._inits = {}    # name -> (init pid, its start time): see _known_init
        self._exits = None  # monitor.ExitWatch, from start_background on
        self._noticing = set()      # tasks handling a monitor's exit

    # -- start-up --------------------------------------------------------------------------------
    def prepare(self):
        for path in (self.lxcpath, self.logs):
            os.makedirs(path, mode=0o711, exist_ok=True)
        if not self.lxcfs.ensure():
            LOG.warning('lxcfs is not running: containers see the host\'s /proc files')
        if self._favor_moves:
            self._favor_moves()     # an lxcfs adopted (or none) did not set it
        self.reconcile()

    def start_background(self, autostart=True):
        """Supervise lxcfs and the containers' monitors; autostart (unless re-executed)."""
        self.lxcfs.start_supervision(self._blocking)
        self._exits = monitor.ExitWatch(asyncio.get_running_loop(), self._monitor_exited)
        for name, pid in monitor.running_pids(self.lxcpath).items():
            self._exits.watch(name, pid)
        if autostart:
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
        if self._exits is not None:
            self._exits.close()
        self._post_stop_jobs().drain_all()     # no stopped instance's veth left behind
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
            if not running and recorded == 'RUNNING':
                LOG.warning('Instance %s was running and its container is gone: now Stopped', name)
                self._after_stop(name)     # its devices' clean-up too (records STOPPED)
                # for event listeners handed over by the daemon's previous image
                self._event('instance-stopped', '/1.0/instances/%s' % name)
                if doc.get('ephemeral'):
                    self._remove_everything(name, self._doc(name))
                    self._event('instance-deleted', '/1.0/instances/%s' % name)

    # -- containers that stop without being asked (monitor.ExitWatch) ----------------------------
    def _watch_monitor(self, name, pid):
        """Blocking side (a start): watch the new monitor; none found: look at once."""
        if self._exits is not None:
            self._exits.watch_from_thread(name, pid)

    def noticing(self):
        """True while a container's own stop is being handled (a re-exec would cut it)."""
        return bool(self._noticing)

    def _monitor_exited(self, name):
        task = asyncio.ensure_future(self._notice_stop(name))
        self._noticing.add(task)
        task.add_done_callback(self._noticed)

    def _noticed(self, task):
        self._noticing.discard(task)
        self.daemon.work_done()     # a re-exec that waited for it may go ahead

    async def _notice_stop(self, name):
        """A monitor exited: unless an operation stopped the container, it stopped by itself.

        A poweroff inside, or its init died: the clean-up of an API stop, and LXD's event
        (instance-shutdown); an ephemeral instance is deleted, as after any stop.
        """
        if self.db.get('instance', name) is None:
            return                      # deleted (a lock made now would outlive it)
        source = '/1.0/instances/%s' % name
        async with self._lock(name):
            doc = self.db.get('instance', name)
            if doc is None or doc['config'].get('volatile.last_state.power') != 'RUNNING':
                return                  # deleted, or stopped through the API
            if await self._blocking(self.is_running, name):
                return                  # started again meanwhile: watched anew
            LOG.info('Instance %s stopped by itself', name)
            try:
                await self._blocking(self._after_stop, name)
            except Exception:       # it did stop: said, whatever its clean-up left
                LOG.exception('Cleaning up after %s stopped by itself', name)
            self._event('instance-shutdown', source)
            if not doc.get('ephemeral'):
                return
            await self._blocking(self._remove_everything, name, self._doc(name))
        self._locks.pop(name, None)
        self._event('instance-deleted', source)

    def _event(self, action, source, **context):
        """A lifecycle event for /1.0/events, and the same line in the daemon's log."""
        LOG.info('%s %s %s', action, source, context or '')
        self.daemon.events.lifecycle(action, source, **context)

    async def _blocking(self, func, *args):
        return await self.daemon.operations.run_blocking(func, *args)

    def _lock(self, name):
        return self._locks.setdefault(name, asyncio.Lock())

    def _set_volatile(self, name, values, **fields):
        with self.db.transaction():
            doc = self.db.get('instance', name)
            if doc is None:
                return
            _merge_volatile(doc['config'], values)
            doc.update(fields)
            self.db.put('instance', name, doc)

    # -- for the other services (snapshots, migration): the blocking steps run under lock(name) --
    def lock(self, name):
        """The asyncio lock that serialises every change of one instance."""
        return self._lock(name)

    def start_container(self, name):
        """Blocking: start the instance's container from its record."""
        self._start(name)

    def stop_container(self, name, force, timeout):
        """Blocking: stop it (clean within timeout, then forced); True when the stop was clean."""
        return self._stop(name, force, timeout)

    def replace_definition(self, name, body):
        """Blocking: config, devices, profiles and description replaced, as by a PUT."""
        self._update(name, body, merge=False)

    def set_volatile(self, name, values):
        """Record daemon-owned `volatile.*` keys (None removes one)."""
        self._set_volatile(name, values)

    def remove_everything(self, name, doc):
        """Blocking: delete the volume, LXC dir, logs and record of an instance (idempotent)."""
        self._remove_everything(name, doc)

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
            if not isinstance(name, str):
                raise BadRequest('Profile names must be strings, not %r' % (name,))
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
    def _observe(self, name):
        """One db read, profile expansion and liblxc state query of an instance.

        Its view and its state share them: the recursion=2 listing needs both for each instance.
        """
        doc = self._doc(name)
        return self._observe_doc(doc, self.expanded(doc))

    def _observe_doc(self, doc, expanded, active=None):
        """_observe of a record already read and expanded.

        `active`: the names with a running monitor (one liblxc scan for a whole listing), so
        that a stopped container costs no liblxc query.
        """
        config, devices = expanded
        name = doc['name']
        container, code, pid, start = None, STOPPED, None, None
        known = self._known_init(name) if active is not None and name in active else None
        if known:
            code, pid, start = known
        elif active is None or name in active:
            container = self.container(name)
            code = _LXC_STATES.get(container.state, STOPPED)
            if code in (RUNNING, FROZEN):
                pid = container.init_pid
                start = state.process_start(pid) if pid and pid > 0 else None
                if start is not None:
                    self._inits[name] = (pid, start)
                    if active is None:
                        start = None    # a single GET: no socket kept (see state.network_state)
        _, root = cfg.root_disk(devices)
        try:
            pool = self._pool(root['pool']) if root else None
        except ApiError:
            pool = None
        if code == STOPPED and not (
                pool and os.path.isdir(os.path.join(pool.instance_path(name), 'rootfs'))):
            code = ERROR
        return _Observed(doc, config, devices, container, code, pool, pid, start)

    def _forget_running(self, name):
        """The container stopped or is gone: drop what the listings keep of its run."""
        self._inits.pop(name, None)
        state.forget(name)

    def _known_init(self, name):
        """(status code, init pid, its start time) of a running container, without liblxc.

        liblxc answers state and init pid over the container's command socket: two round trips
        to its monitor process, each waiting for the scheduler on a loaded host (most of a
        listing of 1000 running containers). The init liblxc named last time is still the
        container's while a process with its pid and start time lives; the freezer cgroup
        tells frozen from running. None: ask liblxc.
        """
        pid, start = self._inits.get(name, (None, None))
        if pid is None or state.process_start(pid) != start:
            self._forget_running(name)
            return None
        freezer = state.freezer_state(pid, name)
        if freezer is None:
            return None
        return (FROZEN if freezer == 'FROZEN' else RUNNING), pid, start

    def _rootfs_of(self, doc):
        try:
            return os.path.join(self._pool(self._root(doc)['pool'])
                                .instance_path(doc['name']), 'rootfs')
        except ApiError:
            return ''

    def get(self, name):
        """The instance as GET /1.0/instances/{name} shows it (blocking: liblxc state query)."""
        return self._view(self._observe(name))

    def listing(self):
        """What one GET /1.0/instances reads once for all its instances (blocking).

        The records, the profiles, the snapshots' names, and which containers have a running
        monitor (liblxc's scan of its command sockets), instead of db reads and liblxc queries
        per instance.
        """
        docs = (doc for doc in self.db.each('instance') if not doc.get('_creating'))
        profiles = {profile['name']: profile for profile in self.db.list('profile')}
        snapshots = collections.defaultdict(list)
        for key in self.db.names(snapshot_records.KIND):     # instance/snapshot, in order
            instance, _, snapshot = key.partition('/')
            snapshots[instance].append(snapshot)
        active = set(lxc.list_containers(active=True, defined=False, config_path=self.lxcpath))
        for name in set(self._inits) - active:      # stopped since: forget their init
            self._inits.pop(name, None)
        state.forget_all_but(active)                # ... and close their netns sockets
        return _Listing(docs, profiles, snapshots, active)

    def listed(self, listing, doc, level):
        """GET .../{name} of one record of `listing`; with its state and snapshots at level 2.

        Blocking. walk_disk=False: no disk usage where only reading the whole rootfs would give
        it (btrfs without quotas, dir), as LXD lists it there.
        """
        try:
            expanded = cfg.expand(doc, [listing.profiles[p] for p in doc.get('profiles') or []])
        except KeyError as exc:
            raise BadRequest('Profile %r not found' % exc.args[0])
        seen = self._observe_doc(doc, expanded, listing.active)
        view = self._view(seen)
        if level >= 2:
            view.update({'state': self._state(seen, walk_disk=False), 'backups': None,
                         'snapshots': self._snapshot_views(listing, doc['name'])})
        return view

    def _snapshot_views(self, listing, name):
        service = getattr(self.daemon, 'snapshots', None)
        if service is None:
            return None
        views = []
        for snapshot in listing.snapshots.get(name, ()):
            try:
                views.append(service.get(name, snapshot))
            except NotFound:        # deleted meanwhile
                pass
        return views

    @staticmethod
    def _view(seen):
        view = {k: v for k, v in seen.doc.items() if not k.startswith('_')}
        view.update({'expanded_config': seen.config, 'expanded_devices': seen.devices,
                     'status': STATUS_NAMES[seen.code], 'status_code': seen.code,
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
        return self._state(self._observe(name))

    @staticmethod
    def _state(seen, walk_disk=True):
        name, code = seen.doc['name'], seen.code
        result = {'status': STATUS_NAMES[code], 'status_code': code, 'pid': 0, 'processes': 0,
                  'cpu': {'usage': 0}, 'network': None,
                  'memory': {'usage': 0, 'usage_peak': 0, 'swap_usage': 0,
                             'swap_usage_peak': 0},
                  'disk': {}}
        try:
            usage = seen.pool.instance_usage(name, walk_disk) if seen.pool is not None else None
            if usage is not None:
                result['disk'] = {'root': {'usage': usage}}
        except Exception as exc:  # usage is informative; never fail the state for it
            LOG.debug('Disk usage of %s: %s', name, exc)
        if code in (RUNNING, FROZEN):
            pid = seen.pid or seen.container.init_pid
            result['pid'] = pid
            result.update(state.cgroup_state(pid, owner=name))
            host_names = {dev['name']: seen.doc['config'].get('volatile.%s.host_name' % dev_name,
                                                              '')
                          for dev_name, dev in seen.devices.items()
                          if dev.get('type') == 'nic' and dev.get('name')}
            result['network'] = state.network_state(pid, host_names, name, seen.start)
        return result

    # -- create ------------------------------------------------------------------------------------
    def _check(self, doc, links=True):
        """Validate a full instance document (config, devices, profiles, root disk).

        links=False: host interfaces a device names are not looked for (an arriving migration).
        """
        doc['config'] = cfg.validate_config(doc.get('config') or {})
        device_registry.validate_devices(doc.get('devices') or {})
        profiles = self._profiles(doc.get('profiles') or [])
        config, devices = cfg.expand(doc, profiles)
        cfg.validate_config(config, 'expanded config')
        _, root = cfg.root_disk(devices)
        if root is None:
            raise BadRequest('No root disk: add one with path / to the instance or a profile')
        self._pool(root['pool'])
        device_registry.check_on_host(self.daemon, devices, links)
        if 'limits.cpu' in config:
            limits.cgroup_items(config)   # refuses CPUs this host does not have
        return config, devices

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
        wanted = {k: v for k, v in (body.get('config') or {}).items() if not daemon_owned(k)}
        owned = {k: v for k, v in old['config'].items() if daemon_owned(k)}
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
        # the devices' generated values (a hot-plugged NIC's MAC) go into the record written
        _merge_volatile(new['config'], self.apply_live(
            name, old, old_config, old_devices, new_config, new_devices))
        self.db.put('instance', name, new)

    def apply_live(self, name, doc, old_config, old_devices, new_config, new_devices):
        """Blocking: push limit and device changes into a running container.

        A device removed or replaced (running or not; device_registry: replaces) gives back
        what outlives the instance's stops; a removed one's volatile.<device>.* keys go.
        Returns the volatile.* keys changed ({key: value or None}); the caller records them.
        """
        _, old_root = cfg.root_disk(old_devices)
        _, new_root = cfg.root_disk(new_devices)
        if old_root.get('pool') != new_root.get('pool'):
            raise BadRequest('The root disk\'s pool cannot be changed')
        if old_root.get('size') != new_root.get('size'):
            size = cfg.parse_size(new_root['size']) if new_root.get('size') else None
            self._pool(new_root['pool']).set_instance_size(name, size)
        before = {k: v for k, v in doc['config'].items() if k.startswith('volatile.')}
        volatile = dict(before)
        container = self.container(name)
        ctx = None
        if container.running:
            limits.apply_live(container, old_config, new_config)
            ctx = self._device_context(doc, new_config, self.idmap(name), container.init_pid)
            volatile = ctx.volatile
        for dev_name in sorted(set(old_devices) | set(new_devices)):
            old_dev, new_dev = old_devices.get(dev_name), new_devices.get(dev_name)
            if old_dev == new_dev:
                continue
            old_kind = device_registry.get(old_dev['type']) if old_dev else None
            same_type = old_dev and new_dev and old_dev['type'] == new_dev['type']
            if same_type and not old_kind.replaces(old_dev, new_dev):
                if ctx:
                    old_kind.update(ctx, dev_name, old_dev, new_dev)
                continue
            if old_dev:
                if ctx:
                    old_kind.unplug(ctx, dev_name, old_dev)
                self._device_deleted(name, dev_name, old_dev, volatile)
                if not same_type:      # its generated values (a MAC) are a new device's
                    for key in [k for k in volatile if k.startswith('volatile.%s.' % dev_name)]:
                        volatile[key] = None
            if new_dev and ctx:
                device_registry.get(new_dev['type']).hotplug(ctx, dev_name, new_dev)
        return {k: volatile.get(k) for k in set(before) | set(volatile)
                if volatile.get(k) != before.get(k)}

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
        if self.db.get('instance', new_name) is not None:
            raise Conflict('An instance named %s already exists' % new_name)
        # Logs of an earlier instance of that name are stale (its monitor can still write after
        # the delete); they must not block the rename half-way, after the volume moved.
        for base in (self.lxcpath, self.logs):
            shutil.rmtree(os.path.join(base, new_name), ignore_errors=True)
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
        """DELETE of a stopped instance: done before the reply, reported as a finished operation.

        What is left to do once the volumes have left the name is well under a millisecond, so
        it is done in the request, in one worker-thread hop with the checks (running, protected:
        refused synchronously, as LXD does); the 202 and its operation (Location) stay as LXD's
        clients expect, and their GET of it and its /wait answer at once.
        """
        self._doc(name)
        async with self._lock(name):
            await self._blocking(self._delete, name)
        self._locks.pop(name, None)
        self._event('instance-deleted', '/1.0/instances/%s' % name)

        async def done(op):
            return None
        return self.daemon.operations.start(
            done, 'Deleting instance', {'instances': ['/1.0/instances/%s' % name],
                                        'containers': ['/1.0/containers/%s' % name]})

    def _delete(self, name):
        """Blocking: delete a stopped instance; its volumes are deleted in the background.

        They leave the instance's name first (a rename, see retire_instance), so the name is free
        when the operation ends and a re-create of it finds nothing in the way; the daemon's
        stop drains the background, its start removes what a crash left.
        """
        began = time.monotonic()
        if self.container(name).running:
            raise BadRequest('Instance is running')
        doc = self._doc(name)
        if cfg.is_true(self.expanded(doc)[0].get('security.protection.delete', 'false')):
            raise BadRequest('Instance is protected (security.protection.delete)')
        self._forget_running(name)
        if doc['config'].get('volatile.last_state.power') == 'RUNNING':
            self._after_stop(name)
        try:
            purge = self._pool(self._root(doc)['pool']).retire_instance(name)
        except ApiError:        # no such pool: _remove_everything logs it
            purge = None
        retired = time.monotonic()
        self._remove_everything(name, doc)      # the rest; its volume delete finds none now
        if purge is not None:
            self._post_stop_jobs().defer(('volumes', name, began), purge,
                                         'deleting the volumes of %s' % name)
        LOG.debug('Deleted %s in %.4fs (volumes moved aside %.4fs, the rest %.4fs)', name,
                  time.monotonic() - began, retired - began, time.monotonic() - retired)

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
            self._set_volatile(name, self.apply_live(name, doc, old_config, old_devices,
                                                     new_config, new_devices))

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
