"""Cached test images: unified tarballs built once per machine with nova-lxd-image.

    from tests import images
    path = images.busybox_image()                 # seconds the first time
    path = images.debian_image(cloud_init=False)  # debootstrap + systemd, ~1 min the first time

Images live under /work/main/.cache/images/ (git-ignored) and are reused afterwards. A file lock
makes concurrent pytest-xdist workers wait for one build instead of racing.
"""
import fcntl
import os

from nova_lxd.image import busybox
from nova_lxd.image import debian
from nova_lxd.image import pack

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE_DIR = os.environ.get('NOVA_LXD_TEST_IMAGE_DIR', os.path.join(REPO, '.cache', 'images'))
DEBOOTSTRAP_CACHE = os.path.join(REPO, '.cache', 'debootstrap')
MIRROR = os.environ.get('NOVA_LXD_DEBIAN_MIRROR', debian.DEFAULT_MIRROR)


def _cached(name, build):
    """Path of CACHE_DIR/name; if absent, build(CACHE_DIR) makes it under an exclusive lock."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    path = os.path.join(CACHE_DIR, name)
    if os.path.exists(path):
        return path
    # one lock per image: a busybox request never waits for a Debian build
    with open(os.path.join(CACHE_DIR, '.%s.lock' % name), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not os.path.exists(path):       # another worker may have built it meanwhile
                built, _ = build(CACHE_DIR)
                assert built == path, (built, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def fingerprint(path):
    """The LXD fingerprint of a cached image (sha256 of the tarball)."""
    return pack.sha256_file(path)


def busybox_image():
    """Path of the busybox unified tarball (busybox init; halt_signal SIGUSR1)."""
    name = busybox.image_name(busybox.busybox_version(), pack.host_architecture(), 'gz')
    return _cached(name, lambda out: busybox.build(out, 'gz'))


def debian_image(cloud_init=False):
    """Path of a Debian bookworm minbase + systemd tarball; with cloud-init if asked."""
    packages = ['cloud-init'] if cloud_init else []
    name = debian.image_name(debian.DEFAULT_RELEASE, 'systemd', pack.host_architecture(),
                             packages, 'gz')
    return _cached(name, lambda out: debian.build(
        out, mirror=MIRROR, packages=packages, cache_dir=DEBOOTSTRAP_CACHE))
