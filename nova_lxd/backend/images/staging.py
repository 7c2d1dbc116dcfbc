"""A staging directory for one image being uploaded or published: streamed to disk, hashed once.

LXD's fingerprint is the sha256 of the image file (unified) or of the metadata file followed by the
rootfs file (split); the hash is taken while the bytes arrive, so nothing is read twice and nothing
is held in memory.
"""
import concurrent.futures
import errno
import hashlib
import os
import shutil
import uuid

from nova_lxd.backend.errors import ApiError

CHUNK = 1 << 20
_CLEANER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='staging-cleanup')


class Staging:
    def __init__(self, parent):
        self.path = os.path.join(parent, '.staging-' + uuid.uuid4().hex)
        os.makedirs(self.path, mode=0o700)
        self.sha256 = hashlib.sha256()
        self.files = {}          # part name -> path, in the order received
        self.sizes = {}

    def file(self, name):
        return os.path.join(self.path, name)

    async def receive(self, name, read_chunk):
        """Write what `await read_chunk()` yields (until b'') to the part `name`."""
        path = self.file(name)
        size = 0
        try:
            with open(path, 'wb') as out:
                while True:
                    chunk = await read_chunk()
                    if not chunk:
                        break
                    self.sha256.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # the caller discards the staging directory; the client sees why, not a 500
            raise ApiError('Not enough disk space to store the image (%s received): %s'
                           % (size, exc.strerror), status=507)
        self.files[name] = path
        self.sizes[name] = size
        return path

    def add_file(self, name, path):
        """Hash a file written by the daemon itself (publish)."""
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(CHUNK), b''):
                self.sha256.update(chunk)
        self.files[name] = path
        self.sizes[name] = os.path.getsize(path)

    @property
    def fingerprint(self):
        return self.sha256.hexdigest()

    @property
    def size(self):
        return sum(self.sizes.values())

    def discard(self):
        shutil.rmtree(self.path, ignore_errors=True)

    def discard_later(self):
        """discard() on a background thread, for a staging directory commit has emptied.

        Removing a directory on this host's ext4 (mounted with `discard`) took 2 to 8 ms,
        once 23 ms, under load: longer than storing the image. A crash before it runs leaves
        an empty directory, which the store removes at its next start like any leftover.
        """
        _CLEANER.submit(self.discard)
