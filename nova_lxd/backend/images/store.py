"""The image store (daemon.images): import, records, lookup, unpack and removal of images.

Files live in DATA/images/<fingerprint> (a unified tarball, or a split image's metadata tarball)
and DATA/images/<fingerprint>.rootfs (a split image's rootfs: tarball or squashfs), as in LXD.
Records are db documents of kind 'image' keyed by fingerprint; keys starting with '_' are ours and
never leave the daemon.
"""
import datetime
import logging
import os
import platform
import shutil

from nova_lxd.backend.errors import BadRequest, Conflict, NotFound
from nova_lxd.backend.images import metadata as image_metadata
from nova_lxd.backend.images import tarball
from nova_lxd.backend.images.aliases import AliasRegistry
from nova_lxd.backend.images.staging import Staging

LOG = logging.getLogger(__name__)
KIND = 'image'
ZERO_TIME = '0001-01-01T00:00:00Z'
WRITABLE = ('auto_update', 'properties', 'public', 'expires_at', 'profiles')


def _iso(timestamp=None):
    when = (datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc) if timestamp
            else datetime.datetime.now(datetime.timezone.utc))
    return when.isoformat().replace('+00:00', 'Z')


class ImagePlan:
    """A staged upload that passed every check, ready to be committed."""

    def __init__(self, staging, split, rootfs_format, meta):
        self.staging = staging
        self.split = split
        self.rootfs_format = rootfs_format
        self.metadata = meta

    @property
    def fingerprint(self):
        return self.staging.fingerprint


