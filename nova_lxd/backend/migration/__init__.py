"""daemon.migration: moving instances and copying images between daemons, in LXD's API shapes.

source.py   POST /1.0/instances/{name} {"migration": true}   (pull: websocket op; push: dial)
sink.py     POST /1.0/instances {"source": {"type": "migration"}}
volumes.py  the volume streams (btrfs send/receive or tar)
channels.py the control/fs websockets, pinned TLS
images.py   POST /1.0/images {"source": {"type": "image", "mode": "pull"}}, image secrets
"""
import logging

from nova_lxd.backend.migration import images, sink, source, volumes

LOG = logging.getLogger(__name__)


class MigrationService:
    def __init__(self, daemon):
        self.daemon = daemon
        self.image_secrets = images.ImageSecrets(daemon)

    def prepare(self):
        """Remove what an interrupted receive left in the pools."""
        storage = self.daemon.storage
        for view in storage.list_pools():
            try:
                volumes.remove_leftovers(storage.pool(view['name']))
            except Exception:
                LOG.exception('Cleaning migration leftovers in pool %s', view['name'])

    # -- instances ----------------------------------------------------------------------------
    async def start_source(self, name, body, snapshot=None):
        return await source.start(self.daemon, name, body, snapshot)

    def check_sink(self, source_spec):
        sink.check_source(source_spec)

    def start_sink(self, doc, body, root):
        return sink.start(self.daemon, doc, body, root)

    # -- images -------------------------------------------------------------------------------
    async def copy_image(self, body):
        return await images.start_copy(self.daemon, body)
