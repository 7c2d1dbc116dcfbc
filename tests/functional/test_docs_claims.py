"""Claims of the operator docs that need a running backend to check.

doc/source/flavors-and-images.rst says that the hypervisor_type property `nova-lxd-image upload`
sets lets Nova's ImagePropertiesFilter send an image to nova-lxd hosts. Checked with the filter
itself, fed what the driver reports for a real bundled backend.
"""
from nova import objects
from nova.scheduler.filters import image_props_filter
from nova.tests.unit.scheduler import fakes

from nova_lxd.image import formats
from nova_lxd.virt import host

objects.register_all()


def test_uploaded_images_pass_the_scheduler_filter_on_nova_lxd_hosts(backend):
    resources = host.available_resource(backend.client(), 'node1')
    host_state = fakes.FakeHostState('host1', 'node1', {
        'supported_instances': resources['supported_instances'],
        'hypervisor_version': resources['hypervisor_version']})
    # the properties nova-lxd-image upload gives an image
    image = objects.ImageMeta.from_dict({'properties': {
        'hypervisor_type': formats.HYPERVISOR_TYPE,
        'hw_architecture': resources['supported_instances'][0][0]}})
    spec = objects.RequestSpec(image=image)
    assert image_props_filter.ImagePropertiesFilter().host_passes(host_state, spec), (
        'an image with hypervisor_type=%s is refused by a host reporting %s'
        % (formats.HYPERVISOR_TYPE, resources['supported_instances']))
