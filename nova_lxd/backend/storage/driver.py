"""The one interface every storage pool driver implements (dir, btrfs, ...).

Layout inside a pool's directory (as LXD lays it out):
    images/<fingerprint>/          an unpacked image: rootfs/, metadata.yaml, templates/
    containers/<name>/             an instance: rootfs/, metadata.yaml, templates/
    containers-snapshots/<name>/<snapshot>/
    custom/<volume>/               custom volumes
Drivers share that layout through storage/tree.py (TreeDriver) and differ only in how one volume
is created, cloned, snapshotted, deleted and limited (a directory and `cp -a`, or a btrfs subvolume
and a btrfs snapshot).
`unpack` callbacks given by the image store fill a directory with rootfs/, metadata.yaml and
templates/ from an image; the driver decides whether to unpack once and clone (copy-on-write
drivers) or to unpack for every instance (dir).
"""
import abc


class StorageDriver(abc.ABC):
    name = None
    # True when a root disk `size` is enforced (quota) by this driver.
    enforces_size = False
    # True when creating an instance from a cached image costs O(1) in the image's size.
    copy_on_write = False

    def __init__(self, pool_name, pool_dir, config):
        self.pool_name = pool_name
        self.pool_dir = pool_dir
        self.config = config

    @classmethod
    @abc.abstractmethod
    def available(cls):
        """Whether this driver can work on this host."""

    @classmethod
    @abc.abstractmethod
    def check_config(cls, config, creating):
        """A clean copy of a pool's config (keys, values); BadRequest names a bad key."""

    @abc.abstractmethod
    def update(self, new_config):
        """Apply a changed pool config (e.g. a larger `size`) or raise BadRequest."""

    # -- the pool ------------------------------------------------------------------------
    @abc.abstractmethod
    def create(self):
        """Create the pool's backing store (and fill in defaults in self.config)."""

    @abc.abstractmethod
    def mount(self):
        """Make the pool usable after a daemon start (idempotent)."""

    @abc.abstractmethod
    def delete(self):
        """Remove the pool's backing store; the pool must be empty."""

    @abc.abstractmethod
    def usage(self):
        """(used_bytes, total_bytes) of the pool."""

    # -- images --------------------------------------------------------------------------
    @abc.abstractmethod
    def delete_image(self, fingerprint):
        """Drop any cached copy of an image (idempotent)."""

    @abc.abstractmethod
    def list_images(self):
        """Fingerprints of the images cached in this pool."""

    # -- instances -----------------------------------------------------------------------
    @abc.abstractmethod
    def instance_path(self, name):
        """The directory holding rootfs/ (and metadata.yaml, templates/) of an instance."""

    @abc.abstractmethod
    def create_instance_from_image(self, name, fingerprint, unpack, size=None, prepare=None,
                                   variant=None):
        """Create an instance volume from an image. On failure nothing is left behind.

        prepare(dir), optional, changes the unpacked image once per `variant` (a short name,
        e.g. of an idmap: shifting ids costs O(files), so copy-on-write drivers cache the
        prepared copy and clone it; others run prepare on each new volume).
        """

    def instance_ready(self, name):
        """A new instance's volume is finished (shifted, templates rendered).

        Background work the create put off (a copy-on-write pool's next spare clone) may go on.
        """

    def settle(self):
        """Wait for that background work (the daemon is about to stop)."""

    @abc.abstractmethod
    def create_empty_instance(self, name, size=None):
        """Create an instance volume with an empty rootfs/."""

    @abc.abstractmethod
    def copy_instance(self, source_path, name, size=None):
        """Create instance `name` as a copy of an instance or snapshot directory."""

    @abc.abstractmethod
    def delete_instance(self, name):
        """Delete an instance volume and all its snapshots (idempotent)."""

    @abc.abstractmethod
    def retire_instance(self, name):
        """Move an instance's volumes out of its name; return a callable that deletes them.

        At once (the name is free for a new instance); the callable runs later, in the background.
        """

    @abc.abstractmethod
    def rename_instance(self, old, new):
        """Rename an instance volume and its snapshots."""

    @abc.abstractmethod
    def set_instance_size(self, name, size):
        """Apply a root disk size (bytes; None removes the limit) or raise if not possible."""

    @abc.abstractmethod
    def instance_usage(self, name, walk=True):
        """Bytes used by an instance's volume.

        walk=False: None when only walking the whole tree would tell (LXD reports no usage
        there), so that listing many instances does not read every file of every one.
        """

    @abc.abstractmethod
    def list_instances(self):
        """Names of the instance volumes in this pool."""

    # -- snapshots -----------------------------------------------------------------------
    @abc.abstractmethod
    def snapshot_path(self, name, snapshot):
        """The directory of a snapshot (same layout as instance_path)."""

    @abc.abstractmethod
    def create_snapshot(self, name, snapshot):
        """Take a read-only snapshot of an instance volume."""

    @abc.abstractmethod
    def delete_snapshot(self, name, snapshot):
        """Delete one snapshot (idempotent)."""

    @abc.abstractmethod
    def rename_snapshot(self, name, old, new):
        """Rename one snapshot."""

    @abc.abstractmethod
    def restore_snapshot(self, name, snapshot):
        """Replace an instance volume's content with a snapshot's."""

    # -- custom volumes --------------------------------------------------------------------
    @abc.abstractmethod
    def custom_volume_path(self, name):
        """The directory of a custom volume."""

    @abc.abstractmethod
    def create_custom_volume(self, name, size=None):
        """Create an empty custom volume (its root owned by root, mode 0711)."""

    @abc.abstractmethod
    def delete_custom_volume(self, name):
        """Delete a custom volume (idempotent)."""

    @abc.abstractmethod
    def rename_custom_volume(self, old, new):
        """Rename a custom volume."""

    @abc.abstractmethod
    def set_custom_volume_size(self, name, size):
        """Apply a size (bytes; None removes the limit) to a custom volume, or raise."""
