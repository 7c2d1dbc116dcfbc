"""Errors of the image tooling; each message names the problem for the user."""


class ImageError(Exception):
    """Base: the CLI prints the message and exits 1."""


class PackError(ImageError):
    """Packing a tarball failed."""


class BuildError(ImageError):
    """Building an image failed (a missing tool, debootstrap failing...)."""


class ConvertRefused(ImageError):
    """The disk image cannot become a container image (no Linux root, unknown table...)."""


class UploadError(ImageError):
    """Uploading to Glance failed."""
