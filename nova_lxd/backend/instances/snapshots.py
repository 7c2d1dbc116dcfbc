"""daemon.snapshots: instance snapshots - create, list, get, update, rename, delete, restore.

A snapshot is a read-only copy of the instance's volume taken by its pool's storage driver (a
btrfs snapshot: O(1), or a copy on `dir`) plus a db record (kind 'snapshot', name
'<instance>/<snapshot>') holding the instance's config, devices and profiles of that moment.
A running instance on a copy-on-write pool is frozen for the instant of the snapshot, so the
snapshot is one point in time of every process's writes; on `dir` a full copy would keep it
frozen for minutes, so it is copied live (as LXD does).

Stateful snapshots need CRIU; they are refused where it does not work (CRIU_WORKS = False here).
Expired snapshots are deleted by a background task that wakes at the next expiry (at least
every PRUNE_INTERVAL seconds).
"""
import asyncio
import datetime
import logging
import re

from nova_lxd.backend.errors import BadRequest, Conflict, NotFound

LOG = logging.getLogger(__name__)
KIND = 'snapshot'
NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$')
ZERO_TIME = '0001-01-01T00:00:00Z'   # Go's zero time.Time: what LXD shows for "never"
PRUNE_INTERVAL = 60.0
CRIU_WORKS = False   # `criu check` fails on this kernel; see ARCHITECTURE.md
WRITABLE = ('expires_at', 'description')


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def parse_expiry(value):
    """An RFC 3339 time (None, '' or Go's zero time: never) -> ISO string or None."""
    if value in (None, '') or str(value).startswith('0001-01-01'):
        return None
    if not isinstance(value, str):
        raise BadRequest('expires_at must be an RFC 3339 time')
    try:
        when = datetime.datetime.fromisoformat(value.replace('Z', '+00:00'))
    except ValueError:
        raise BadRequest('Invalid expires_at %r (RFC 3339 expected)' % value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc).isoformat()


def check_name(name):
    if not isinstance(name, str) or not NAME.match(name):
        raise BadRequest('Invalid snapshot name %r: letters, digits, . _ + -, at most 63, no /'
                         % (name,))
    return name


def url(instance, snapshot):
    return '/1.0/instances/%s/snapshots/%s' % (instance, snapshot)


