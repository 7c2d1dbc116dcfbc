"""Creating instances: from an image, empty, or as a copy of an instance or snapshot.

A mixin of InstanceService (service.py): validation happens before the name is reserved, the
volume is built in an operation, and a failure removes everything that was made.
"""
import functools
import logging
import os
import shutil
import subprocess
import time
import uuid

from nova_lxd.backend.errors import ApiError, BadRequest, Conflict, NotFound
from nova_lxd.backend.instances import config as cfg
from nova_lxd.backend.instances import devices as device_registry
from nova_lxd.backend.instances import idmap as idmaps
from nova_lxd.backend.instances import templates
from nova_lxd.backend.instances.common import check_name, daemon_owned, now

LOG = logging.getLogger(__name__)


def _shift_volume(path, idmap):
    """Shift an unpacked image volume (root-owned files) into an id map."""
    idmaps.shift_rootfs(os.path.join(path, 'rootfs'), [], idmap)


def _sync_tree(source, dest):
    """Make directory dest identical to source (ownership, modes, links, xattrs kept).

    --checksum: files rewritten within the same second keep size and mtime.
    """
    subprocess.run(['rsync', '-aHAX', '--checksum', '--numeric-ids', '--delete',
                    source.rstrip('/') + '/',
                    dest.rstrip('/') + '/'], check=True, capture_output=True)