class ImageStore:
    def __init__(self, daemon):
        self.daemon = daemon
        self.db = daemon.db
        self.events = daemon.events
        self.dir = daemon.config.path('images')
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.aliases = AliasRegistry(self.db, self.events,
                                     lambda fp: self.db.get(KIND, fp) is not None)
        self._remove_leftovers()

    def _remove_leftovers(self):
        """Staging directories and files without a record are what a crash mid-import leaves."""
        known = set(self.db.names(KIND))
        for entry in os.listdir(self.dir):
            if entry.split('.', 1)[0] not in known:
                LOG.info('Removing leftover image file %s', entry)
                path = os.path.join(self.dir, entry)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)

    # -- files -------------------------------------------------------------------------------
    def path(self, fingerprint):
        return os.path.join(self.dir, fingerprint)

    def rootfs_path(self, fingerprint):
        return os.path.join(self.dir, fingerprint + '.rootfs')

    # -- import -------------------------------------------------------------------------------
    def new_staging(self):
        return Staging(self.dir)

    def check_upload(self, staging, expected_fingerprint=None):
        """Validate a staged upload (blocking). BadRequest names the first problem found."""
        fingerprint = staging.fingerprint
        if expected_fingerprint and expected_fingerprint.lower() != fingerprint:
            raise BadRequest('Fingerprint mismatch: the upload has %s, the client said %s'
                             % (fingerprint, expected_fingerprint))
        if self.db.get(KIND, fingerprint) is not None:
            raise Conflict('Image with same fingerprint already exists')
        if 'image' in staging.files:
            content = tarball.scan(staging.files['image'], 'unified')
            split, rootfs_format = False, None
        else:
            content = tarball.scan(staging.files['metadata'], 'metadata')
            rootfs = staging.files['rootfs']
            rootfs_format = tarball.detect_format(rootfs)
            if rootfs_format == 'squashfs':
                tarball.check_squashfs(rootfs)
            else:
                tarball.scan(rootfs, 'rootfs', rootfs_format)
                rootfs_format = 'tar'
            split = True
        meta = image_metadata.parse(content.metadata_yaml, set(content.templates))
        return ImagePlan(staging, split, rootfs_format, meta)

    def import_upload(self, staging, expected_fingerprint=None, **commit_options):
        """check_upload then commit, in one call (one worker-thread hop for an upload)."""
        return self.commit(self.check_upload(staging, expected_fingerprint), **commit_options)

    def commit(self, plan, public=False, properties=None, filename='', aliases=()):
        """Store a checked upload: files in place, one record; nothing left behind on failure."""
        fingerprint = plan.fingerprint
        meta = plan.metadata
        now = _iso()
        doc = {
            'fingerprint': fingerprint, 'filename': filename or '', 'size': plan.staging.size,
            'architecture': meta['architecture'],
            'properties': dict(meta['properties'], **(properties or {})),
            'public': bool(public), 'auto_update': False, 'cached': False,
            'type': 'container', 'profiles': ['default'], 'project': 'default',
            'created_at': _iso(meta['creation_date']) if meta['creation_date'] else ZERO_TIME,
            'expires_at': _iso(meta['expiry_date']) if meta['expiry_date'] else ZERO_TIME,
            'uploaded_at': now, 'last_used_at': ZERO_TIME,
            '_split': plan.split, '_rootfs_format': plan.rootfs_format, '_metadata': meta,
        }
        if not self.db.insert(KIND, fingerprint, doc):
            plan.staging.discard()
            raise Conflict('Image with same fingerprint already exists')
        try:
            if plan.split:
                os.rename(plan.staging.files['metadata'], self.path(fingerprint))
                os.rename(plan.staging.files['rootfs'], self.rootfs_path(fingerprint))
            else:
                os.rename(plan.staging.files['image'], self.path(fingerprint))
            for alias in aliases:
                self.aliases.create(alias.get('name'), fingerprint, alias.get('description'))
        except BaseException:
            self._remove(fingerprint)
            plan.staging.discard()
            raise
        plan.staging.discard_later()      # empty now; its removal need not hold the reply
        self.events.lifecycle('image-created', self.url(fingerprint))
        LOG.info('Image %s imported (%d bytes)', fingerprint, doc['size'])
        return fingerprint

    # -- records ------------------------------------------------------------------------------
    @staticmethod
    def url(fingerprint):
        return '/1.0/images/%s' % fingerprint

    def _record(self, fingerprint):
        """The record of an image by full fingerprint or unique prefix."""
        if not isinstance(fingerprint, str) or not fingerprint:
            raise NotFound('Image not found')
        doc = self.db.get(KIND, fingerprint)
        if doc is not None:
            return doc
        matches = [fp for fp in self.db.names(KIND) if fp.startswith(fingerprint.lower())]
        if len(matches) > 1:
            raise BadRequest('Image fingerprint prefix %r is ambiguous' % fingerprint)
        if not matches:
            raise NotFound('Image not found')
        return self.db.get(KIND, matches[0])

    def _view(self, doc):
        view = {k: v for k, v in doc.items() if not k.startswith('_')}
        view['aliases'] = [{'name': a['name'], 'description': a['description']}
                           for a in self.aliases.for_image(doc['fingerprint'])]
        view['update_source'] = None
        return view

    def list(self, public_only=False):
        return [self._view(doc) for doc in self.db.list(KIND)
                if doc['public'] or not public_only]

    def get(self, fingerprint):
        return self._view(self._record(fingerprint))

    def exists(self, fingerprint):
        return self.db.get(KIND, fingerprint) is not None

    @staticmethod
    def etag_parts(view):
        return [view.get(k) for k in WRITABLE]

    def update(self, fingerprint, values, merge):
        doc = self._record(fingerprint)
        if not isinstance(values, dict):
            raise BadRequest('Request body must be a JSON object')
        for key in ('auto_update', 'public'):
            if key in values or not merge:
                value = values.get(key, False)
                if not isinstance(value, bool):
                    raise BadRequest('%s must be a boolean' % key)
                doc[key] = value
        if 'properties' in values or not merge:
            props = values.get('properties') or {}
            if not isinstance(props, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in props.items()):
                raise BadRequest('properties must be a map of strings')
            doc['properties'] = dict(doc['properties'], **props) if merge else props
        if values.get('expires_at'):
            if not isinstance(values['expires_at'], str):
                raise BadRequest('expires_at must be a timestamp string')
            doc['expires_at'] = values['expires_at']
        if values.get('profiles') is not None:
            if not isinstance(values['profiles'], list):
                raise BadRequest('profiles must be a list')
            doc['profiles'] = values['profiles']
        self.db.put(KIND, doc['fingerprint'], doc)
        self.events.lifecycle('image-updated', self.url(doc['fingerprint']))
        return self._view(doc)

    def delete(self, fingerprint):
        """Remove an image, its aliases and every pool's cached copy (blocking)."""
        doc = self._record(fingerprint)
        fingerprint = doc['fingerprint']
        self._remove(fingerprint)
        self.events.lifecycle('image-deleted', self.url(fingerprint))

    def _remove(self, fingerprint):
        self.aliases.delete_for_image(fingerprint)
        self.db.delete(KIND, fingerprint)
        for path in (self.path(fingerprint), self.rootfs_path(fingerprint)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        storage = getattr(self.daemon, 'storage', None)
        if storage is not None:
            storage.forget_image(fingerprint)

    def export_parts(self, fingerprint):
        """[(part name, path, download file name)]: one part (unified) or metadata + rootfs."""
        doc = self._record(fingerprint)
        fingerprint = doc['fingerprint']
        name = doc['filename'] or fingerprint + '.tar.gz'
        if not doc['_split']:
            return [('image', self.path(fingerprint), name)]
        rootfs_name = 'rootfs.squashfs' if doc['_rootfs_format'] == 'squashfs' else 'rootfs.tar'
        return [('metadata', self.path(fingerprint), 'meta-' + name),
                ('rootfs', self.rootfs_path(fingerprint), rootfs_name)]

    # -- what instance creation uses ----------------------------------------------------------
    def resolve(self, source):
        """The fingerprint an instance-create `source` names (alias, fingerprint or properties)."""
        if not isinstance(source, dict):
            raise BadRequest('source must be an object')
        if source.get('server'):
            raise BadRequest('Remote image servers are not supported: import the image first')
        if source.get('alias'):
            return self.aliases.get(source['alias'])['target']
        if source.get('fingerprint'):
            return self._record(source['fingerprint'])['fingerprint']
        wanted = source.get('properties')
        if isinstance(wanted, dict) and wanted:
            matches = [doc for doc in self.db.list(KIND)
                       if all(doc['properties'].get(k) == v for k, v in wanted.items())]
            if matches:
                return max(matches, key=lambda d: d['uploaded_at'])['fingerprint']
            raise NotFound('No image matches the properties %s' % wanted)
        raise BadRequest('The image source needs an alias, a fingerprint or properties')

    def metadata(self, fingerprint):
        return self._record(fingerprint)['_metadata']

    def mark_used(self, fingerprint):
        with self.db.transaction():
            doc = self._record(fingerprint)
            doc['last_used_at'] = _iso()
            self.db.put(KIND, doc['fingerprint'], doc)

    def unpacker(self, fingerprint):
        """A callable(dest_dir) that fills dest_dir with rootfs/, metadata.yaml and templates/."""
        doc = self._record(fingerprint)
        image = self.path(doc['fingerprint'])
        rootfs = self.rootfs_path(doc['fingerprint'])
        split, rootfs_format = doc['_split'], doc['_rootfs_format']

        def unpack(dest):
            os.makedirs(dest, exist_ok=True)
            tarball.extract(image, dest)
            if split:
                target = os.path.join(dest, 'rootfs')
                if rootfs_format == 'squashfs':
                    tarball.extract_squashfs(rootfs, target)
                else:
                    os.makedirs(target, mode=0o755, exist_ok=True)
                    tarball.extract(rootfs, target)
        return unpack

    # -- publish ------------------------------------------------------------------------------
    def import_directory(self, path, properties=None, compression=None, aliases=(),
                         public=False, idmap=None, filename=''):
        """Pack an instance or snapshot directory as a unified image (blocking) -> fingerprint.

        idmap: the instance's [(kind, ns_id, host_id, count)] so that files are stored with the
        ids they have inside the container, which makes the image portable.
        """
        from nova_lxd.backend.images import publish  # packing lives beside, not in, the store
        compression = compression or self.daemon.db.config().get(
            'images.compression_algorithm', 'gzip')
        meta = publish.image_metadata_for(path, properties, platform.machine())
        staging = self.new_staging()
        try:
            packed = publish.pack(path, staging.path, meta, compression, idmap or [])
            staging.add_file('image', packed)
            plan = ImagePlan(staging, False, None, meta)
            return self.commit(plan, public=public, filename=filename, aliases=aliases)
        finally:
            staging.discard()
