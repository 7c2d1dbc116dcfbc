"""Shared by the driver's functional tests: a backend per class, images, leftover checks."""
from tests.functional.nova import backends
from tests.functional.nova import busybox_image


def for_each_backend(namespace, base, name):
    """Define `<name>_<backend>` subclasses of base, one per backend, in namespace."""
    for backend in backends.ALL:
        cls_name = '%s_%s' % (name, backend)
        namespace[cls_name] = type(cls_name, (base,), {'backend_name': backend, '__test__': True,
                                                       '__module__': namespace['__name__']})


def busybox_bytes():
    return busybox_image.read(busybox_image.unified_tarball())


def host_links():
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return {link.get_attr('IFLA_IFNAME') for link in ipr.get_links()}


def mounts_under(path):
    with open('/proc/self/mountinfo') as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]
