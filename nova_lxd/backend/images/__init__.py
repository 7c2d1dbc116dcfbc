"""The image store: import (unified, split), fingerprints, aliases, publish, export."""
from nova_lxd.backend.images.store import ImageStore  # noqa: F401
