"""A private bundled backend daemon for tests: its own directory and socket, nothing left behind."""
from nova_lxd.backend.local import LocalDaemon, REPO  # noqa: F401


class BackendDaemon(LocalDaemon):
    """A LocalDaemon: its networks' DNS forwards nothing off this host.

    It reads the servers of LocalDaemon's own resolv file, empty; a test that needs an upstream
    writes a loopback resolver of its own into `resolv_file`.
    """

    def __init__(self, data_dir=None, extra_args=(), env=None, config=None):
        super().__init__(data_dir, extra_args, prefix='nova-lxd-test-', env=env, config=config)

    def start(self, timeout=30):
        """Start it; one that dies or hangs while starting is destroyed before the error.

        It may have mounted its pool (a loop device) and started lxcfs already, and the test
        that started it fails before any clean-up of its own (seen: four pools and an lxcfs left
        mounted by daemons that died of a syntax error while starting).
        """
        try:
            return super().start(timeout)
        except RuntimeError:
            self.destroy()
            raise
