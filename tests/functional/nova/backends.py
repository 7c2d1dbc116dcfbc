"""The backends the driver's functional tests run against, started once per test process.

NOVA_LXD_TEST_BACKEND=lxd|bundled|lxd,bundled chooses them; unset means every backend in
DEFAULT. Test classes are generated per backend (unittest classes cannot take pytest params);
classes for unselected backends are deselected at collection, never skipped.
"""
import atexit
import os

from tests.backend_fixture import BackendDaemon
from tests.lxd_fixture import LXDDaemon

ALL = ('lxd', 'bundled')
# The bundled backend joins the default run once it runs containers with nic and disk devices.
DEFAULT = ('lxd', 'bundled')
_started = {}
# (backend, test name) -> what the backend lacks; such tests are expected to fail (strictly).
KNOWN_GAPS = {}


def selected():
    raw = os.environ.get('NOVA_LXD_TEST_BACKEND')
    names = [n.strip() for n in raw.split(',')] if raw else list(DEFAULT)
    unknown = set(names) - set(ALL)
    if unknown:
        raise ValueError('NOVA_LXD_TEST_BACKEND: unknown backend(s) %s; use %s'
                         % (', '.join(sorted(unknown)), ' or '.join(ALL)))
    return names


def get(name):
    """The running daemon for a backend name (started on first use, stopped at exit)."""
    if name not in _started:
        daemon = LXDDaemon() if name == 'lxd' else BackendDaemon()
        daemon.start()
        _started[name] = daemon
    return _started[name]


def stop_all():
    while _started:
        _name, daemon = _started.popitem()
        daemon.destroy()


atexit.register(stop_all)