class SnapshotService:
    def __init__(self, daemon):
        self.daemon = daemon
        self.db = daemon.db
        self._wake = None
        self._pruner = None

    # -- background expiry ---------------------------------------------------------------------
    def start_background(self):
        self._wake = asyncio.Event()
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())

    def stop_background(self):
        if self._pruner:
            self._pruner.cancel()

    def _expiry_changed(self):
        if self._wake is not None:
            self._wake.set()

    async def _prune_forever(self):
        while True:
            try:
                await self.prune_expired()
            except Exception:   # a failed pass is retried at the next wake-up
                LOG.exception('Pruning expired snapshots failed')
            delay = PRUNE_INTERVAL
            upcoming = [datetime.datetime.fromisoformat(doc['expires_at'])
                        for doc in self.db.list(KIND) if doc.get('expires_at')]
            if upcoming:
                delay = max(0.0, min(delay, (min(upcoming) - _now()).total_seconds()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay + 0.05)
            except asyncio.TimeoutError:
                pass

    async def prune_expired(self):
        now = _now()
        for key in self.db.names(KIND):
            doc = self.db.get(KIND, key)
            if doc and doc.get('expires_at') and \
                    datetime.datetime.fromisoformat(doc['expires_at']) <= now:
                instance, _, snapshot = key.partition('/')
                LOG.info('Snapshot %s expired at %s: deleting it', key, doc['expires_at'])
                op = await self.delete(instance, snapshot)
                await op.done.wait()

    # -- lookups ---------------------------------------------------------------------------------
    def _instance(self, name):
        if not self.daemon.instances.exists(name):
            raise NotFound('Instance not found')

    def _doc(self, name, snapshot):
        self._instance(name)
        doc = self.db.get(KIND, '%s/%s' % (name, snapshot))
        if doc is None:
            raise NotFound('Snapshot not found')
        return doc

    def _view(self, name, snapshot, doc):
        view = {k: v for k, v in doc.items() if not k.startswith('_')}
        view.update(name=snapshot, stateful=False, expires_at=doc.get('expires_at') or ZERO_TIME)
        return view

    def names(self, name):
        self._instance(name)
        return [key.partition('/')[2] for key in self.db.names(KIND)
                if key.startswith(name + '/')]

    def list(self, name):
        return [self.get(name, snapshot) for snapshot in self.names(name)]

    def get(self, name, snapshot):
        return self._view(name, snapshot, self._doc(name, snapshot))

    def etag(self, name, snapshot):
        doc = self._doc(name, snapshot)
        return [doc.get('expires_at'), doc.get('description', '')]

    def _next_name(self, name):
        taken = set(self.names(name))
        number = 0
        while 'snap%d' % number in taken:
            number += 1
        return 'snap%d' % number

    # -- create ----------------------------------------------------------------------------------
    async def create(self, name, body):
        """POST .../snapshots: returns the operation."""
        self._instance(name)
        if body.get('stateful') and not CRIU_WORKS:
            raise BadRequest('Stateful snapshots need CRIU, which does not work on this host '
                             '(criu check fails on this kernel)')
        snapshot = check_name(body.get('name') or self._next_name(name))
        expires_at = parse_expiry(body.get('expires_at'))
        if self.db.get(KIND, '%s/%s' % (name, snapshot)) is not None:
            raise Conflict('Snapshot %s/%s already exists' % (name, snapshot))
        instances = self.daemon.instances

        async def work(op):
            async with instances.lock(name):
                record = await op.run_blocking(self._record, name, snapshot, expires_at,
                                               body.get('description', ''))
                if not self.db.insert(KIND, '%s/%s' % (name, snapshot), record):
                    raise Conflict('Snapshot %s/%s already exists' % (name, snapshot))
                try:
                    await op.run_blocking(self._take, name, snapshot)
                except BaseException:
                    self.db.delete(KIND, '%s/%s' % (name, snapshot))
                    raise
            self._expiry_changed()
            self.daemon.events.lifecycle('instance-snapshot-created', url(name, snapshot))
        return self.daemon.operations.start(
            work, 'Snapshotting instance', {'instances': ['/1.0/instances/%s' % name],
                                            'instances_snapshots': [url(name, snapshot)]})

    def _record(self, name, snapshot, expires_at, description):
        view = self.daemon.instances.get(name)
        return {'name': snapshot, 'created_at': _now().isoformat(), 'expires_at': expires_at,
                'description': description or '', 'architecture': view.get('architecture'),
                'config': view.get('config') or {}, 'devices': view.get('devices') or {},
                'profiles': view.get('profiles') or [], 'ephemeral': bool(view.get('ephemeral')),
                'expanded_config': view.get('expanded_config') or {},
                'expanded_devices': view.get('expanded_devices') or {},
                'last_used_at': ZERO_TIME, 'size': 0}

    def _take(self, name, snapshot):
        """Blocking: the storage snapshot, frozen for its instant where that is cheap."""
        instances = self.daemon.instances
        pool = instances.pool_of(name)
        container = instances.container(name)
        freeze = pool.copy_on_write and container.running and container.state != 'FROZEN'
        if freeze:
            instances.freeze(name)
        try:
            pool.create_snapshot(name, snapshot)
        except BaseException:
            pool.delete_snapshot(name, snapshot)
            raise
        finally:
            if freeze:
                instances.unfreeze(name)

    # -- update / rename / delete ----------------------------------------------------------------
    def update(self, name, snapshot, body, merge):
        """PUT/PATCH: only expires_at and description can change."""
        key = '%s/%s' % (name, snapshot)
        doc = self._doc(name, snapshot)
        if 'expires_at' in body or not merge:
            doc['expires_at'] = parse_expiry(body.get('expires_at'))
        if 'description' in body or not merge:
            description = body.get('description') or ''
            if not isinstance(description, str):
                raise BadRequest('description must be a string')
            doc['description'] = description
        self.db.put(KIND, key, doc)
        self._expiry_changed()
        self.daemon.events.lifecycle('instance-snapshot-updated', url(name, snapshot))

    async def rename(self, name, snapshot, new):
        self._doc(name, snapshot)
        check_name(new)
        if self.db.get(KIND, '%s/%s' % (name, new)) is not None:
            raise Conflict('Snapshot %s/%s already exists' % (name, new))
        instances = self.daemon.instances

        async def work(op):
            async with instances.lock(name):
                await op.run_blocking(instances.pool_of(name).rename_snapshot,
                                      name, snapshot, new)
                doc = self._doc(name, snapshot)
                doc['name'] = new
                with self.db.transaction():
                    self.db.delete(KIND, '%s/%s' % (name, snapshot))
                    self.db.put(KIND, '%s/%s' % (name, new), doc)
            self.daemon.events.lifecycle('instance-snapshot-renamed', url(name, new),
                                         old_name=snapshot)
        return self.daemon.operations.start(
            work, 'Renaming snapshot', {'instances': ['/1.0/instances/%s' % name],
                                        'instances_snapshots': [url(name, snapshot)]})

    async def delete(self, name, snapshot):
        self._doc(name, snapshot)
        instances = self.daemon.instances

        async def work(op):
            async with instances.lock(name):
                if self.db.get(KIND, '%s/%s' % (name, snapshot)) is None:
                    raise NotFound('Snapshot not found')
                await op.run_blocking(instances.pool_of(name).delete_snapshot, name, snapshot)
                self.db.delete(KIND, '%s/%s' % (name, snapshot))
            self.daemon.events.lifecycle('instance-snapshot-deleted', url(name, snapshot))
        return self.daemon.operations.start(
            work, 'Deleting snapshot', {'instances': ['/1.0/instances/%s' % name],
                                        'instances_snapshots': [url(name, snapshot)]})

    def delete_all(self, name):
        """Blocking: drop every snapshot of an instance (volumes and records), e.g. on delete."""
        pool = self.daemon.instances.pool_of(name)
        for snapshot in self.names(name):
            pool.delete_snapshot(name, snapshot)
            self.db.delete(KIND, '%s/%s' % (name, snapshot))

    # -- restore ---------------------------------------------------------------------------------
    async def restore(self, name, snapshot):
        """PUT /1.0/instances/{name} {"restore": snapshot}, inside the caller's operation.

        A running instance is stopped, restored and started again, as LXD does; its config,
        devices and profiles go back to the snapshot's.
        """
        if '/' in snapshot:   # `lxc restore` sends "<instance>/<snapshot>"
            parent, _, snapshot = snapshot.partition('/')
            if parent != name:
                raise BadRequest('%s/%s is not a snapshot of %s' % (parent, snapshot, name))
        self._doc(name, snapshot)
        instances = self.daemon.instances
        async with instances.lock(name):
            await self.daemon.operations.run_blocking(self._restore, name, snapshot)
        self.daemon.events.lifecycle('instance-restored', '/1.0/instances/%s' % name,
                                     snapshot=snapshot)

    def _restore(self, name, snapshot):
        instances = self.daemon.instances
        doc = self._doc(name, snapshot)
        was_running = instances.is_running(name)
        if was_running:
            instances.stop_container(name, True, 0)
        instances.pool_of(name).restore_snapshot(name, snapshot)
        config = {k: v for k, v in doc['config'].items() if not k.startswith('volatile.')}
        instances.replace_definition(name, {
            'config': config, 'devices': doc.get('devices') or {},
            'profiles': doc.get('profiles') or [],
            'description': instances.get(name).get('description', ''),
            'ephemeral': doc.get('ephemeral', False)})
        # the restored files are owned as they were when the snapshot was taken
        idmap = doc['config'].get('volatile.last_state.idmap')
        if idmap is not None:
            instances.set_volatile(name, {'volatile.last_state.idmap': idmap})
        if was_running:
            instances.start_container(name)