class CreationMixin:
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
               'ephemeral': bool(body.get('ephemeral', False)), 'created_at': now(),
               'last_used_at': '1970-01-01T00:00:00Z', '_creating': True}
        doc['config'] = {k: v for k, v in doc['config'].items() if not daemon_owned(k)}
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
        _, devices = self._check(doc, links=kind != 'migration')
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
        began = time.monotonic()
        name = doc['name']
        pool = self._pool(root['pool'])
        size = cfg.parse_size(root['size']) if root.get('size') else None
        trigger = 'create'
        previous = []
        config, _ = self.expanded(doc)
        wanted, base = self._wanted_map(config, name)
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
            if '/' in source['source'] or source.get('instance_only'):
                pool.copy_instance(src['path'], name, size)
            else:
                self._copy_with_snapshots(source['source'], src['path'], pool, name, size)
            previous = idmaps.from_json(src['doc']['config'].get('volatile.last_state.idmap'))
            trigger = 'copy'
        else:
            pool.create_empty_instance(name, size)
        made = time.monotonic()
        self.finish_volume(doc, pool, previous, trigger, wanted, base)
        LOG.debug('Built %s in %.3fs (volume %.3fs, finishing %.3fs)', name,
                  time.monotonic() - began, made - began, time.monotonic() - made)

    def _copy_with_snapshots(self, parent, parent_path, pool, name, size):
        """Copy an instance with its snapshots, oldest first, as `lxc copy` expects.

        The new volume takes each snapshot's content in turn (the first by the pool's clone,
        the next ones by syncing the difference) and is snapshotted after each; last it takes
        the instance's own content.
        """
        prefix = parent + '/'
        snapshots = sorted(((self.db.get('snapshot', key), key[len(prefix):])
                            for key in self.db.names('snapshot') if key.startswith(prefix)),
                           key=lambda item: item[0].get('created_at', ''))
        source_pool = self.pool_of(parent)
        created = False
        for record, snapshot in snapshots:
            path = source_pool.snapshot_path(parent, snapshot)
            if created:
                _sync_tree(path, pool.instance_path(name))
            else:
                pool.copy_instance(path, name, size)
                created = True
            pool.create_snapshot(name, snapshot)
            self.db.put('snapshot', '%s/%s' % (name, snapshot), record)
        if created:
            _sync_tree(parent_path, pool.instance_path(name))
        else:
            pool.copy_instance(parent_path, name, size)

    def finish_volume(self, doc, pool, previous, trigger, wanted=None, base=None):
        """Blocking: shift a new volume into the instance's id map and make it live.

        The volume's files are in id map `previous`; the templates of `trigger` are rendered
        and the record is no longer _creating.
        """
        name = doc['name']
        if wanted is None:
            wanted, base = self._wanted_map(self.expanded(doc)[0], name)
        rootfs = os.path.join(pool.instance_path(name), 'rootfs')
        idmaps.shift_rootfs(rootfs, previous, wanted)
        volume = pool.instance_path(name)
        if os.stat(volume).st_mode & 0o7777 != 0o711:   # a chmod is a pool write even when idle
            os.chmod(volume, 0o711)
        doc['config'].update(self._idmap_volatile(wanted, base))
        doc['config']['volatile.last_state.idmap'] = idmaps.to_json(wanted)
        doc['config']['volatile.last_state.power'] = 'STOPPED'
        self._render(doc, trigger, wanted)
        doc.pop('_creating', None)
        self.db.put('instance', name, doc)
        pool.instance_ready(name)

    def _idmap_volatile(self, idmap, base):
        return {'volatile.idmap.base': str(base or 0), 'volatile.idmap.current':
                idmaps.to_json(idmap), 'volatile.idmap.next': idmaps.to_json(idmap)}

    def _wanted_map(self, config, name, current=None):
        """idmaps.wanted_map for instance name.

        The other instances are read only when its map is isolated: reading them all made every
        launch O(number of instances).
        """
        isolated = cfg.is_true(config.get('security.idmap.isolated', 'false'))
        return idmaps.wanted_map(config, self._isolated_bases(name) if isolated else [],
                                 current)

    def _isolated_bases(self, exclude):
        return [int(d['config'].get('volatile.idmap.base', '0')) for d in self.db.list('instance')
                if d['name'] != exclude and cfg.is_true(
                    self.expanded(d)[0].get('security.idmap.isolated', 'false'))
                and d['config'].get('volatile.idmap.base', '0') != '0']

    def _render(self, doc, trigger, idmap):
        owner = (idmaps.to_host(idmap, 'u', 0), idmaps.to_host(idmap, 'g', 0))
        instance_dir = self._pool(self._root(doc)['pool']).instance_path(doc['name'])
        config, _ = self.expanded(doc)
        privileged = cfg.is_true(config.get('security.privileged', 'false'))
        templates.render(instance_dir, os.path.join(instance_dir, 'rootfs'), trigger,
                         dict(doc, config=config, privileged=privileged), owner)

    def _devices_deleted(self, doc):
        """Each device gives back what outlives the instance's stops (device_registry.deleted)."""
        try:
            _, devices = self.expanded(doc)
        except ApiError:            # a profile is gone: what it brought cannot be known
            return
        for dev_name, dev in devices.items():
            self._device_deleted(doc['name'], dev_name, dev, doc.get('config') or {})

    def _device_deleted(self, name, dev_name, dev, volatile):
        """Device `dev_name` left instance `name` for good (device_registry.deleted)."""
        try:
            device_registry.get(dev.get('type')).deleted(self.daemon, dev_name, dev, volatile)
        except Exception as exc:    # what it gives back is late, never a failed delete
            LOG.warning('Instance %s: device %s left: %s', name, dev_name, exc)

    def _remove_everything(self, name, doc):
        """Blocking: delete volume, LXC dir, logs and records of an instance (idempotent)."""
        try:
            self._pool(self._root(doc)['pool']).delete_instance(name)
        except ApiError as exc:
            LOG.warning('Deleting the volume of %s: %s', name, exc.message)
        # never Container.destroy(): it deletes the rootfs even outside the lxcpath
        shutil.rmtree(os.path.join(self.lxcpath, name), ignore_errors=True)
        shutil.rmtree(os.path.join(self.logs, name), ignore_errors=True)
        self._devices_deleted(doc)
        for snap in self.db.names('snapshot'):
            if snap.startswith(name + '/'):
                self.db.delete('snapshot', snap)
        self.db.delete('instance', name)
