"""The storage service (daemon.storage): pools and their volumes, over the pool drivers.

Pools are db documents of kind 'storage-pool'; custom volumes of kind 'storage-volume' named
'<pool>/<volume>'. Instance and image volumes are what the drivers find in the pool itself.
The first start creates pool 'default' on the fastest driver that works here.

Custom volumes attached to instances (disk devices with pool + source), as LXD does them: the
volume is bind-mounted, and its files are owned for the instance's id map: shifted on its first
attach and again when an instance with another map attaches it, never while a running instance
with the other map has it. The map its files are in is the volume's volatile.idmap.last.
A volume outlives its instances and is not part of their snapshots or copies (a copy refers to
the same volume); a volume in use cannot be deleted or renamed.
"""
import collections
import logging
import os
import re
import threading

from nova_lxd.backend.errors import BadRequest, Conflict, NotFound
from nova_lxd.backend.instances import config as instance_config
from nova_lxd.backend.instances import idmap as idmaps
from nova_lxd.backend.operations import now_iso
from nova_lxd.backend.storage import system
from nova_lxd.backend.storage.btrfs import BtrfsDriver
from nova_lxd.backend.storage.dir import DirDriver

LOG = logging.getLogger(__name__)
POOL = 'storage-pool'
VOLUME = 'storage-volume'
DEFAULT_POOL = 'default'
DRIVERS = {'btrfs': BtrfsDriver, 'dir': DirDriver}
# fastest first: the default pool gets the first one that works
PREFERENCE = ('btrfs', 'dir')
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$')
VOLUME_TYPES = ('container', 'image', 'custom')
CUSTOM_KEYS = ('size',)


def _check_name(name, what):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest('Invalid %s name %r (letters, digits, "-", "_", "."; up to 63)'
                         % (what, name))
    return name


def _string_config(config):
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise BadRequest('config must be an object')
    clean = {}
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise BadRequest('Invalid value for config key %r: expected a string' % key)
        clean[key] = str(value)
    return clean


def _on_volume(device, pool):
    """Whether a device is a disk on a custom volume of `pool`."""
    return device.get('type') == 'disk' and device.get('pool') == pool and \
        device.get('path') != '/' and bool(device.get('source'))


def _description(value):
    if value is None:
        return ''
    if not isinstance(value, str):
        raise BadRequest('description must be a string')
    return value


