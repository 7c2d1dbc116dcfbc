import pytest

from tests.backend_fixture import BackendDaemon


@pytest.fixture(scope='session')
def backend():
    """One private bundled backend per test session (per xdist worker)."""
    daemon = BackendDaemon()
    daemon.start()
    yield daemon
    daemon.destroy()


@pytest.fixture
def client(backend):
    return backend.client()
