"""TreeDriver: the pool layout and every volume operation, over five primitives per driver.

A driver says how to make an empty volume, clone one (optionally read-only), delete one, limit
one's size and measure it; everything else (images cached once, instances, snapshots, custom
volumes, renames, restore) is written here once.

Where images are cached, one spare clone of each cached image waits beside it
(images/.spare-<image>-<id>): an instance created from that image takes the spare by a rename and
a new spare is cloned in the background. A btrfs snapshot commits a transaction, which costs
1-2 ms on a quiet host and tens of ms when the disk is busy; the rename costs neither. The new
spare is cloned once the instance that took the old one is ready (instance_ready): a commit in
flight makes every writer to the pool wait, and the new instance's own first writes (its
templates, its volume's mode) were waiting for it.
"""
import abc
import collections
import logging
import os
import shutil
import threading
import time
import uuid

from nova_lxd.backend.errors import BadRequest, Conflict, NotFound
from nova_lxd.backend.storage import driver, system

LOG = logging.getLogger(__name__)
# a spare's replacement waits at most this long for the instance that took it to be ready
SPARE_HOLD_TIMEOUT = 2.0


# An instance being deleted: its volumes renamed out of its name, deleted in the background
_TRASH = '.trash-'


def _spare_of(entry):
    """The cached image a spare clone (.spare-<image>-<id>) belongs to."""
    return entry[len('.spare-'):].rsplit('-', 1)[0]


