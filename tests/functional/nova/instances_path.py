"""A private [DEFAULT] instances_path for a Nova harness test.

Nova's default instances_path ($state_path/instances, inside the venv) is shared by every test
process, and each compute's init_host removes the config drives and partial image downloads of
instances it does not know from it (nova_lxd.virt.configdrive.remove_orphans,
image.remove_partial_downloads): a test running beside another one lost its config drive.
"""
import os

import fixtures


class PrivateInstancesPath:
    """Mixin for ProviderUsageBaseTestCase subclasses: set before the compute starts."""

    def _start_compute(self, host, *args, **kwargs):
        # not in nova's NestedTempfile directory (0700): an unprivileged container's root must
        # reach its config drive below it for the bind mount
        path = self.useFixture(fixtures.TempDir(rootdir='/var/tmp')).path
        os.chmod(path, 0o711)
        self.flags(instances_path=path)
        return super()._start_compute(host, *args, **kwargs)
