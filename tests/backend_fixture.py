"""A private bundled backend daemon for tests: its own directory and socket, nothing left behind."""
from nova_lxd.backend.local import LocalDaemon, REPO  # noqa: F401


class BackendDaemon(LocalDaemon):
    def __init__(self, data_dir=None, extra_args=(), env=None):
        super().__init__(data_dir, extra_args, prefix='nova-lxd-test-', env=env)
