"""Nova's own test machinery under pytest: monkey patching first, its TestCase fixed for pytest."""
# Native threads, not eventlet: pytest-xdist's workers talk to the controller from a thread that
# an eventlet hub starves (the run hangs). nova 34 supports running without eventlet.
import os
os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')
from nova import monkey_patch  # noqa: E402,I100  (before anything else of nova)
monkey_patch.patch()

import sys  # noqa: E402

import pytest  # noqa: E402

import nova.test  # noqa: E402

from tests.functional.nova import backends  # noqa: E402
from tests.functional.nova import hosts  # noqa: E402
from tests.functional.nova import ovs  # noqa: E402

# nova.test.TestCase deletes its own attributes after each test, which pytest still needs.
nova.test.TestCase._clear_attrs = lambda self: None

# compute_driver = lxd.LXDDriver loads nova.virt.lxd; alias it when the shim is not installed.
try:
    import nova.virt.lxd  # noqa: F401
except ImportError:
    import nova_lxd.virt.driver
    sys.modules['nova.virt.lxd'] = nova_lxd.virt.driver

API_PASTE = os.path.join(sys.prefix, 'etc', 'nova', 'api-paste.ini')


def pytest_collection_modifyitems(config, items):
    """Deselect the classes generated for backends this run does not cover; mark known gaps."""
    chosen = set(backends.selected())
    keep, drop = [], []
    for item in items:
        backend = getattr(getattr(item, 'cls', None), 'backend_name', None)
        (drop if backend and backend not in chosen else keep).append(item)
        gap = backends.KNOWN_GAPS.get((backend, getattr(item, 'originalname', item.name)))
        if gap:
            # strict: the day the backend grows the feature, the test reports it
            item.add_marker(pytest.mark.xfail(reason=gap, strict=True))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope='session', autouse=True)
def _stop_backends():
    yield
    # at session end, not only atexit: pytest-xdist workers leave with os._exit, skipping atexit
    hosts.stop_all()
    backends.stop_all()
    ovs.stop_shared()
