"""LXDDriver: Nova's compute driver for system containers, over the LXD REST API (pylxd).

Thin by design: each method orchestrates; the modules beside it do the work.
"""
from oslo_log import log as logging

from nova.virt import driver

from nova_lxd.virt import client as lxd_client

LOG = logging.getLogger(__name__)


class LXDDriver(driver.ComputeDriver):
    capabilities = dict(driver.ComputeDriver.capabilities)

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        self.client = None

    def init_host(self, host):
        self.client = lxd_client.connect()
        LOG.info('Connected to the LXD API at %s (%s %s)', lxd_client.endpoint(),
                 self.client.host_info['environment'].get('server'),
                 self.client.host_info['environment'].get('server_version'))

    def list_instances(self):
        return [instance.name for instance in self.client.instances.all()]