class TreeDriver(driver.StorageDriver):
    # True when images are unpacked once into the pool and instances are clones of them.
    caches_images = False

    def __init__(self, pool_name, pool_dir, config):
        super().__init__(pool_name, pool_dir, config)
        self._image_locks = collections.defaultdict(threading.Lock)
        self._spares_lock = threading.Lock()
        self._replenishing = {}        # cached image name -> the thread cloning its spare
        self._holds = {}               # instance volume -> (its cached image, Event when ready)

    # -- primitives ------------------------------------------------------------------------
    @abc.abstractmethod
    def _new_volume(self, path):
        """Create an empty volume at path."""

    @abc.abstractmethod
    def _clone(self, source, dest, readonly=False):
        """Create volume dest with the content of source."""

    @abc.abstractmethod
    def _delete_volume(self, path):
        """Delete the volume at path (which exists)."""

    @abc.abstractmethod
    def _set_limit(self, path, size):
        """Limit the volume at path to size bytes (None: no limit), or raise BadRequest."""

    def _usage(self, path, walk=True):
        return system.du_bytes(path) if walk else None

    def _get_limit(self, path):
        """The size limit of the volume at path (None: none, or not enforced)."""
        return None

    def _ensure_layout(self):
        for sub in ('images', 'containers', 'containers-snapshots', 'custom'):
            os.makedirs(os.path.join(self.pool_dir, sub), mode=0o711, exist_ok=True)
        self._remove_leftovers()

    def _remove_leftovers(self):
        """What a crash can leave: an image half unpacked, a restore half done...

        ... and a spare clone of an image deleted meanwhile.
        """
        images = os.listdir(os.path.join(self.pool_dir, 'images'))
        for entry in images:
            orphan = entry.startswith('.spare-') and _spare_of(entry) not in images
            if entry.startswith('.unpack-') or orphan:
                LOG.info('Pool %s: removing leftover %s', self.pool_name, entry)
                self._remove(os.path.join(self.pool_dir, 'images', entry))
        containers = os.path.join(self.pool_dir, 'containers')
        for entry in os.listdir(containers):
            path = os.path.join(containers, entry)
            if entry.startswith(('.restore-', _TRASH)):     # _TRASH: a delete not finished
                self._remove(path)
            elif entry.startswith('.old-'):
                # the instance was moved aside and its restored copy not yet put in place
                name = entry[len('.old-'):].rsplit('-', 1)[0]
                if os.path.lexists(os.path.join(containers, name)):
                    self._remove(path)
                else:
                    os.rename(path, os.path.join(containers, name))
        snapshots = os.path.join(self.pool_dir, 'containers-snapshots')
        for entry in os.listdir(snapshots):
            if entry.startswith(_TRASH):
                self._remove_snapshots_dir(os.path.join(snapshots, entry))

    # -- paths ------------------------------------------------------------------------------
    def _path(self, *parts):
        for part in parts:
            if not part or '/' in part or part in ('.', '..'):
                raise BadRequest('Invalid volume name %r' % part)
        return os.path.join(self.pool_dir, *parts)

    def image_path(self, fingerprint):
        return self._path('images', fingerprint)

    def instance_path(self, name):
        return self._path('containers', name)

    def snapshot_path(self, name, snapshot):
        return self._path('containers-snapshots', name, snapshot)

    def custom_volume_path(self, name):
        return self._path('custom', name)

    def _remove(self, path):
        if os.path.lexists(path):
            self._delete_volume(path)

    def _listdir(self, sub):
        try:
            return sorted(n for n in os.listdir(os.path.join(self.pool_dir, sub))
                          if not n.startswith('.'))
        except FileNotFoundError:
            return []

    # -- images -------------------------------------------------------------------------------
    def list_images(self):
        return [n for n in self._listdir('images') if '@' not in n]

    def settle(self):
        with self._spares_lock:
            cloning = list(self._replenishing.values())
        for thread in cloning:
            thread.join()

    def delete_image(self, fingerprint):
        with self._image_locks[fingerprint]:
            with self._spares_lock:
                for cached, ready in self._holds.values():
                    if cached.split('@')[0] == fingerprint:
                        ready.set()    # its clone need not wait for an instance any more
                cloning = [thread for name, thread in self._replenishing.items()
                           if name.split('@')[0] == fingerprint]
            for thread in cloning:     # its spare is whole (or gone) before the listing
                thread.join()
            for entry in os.listdir(os.path.join(self.pool_dir, 'images')):
                cached = _spare_of(entry) if entry.startswith('.spare-') else entry
                if cached == fingerprint or cached.startswith(fingerprint + '@'):
                    self._remove(self._path('images', entry))

    def _cached_image(self, fingerprint, unpack, variant=None, prepare=None):
        """The pool's read-only copy of an image (or of a prepared variant), made once."""
        base = None if variant is None else self._cached_image(fingerprint, unpack)
        name = fingerprint if variant is None else '%s@%s' % (fingerprint, variant)
        path = self._path('images', name)
        with self._image_locks[fingerprint]:
            if not os.path.isdir(path):
                temporary = self._path('images', '.unpack-%s-%s' % (name, uuid.uuid4().hex[:8]))
                try:
                    if base is None:
                        self._new_volume(temporary)
                        unpack(temporary)
                    else:
                        self._clone(base, temporary)
                        prepare(temporary)
                    os.rename(temporary, path)
                except BaseException:
                    self._remove(temporary)
                    raise
                self._make_readonly(path)
                LOG.info('Pool %s: image %s cached', self.pool_name, name)
        return path

    def _make_readonly(self, path):
        """Copy-on-write drivers freeze the cached image; dir has nothing to do."""

    def _clone_cached(self, cached, dest):
        """Make dest a clone of the cached image at `cached`: its spare, or a new clone."""
        name = os.path.basename(cached)
        images = os.path.dirname(cached)
        taken = False
        with self._spares_lock:
            for entry in os.listdir(images):
                if entry.startswith('.spare-') and _spare_of(entry) == name:
                    os.rename(os.path.join(images, entry), dest)
                    taken = True
                    break
        if not taken:
            self._clone(cached, dest)
        ready = threading.Event()
        with self._spares_lock:
            self._holds[dest] = (name, ready)
        self._replenish(cached, ready)

    def instance_ready(self, name):
        """The new instance's own first writes are done: its spare's replacement may be cloned."""
        with self._spares_lock:
            _, ready = self._holds.pop(self.instance_path(name), (None, None))
        if ready is not None:
            ready.set()

    def _replenish(self, cached, ready):
        """Clone a new spare of the cached image in the background (one at a time per image).

        The clone begins once `ready` is set, or after SPARE_HOLD_TIMEOUT.
        """
        name = os.path.basename(cached)

        def clone():
            ready.wait(SPARE_HOLD_TIMEOUT)
            # Not under the image's lock: a create from this image takes that lock and must not
            # wait for the clone. delete_image waits for it; an image deleted before it began
            # has no cached copy left to clone.
            # made under a temporary name (.unpack-*: start-up removes it), renamed when whole
            suffix = '%s-%s' % (name, uuid.uuid4().hex[:8])
            making = os.path.join(os.path.dirname(cached), '.unpack-spare-' + suffix)
            spare = os.path.join(os.path.dirname(cached), '.spare-' + suffix)
            try:
                if os.path.isdir(cached):
                    self._clone(cached, making)
                    os.rename(making, spare)
                    if not os.path.isdir(cached):
                        self._remove(spare)
            except Exception:
                LOG.exception('Pool %s: cloning a spare of image %s', self.pool_name, name)
                try:
                    self._remove(making)     # never a half-made spare for the next instance
                except Exception:
                    LOG.exception('Pool %s: removing %s', self.pool_name, making)
            finally:
                with self._spares_lock:
                    self._replenishing.pop(name, None)
        with self._spares_lock:
            if name in self._replenishing:
                return
            # started under the lock: delete_image may join it as soon as it is listed
            thread = self._replenishing[name] = threading.Thread(
                target=clone, name='spare-clone', daemon=True)
            thread.start()

    # -- instances ----------------------------------------------------------------------------
    def list_instances(self):
        return self._listdir('containers')

    def _create_volume(self, path, fill, size):
        if os.path.lexists(path):
            raise Conflict('A volume already exists at %s' % path)
        try:
            fill()
            if size is not None:
                self._set_limit(path, size)
        except BaseException:
            self._remove(path)
            raise

    def create_instance_from_image(self, name, fingerprint, unpack, size=None, prepare=None,
                                   variant=None):
        path = self.instance_path(name)
        if self.caches_images:
            def fill():
                self._clone_cached(self._cached_image(
                    fingerprint, unpack, variant if prepare else None, prepare), path)
        else:
            def fill():
                self._new_volume(path)
                unpack(path)
                if prepare:
                    prepare(path)
        self._create_volume(path, fill, size)
        return path

    def create_empty_instance(self, name, size=None):
        path = self.instance_path(name)

        def fill():
            self._new_volume(path)
            os.mkdir(os.path.join(path, 'rootfs'), 0o755)
        self._create_volume(path, fill, size)
        return path

    def copy_instance(self, source_path, name, size=None):
        path = self.instance_path(name)
        self._create_volume(path, lambda: self._clone(source_path, path), size)
        return path

    def delete_instance(self, name):
        self.instance_ready(name)      # a failed create: its spare's replacement need not wait
        self._remove_snapshots_dir(self._path('containers-snapshots', name))
        self._remove(self.instance_path(name))

    def _remove_snapshots_dir(self, snapshots):
        for snapshot in self._listdir(snapshots):
            self._remove(os.path.join(snapshots, snapshot))
        shutil.rmtree(snapshots, ignore_errors=True)

    def retire_instance(self, name):
        """Rename an instance's volume and snapshots out of its name; return what deletes them.

        The renames are atomic and cost no transaction: the name is free at once (a new
        instance may take it), and the deletion can run later. A restart deletes what a crash
        left of it (_remove_leftovers).
        """
        self.instance_ready(name)
        tag = '%s%s-%s' % (_TRASH, name, uuid.uuid4().hex[:8])
        volume, snapshots = self.instance_path(name), self._path('containers-snapshots', name)
        moved_volume = self._path('containers', tag)
        moved_snapshots = self._path('containers-snapshots', tag)
        if os.path.lexists(snapshots):
            os.rename(snapshots, moved_snapshots)
        if os.path.lexists(volume):
            os.rename(volume, moved_volume)

        def purge():
            self._remove_snapshots_dir(moved_snapshots)
            self._remove(moved_volume)
        return purge

    def rename_instance(self, old, new):
        if os.path.lexists(self.instance_path(new)):
            raise Conflict('A volume for instance %r already exists' % new)
        os.rename(self.instance_path(old), self.instance_path(new))
        old_snaps = self._path('containers-snapshots', old)
        if os.path.isdir(old_snaps):
            os.rename(old_snaps, self._path('containers-snapshots', new))

    def set_instance_size(self, name, size):
        self._set_limit(self.instance_path(name), size)

    def instance_usage(self, name, walk=True):
        return self._usage(self.instance_path(name), walk)

    # -- snapshots ----------------------------------------------------------------------------
    def list_snapshots(self, name):
        return self._listdir(os.path.join('containers-snapshots', name))

    def create_snapshot(self, name, snapshot):
        path = self.snapshot_path(name, snapshot)
        if os.path.lexists(path):
            raise Conflict('Snapshot %s/%s already exists' % (name, snapshot))
        os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
        began = time.monotonic()
        try:
            self._clone(self.instance_path(name), path, readonly=True)
        except BaseException:
            self._remove(path)
            raise
        LOG.debug('Snapshot %s/%s taken in %.3fs', name, snapshot, time.monotonic() - began)
        return path

    def delete_snapshot(self, name, snapshot):
        self._remove(self.snapshot_path(name, snapshot))

    def rename_snapshot(self, name, old, new):
        if os.path.lexists(self.snapshot_path(name, new)):
            raise Conflict('Snapshot %s/%s already exists' % (name, new))
        os.rename(self.snapshot_path(name, old), self.snapshot_path(name, new))

    def restore_snapshot(self, name, snapshot):
        source = self.snapshot_path(name, snapshot)
        if not os.path.isdir(source):
            raise NotFound('Snapshot %s/%s not found' % (name, snapshot))
        path = self.instance_path(name)
        # Clone beside the instance first, so a failure leaves the instance untouched.
        staged = self._path('containers', '.restore-%s-%s' % (name, uuid.uuid4().hex[:8]))
        self._clone(source, staged)
        try:
            limit = self._get_limit(path)
            if limit is not None:
                self._set_limit(staged, limit)     # the root disk size survives a restore
        except BaseException:
            self._remove(staged)
            raise
        old = self._path('containers', '.old-%s-%s' % (name, uuid.uuid4().hex[:8]))
        os.rename(path, old)
        os.rename(staged, path)
        self._remove(old)

    # -- custom volumes -------------------------------------------------------------------------
    def list_custom_volumes(self):
        return self._listdir('custom')

    def create_custom_volume(self, name, size=None):
        path = self.custom_volume_path(name)

        def fill():
            self._new_volume(path)
            os.chmod(path, 0o711)
        self._create_volume(path, fill, size)
        return path

    def delete_custom_volume(self, name):
        self._remove(self.custom_volume_path(name))

    def rename_custom_volume(self, old, new):
        if os.path.lexists(self.custom_volume_path(new)):
            raise Conflict('Custom volume %r already exists' % new)
        os.rename(self.custom_volume_path(old), self.custom_volume_path(new))

    def set_custom_volume_size(self, name, size):
        self._set_limit(self.custom_volume_path(name), size)

    # -- the pool -------------------------------------------------------------------------------
    def usage(self):
        st = os.statvfs(self.pool_dir)
        total = st.f_blocks * st.f_frsize
        return total - st.f_bfree * st.f_frsize, total

    def inodes(self):
        st = os.statvfs(self.pool_dir)
        return st.f_files - st.f_ffree, st.f_files
