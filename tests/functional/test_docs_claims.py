"""Claims of the operator docs that need a running backend to check.

- flavors-and-images.rst: the hypervisor_type property `nova-lxd-image upload` sets lets Nova's
  ImagePropertiesFilter send an image to nova-lxd hosts. Checked with the filter itself, fed
  what the driver reports for a real bundled backend.
- lxd.rst and devstack.rst: the devstack plugin's `NOVA_LXD_BACKEND=lxd` mode initialises an
  existing LXD with an explicit bridge subnet and storage pool. Checked by running the plugin's
  post-config phase (devstack's functions stood in for, as in tests/unit/devstack) against a
  real private LXD 5.0.2.
"""
# (nothing from nova.tests here: importing it applies eventlet's monkey patching, which hangs
# pytest-xdist workers outside tests/functional/nova)
import os
import subprocess

import pylxd

from nova import objects
from nova.scheduler.filters import image_props_filter
from nova.scheduler import host_manager

from nova_lxd.image import formats
from nova_lxd.virt import host
from tests import lxd_fixture
from tests.unit.devstack.stack import Stack

objects.register_all()


def test_uploaded_images_pass_the_scheduler_filter_on_nova_lxd_hosts(backend):
    resources = host.available_resource(backend.client(), 'node1')
    host_state = host_manager.HostState('host1', 'node1', None)
    host_state.supported_instances = resources['supported_instances']
    host_state.hypervisor_version = resources['hypervisor_version']
    host_state.cpu_info = {}
    # the properties nova-lxd-image upload gives an image
    image = objects.ImageMeta.from_dict({'properties': {
        'hypervisor_type': formats.HYPERVISOR_TYPE,
        'hw_architecture': resources['supported_instances'][0][0]}})
    spec = objects.RequestSpec(image=image)
    assert image_props_filter.ImagePropertiesFilter().host_passes(host_state, spec), (
        'an image with hypervisor_type=%s is refused by a host reporting %s'
        % (formats.HYPERVISOR_TYPE, resources['supported_instances']))


def test_devstack_lxd_mode_initialises_a_real_lxd(tmp_path):
    lxd = lxd_fixture.LXDDaemon()
    subnet = '10.213.%d.1/24' % lxd.subnet_octet
    try:
        # an "existing" LXD: started, never initialised
        lxd.process = subprocess.Popen(
            [lxd_fixture.LXD, '--group', 'root', '--logfile', lxd.log_file],
            env=lxd._env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack = Stack(tmp_path, backend='lxd')
        stack.env.update(PATH=os.environ['PATH'],      # the real lxd, not the recording stub
                         NOVA_LXD_LXD_SOCKET=lxd.socket, NOVA_LXD_BRIDGE=lxd.bridge,
                         NOVA_LXD_BRIDGE_SUBNET=subnet)
        stack.run('stack', 'post-config')

        client = pylxd.Client(endpoint=stack.ini('nova.conf').get('lxd', 'endpoint'))
        assert client.trusted
        network = client.networks.get(lxd.bridge)
        assert network.config['ipv4.address'] == subnet
        assert network.config['ipv6.address'] == 'none'
        pool = client.storage_pools.get(stack.ini('nova.conf').get('lxd', 'pool'))
        assert pool.driver == 'dir'
        root = client.profiles.get('default').devices['root']
        assert (root['path'], root['pool']) == ('/', pool.name)
    finally:
        lxd.destroy()