class StorageService:
    def __init__(self, daemon):
        self.daemon = daemon
        self.db = daemon.db
        self.events = daemon.events
        self.pools_dir = daemon.config.path('storage-pools')
        self.disks_dir = daemon.config.path('disks')
        self._drivers = {}
        self._unavailable = set()      # pools that could not be mounted at start
        self._volume_locks = collections.defaultdict(threading.Lock)   # shifts of one volume

    # -- start-up -------------------------------------------------------------------------------
    def start(self):
        """Mount every pool (idempotent); on the first start create the default pool."""
        os.makedirs(self.pools_dir, mode=0o711, exist_ok=True)
        for doc in self.db.list(POOL):
            try:
                self.pool(doc['name']).mount()
            except Exception:
                LOG.exception('Storage pool %s could not be mounted', doc['name'])
                self._unavailable.add(doc['name'])
        if not self.db.names(POOL):
            self._create_default_pool()

    def settle(self):
        """Wait for the pools' background work (spare clones) before the daemon stops."""
        for driver in list(self._drivers.values()):
            driver.settle()

    def _create_default_pool(self):
        wanted = self.daemon.config.storage_driver
        if wanted and wanted not in DRIVERS:
            raise SystemExit('Unknown storage_driver %r (one of %s)'
                             % (wanted, ', '.join(sorted(DRIVERS))))
        for name in ([wanted] if wanted else PREFERENCE):
            if not DRIVERS[name].available():
                LOG.warning('Storage driver %s is not available on this host', name)
                continue
            try:
                self.create_pool(DEFAULT_POOL, name, {}, 'Default storage pool')
                LOG.info('Created storage pool %s with driver %s', DEFAULT_POOL, name)
                return
            except Exception as exc:
                LOG.warning('Storage driver %s does not work here (%s); trying the next one',
                            name, exc)
        if wanted:
            raise SystemExit('Storage driver %s does not work on this host' % wanted)
        raise SystemExit('No storage driver works on this host')

    # -- what the daemon reports --------------------------------------------------------------
    def default_pool(self):
        if self.db.get(POOL, DEFAULT_POOL) is not None:
            return DEFAULT_POOL
        names = self.db.names(POOL)
        if not names:
            raise NotFound('No storage pool exists')
        return names[0]

    def default_driver_name(self):
        try:
            return self._doc(self.default_pool())['driver']
        except NotFound:
            return ''

    @staticmethod
    def drivers_info():
        return [{'Name': name, 'Version': '1', 'Remote': False}
                for name in PREFERENCE if DRIVERS[name].available()]

    # -- pools ------------------------------------------------------------------------------------
    def _doc(self, name):
        doc = self.db.get(POOL, name) if isinstance(name, str) else None
        if doc is None:
            raise NotFound('Storage pool not found')
        return doc

    def _make_driver(self, name, driver_name, config):
        cls = DRIVERS[driver_name]
        source = config.get('source') if driver_name == 'dir' else None
        driver = cls(name, source or os.path.join(self.pools_dir, name), dict(config))
        driver.disks_dir = self.disks_dir
        return driver

    def pool(self, name):
        """The driver of a pool (StorageDriver)."""
        # Pools are created, updated and deleted only here, which keeps _drivers in step with
        # the db: no db read for each instance a listing or a start looks at.
        driver = self._drivers.get(name) if isinstance(name, str) else None
        if driver is not None:
            return driver
        doc = self._doc(name)
        driver = self._drivers[name] = self._make_driver(name, doc['driver'], doc['config'])
        return driver

    @staticmethod
    def pool_url(name):
        return '/1.0/storage-pools/%s' % name

    def _view(self, doc):
        status = 'Unavailable' if doc['name'] in self._unavailable else doc['status']
        return dict(doc, status=status, used_by=self.used_by(doc['name']))

    def list_pools(self):
        return [self._view(doc) for doc in self.db.list(POOL)]

    def get_pool(self, name):
        return self._view(self._doc(name))

    @staticmethod
    def etag_parts(view):
        return [view.get('config'), view.get('description')]

    def create_pool(self, name, driver_name, config, description=''):
        """Create a pool and its backing store (blocking); nothing is left if it fails."""
        _check_name(name, 'storage pool')
        if driver_name not in DRIVERS:
            raise BadRequest('Unsupported storage driver %r (one of %s)'
                             % (driver_name, ', '.join(sorted(DRIVERS))))
        if not DRIVERS[driver_name].available():
            raise BadRequest('Storage driver %s is not available on this host' % driver_name)
        config = DRIVERS[driver_name].check_config(_string_config(config), creating=True)
        doc = {'name': name, 'driver': driver_name, 'config': config,
               'description': _description(description), 'status': 'Created',
               'locations': ['none'], 'managed': True}
        if not self.db.insert(POOL, name, doc):
            raise Conflict('Storage pool %r already exists' % name)
        driver = self._make_driver(name, driver_name, config)
        try:
            driver.create()
        except BaseException:
            self.db.delete(POOL, name)
            raise
        doc['config'] = driver.config
        self.db.put(POOL, name, doc)
        self._drivers[name] = driver
        self.events.lifecycle('storage-pool-created', self.pool_url(name))
        return self._view(doc)

    def update_pool(self, name, values, merge):
        doc = self._doc(name)
        if not isinstance(values, dict):
            raise BadRequest('Request body must be a JSON object')
        driver = self.pool(name)
        if 'config' in values or not merge:
            wanted = _string_config(values.get('config'))
            if merge:
                new = dict(doc['config'])
                for key, value in wanted.items():
                    if value == '':
                        new.pop(key, None)
                    else:
                        new[key] = value
            else:
                # the backing store is not something a PUT can take away
                new = dict(wanted, source=doc['config'].get('source', wanted.get('source')))
                new = {k: v for k, v in new.items() if v is not None}
            new = DRIVERS[doc['driver']].check_config(new, creating=False)
            driver.update(new)
            doc['config'] = driver.config
        if 'description' in values or not merge:
            doc['description'] = _description(values.get('description'))
        self.db.put(POOL, name, doc)
        self.events.lifecycle('storage-pool-updated', self.pool_url(name))
        return self._view(doc)

    def delete_pool(self, name):
        self._doc(name)
        users = [u for u in self.used_by(name) if not u.startswith('/1.0/images/')]
        if users:
            raise BadRequest('The storage pool is currently in use by %s' % ', '.join(users))
        driver = self.pool(name)
        driver.delete()
        self.db.delete(POOL, name)
        self._drivers.pop(name, None)
        self.events.lifecycle('storage-pool-deleted', self.pool_url(name))

    def resources(self, name):
        driver = self.pool(name)
        used, total = driver.usage()
        inodes_used, inodes_total = driver.inodes()
        return {'space': {'used': used, 'total': total},
                'inodes': {'used': inodes_used, 'total': inodes_total}}

    def used_by(self, name):
        urls = ['/1.0/profiles/%s' % doc['name'] for doc in self.db.list('profile')
                if self._has_disk(doc, name)]
        driver = self.pool(name)
        urls += ['/1.0/instances/%s' % n for n in driver.list_instances()]
        urls += [url for url in ('/1.0/instances/%s' % doc['name']
                                 for doc in self.db.list('instance') if self._has_disk(doc, name))
                 if url not in urls]
        urls += ['/1.0/images/%s' % fp for fp in driver.list_images()]
        urls += [self.volume_url(name, 'custom', doc['name'])
                 for doc in self.db.list(VOLUME, prefix=name + '/')]
        return urls

    @staticmethod
    def _has_disk(doc, pool):
        return any(device.get('type') == 'disk' and device.get('pool') == pool
                   for device in (doc.get('devices') or {}).values())

    def forget_image(self, fingerprint):
        """Drop every pool's cached copy of an image (the image was deleted)."""
        for name in self.db.names(POOL):
            try:
                self.pool(name).delete_image(fingerprint)
            except Exception:
                LOG.exception('Could not drop image %s from pool %s', fingerprint, name)

    # -- volumes ----------------------------------------------------------------------------------
    @staticmethod
    def volume_url(pool, vol_type, name):
        return '/1.0/storage-pools/%s/volumes/%s/%s' % (pool, vol_type, name)

    def _volume_view(self, pool, vol_type, name, config=None, description='', used_by=None):
        return {'name': name, 'type': vol_type, 'config': config or {},
                'description': description, 'content_type': 'filesystem',
                'location': 'none', 'pool': pool, 'project': 'default',
                'used_by': used_by if used_by is not None else [],
                'created_at': '0001-01-01T00:00:00Z'}     # Go clients parse it as a time

    def _custom_users(self, pool):
        """{volume: (instance names, profile names)} for the custom volumes of a pool in use.

        One read of the instances and profiles; an instance counts through its profiles too
        (its expanded devices).
        """
        profiles = {doc['name']: doc for doc in self.db.list('profile')}
        users = collections.defaultdict(lambda: ([], []))
        for doc in self.db.list('instance'):
            _, devices = instance_config.expand(
                doc, [profiles[p] for p in doc.get('profiles') or [] if p in profiles])
            for volume in {d.get('source') for d in devices.values() if _on_volume(d, pool)}:
                users[volume][0].append(doc['name'])
        for name, doc in sorted(profiles.items()):
            for volume in {d.get('source') for d in (doc.get('devices') or {}).values()
                           if _on_volume(d, pool)}:
                users[volume][1].append(name)
        return users

    def _custom_view(self, pool, doc, users=None):
        users = (users if users is not None else self._custom_users(pool)).get(doc['name'])
        instances, profiles = users or ([], [])
        used_by = ['/1.0/instances/%s' % n for n in instances] + \
            ['/1.0/profiles/%s' % n for n in profiles]
        return dict(self._volume_view(pool, 'custom', doc['name'], doc['config'],
                                      doc['description'], used_by), created_at=doc['created_at'])

    def list_volumes(self, pool, vol_type=None):
        driver = self.pool(pool)
        if vol_type is not None and vol_type not in VOLUME_TYPES:
            raise NotFound('Invalid storage volume type %r' % vol_type)
        views = []
        if vol_type in (None, 'container'):
            views += [self._volume_view(pool, 'container', n, used_by=['/1.0/instances/%s' % n])
                      for n in driver.list_instances()]
        if vol_type in (None, 'image'):
            views += [self._volume_view(pool, 'image', fp, used_by=['/1.0/images/%s' % fp])
                      for fp in driver.list_images()]
        if vol_type in (None, 'custom'):
            users = self._custom_users(pool)
            views += [self._custom_view(pool, doc, users)
                      for doc in self.db.list(VOLUME, prefix=pool + '/')]
        return views

    def get_volume(self, pool, vol_type, name):
        if vol_type == 'custom':
            return self._custom_view(pool, self._custom_doc(pool, name))
        for view in self.list_volumes(pool, vol_type):
            if view['name'] == name:
                return view
        raise NotFound('Storage volume not found')

    def _custom_doc(self, pool, name):
        self._doc(pool)
        doc = self.db.get(VOLUME, '%s/%s' % (pool, name))
        if doc is None:
            raise NotFound('Storage volume not found')
        return doc

    @staticmethod
    def _custom_config(config):
        config = _string_config(config)
        for key in config:
            if key not in CUSTOM_KEYS and not key.startswith('volatile.'):
                raise BadRequest('Invalid config key %r for a custom volume' % key)
        size = system.parse_size(config['size']) if config.get('size') else None
        return config, size

    def create_custom_volume(self, pool, body):
        driver = self.pool(pool)
        vol_type = body.get('type') or 'custom'
        if vol_type != 'custom':
            raise BadRequest('Only custom storage volumes can be created (type %r)' % vol_type)
        if body.get('source') and (body['source'].get('type') or 'none') != 'none':
            raise BadRequest('Copying or migrating storage volumes is not supported')
        if body.get('content_type', 'filesystem') != 'filesystem':
            raise BadRequest('Only filesystem volumes are supported')
        name = _check_name(body.get('name'), 'storage volume')
        config, size = self._custom_config(body.get('config'))
        config = {k: v for k, v in config.items() if not k.startswith('volatile.')}
        doc = {'name': name, 'config': config, 'description': _description(
            body.get('description')), 'created_at': now_iso()}
        key = '%s/%s' % (pool, name)
        if not self.db.insert(VOLUME, key, doc):
            raise Conflict('Storage volume %r already exists' % name)
        try:
            driver.create_custom_volume(name, size)
        except BaseException:
            self.db.delete(VOLUME, key)
            raise
        self.events.lifecycle('storage-volume-created', self.volume_url(pool, 'custom', name))
        return self._custom_view(pool, doc)

    def update_custom_volume(self, pool, name, values, merge):
        doc = self._custom_doc(pool, name)
        if not isinstance(values, dict):
            raise BadRequest('Request body must be a JSON object')
        if 'config' in values or not merge:
            # volatile keys are the daemon's: kept whatever the client sends back
            wanted = {k: v for k, v in _string_config(values.get('config')).items()
                      if not k.startswith('volatile.')}
            kept = {k: v for k, v in doc['config'].items() if k.startswith('volatile.')}
            new = dict(doc['config'], **wanted) if merge else dict(wanted, **kept)
            new = {k: v for k, v in new.items() if v != ''}
            new, size = self._custom_config(new)
            if new.get('size') != doc['config'].get('size'):
                self.pool(pool).set_custom_volume_size(name, size)
            doc['config'] = new
        if 'description' in values or not merge:
            doc['description'] = _description(values.get('description'))
        self.db.put(VOLUME, '%s/%s' % (pool, name), doc)
        self.events.lifecycle('storage-volume-updated', self.volume_url(pool, 'custom', name))
        return self._custom_view(pool, doc)

    def rename_custom_volume(self, pool, name, body):
        doc = self._custom_doc(pool, name)
        if body.get('pool') not in (None, '', pool):
            raise BadRequest('Moving a volume to another pool is not supported')
        new = _check_name(body.get('name'), 'storage volume')
        if self._custom_view(pool, doc)['used_by']:
            raise BadRequest('The storage volume is in use')
        if self.db.get(VOLUME, '%s/%s' % (pool, new)) is not None:
            raise Conflict('Storage volume %r already exists' % new)
        self.pool(pool).rename_custom_volume(name, new)
        doc['name'] = new
        with self.db.transaction():
            self.db.delete(VOLUME, '%s/%s' % (pool, name))
            self.db.insert(VOLUME, '%s/%s' % (pool, new), doc)
        self.events.lifecycle('storage-volume-renamed', self.volume_url(pool, 'custom', new),
                              old_name=name)
        return self._custom_view(pool, doc)

    def delete_custom_volume(self, pool, name):
        doc = self._custom_doc(pool, name)
        users = self._custom_view(pool, doc)['used_by']
        if users:
            raise BadRequest('The storage volume is in use by %s' % ', '.join(users))
        self.pool(pool).delete_custom_volume(name)
        self.db.delete(VOLUME, '%s/%s' % (pool, name))
        self.events.lifecycle('storage-volume-deleted', self.volume_url(pool, 'custom', name))

    # -- custom volumes attached to instances (disk devices with pool + source) ------------------
    def check_custom_volume(self, pool, name):
        """A 400 naming what is missing unless the pool and its custom volume exist."""
        if self.db.get(POOL, pool) is None:
            raise BadRequest('Storage pool %r not found' % pool)
        if self.db.get(VOLUME, '%s/%s' % (pool, name)) is None:
            raise BadRequest('Storage volume %r not found in pool %r' % (name, pool))

    def custom_volume_path(self, pool, name):
        self.check_custom_volume(pool, name)
        return self.pool(pool).custom_volume_path(name)

    def attach_custom_volume(self, pool, name, instance, idmap):
        """Blocking: the host path of a custom volume, its files owned for `instance`.

        They are shifted to the instance's id map now if they are in another one.
        """
        path = self.custom_volume_path(pool, name)
        with self._volume_locks['%s/%s' % (pool, name)]:
            doc = self._custom_doc(pool, name)
            current = idmaps.from_json(doc['config'].get('volatile.idmap.last', ''))
            if current != idmap:
                users = self._custom_users(pool).get(name, ([], []))[0]
                running = [u for u in users if u != instance and
                           self.daemon.instances.is_running(u)]
                if running:
                    raise BadRequest(
                        'Storage volume %r is in use by running instance(s) %s with another id '
                        'map than %s\'s (isolated or privileged): stop them first'
                        % (name, ', '.join(running), instance))
                idmaps.shift_rootfs(path, current, idmap)
                doc['config']['volatile.idmap.last'] = idmaps.to_json(idmap)
                self.db.put(VOLUME, '%s/%s' % (pool, name), doc)
        return path
