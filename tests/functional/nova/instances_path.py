"""A private [DEFAULT] instances_path for a Nova harness test.

Nova's default instances_path ($state_path/instances, inside the venv) is shared by every test
process, and each compute's init_host removes the config drives and partial image downloads of
instances it does not know from it (nova_lxd.virt.configdrive.remove_orphans,
image.remove_partial_downloads): a test running beside another one lost its config drive.
"""
import os

import fixtures


def use_private(test):
    """Give a harness test its own instances_path; call in setUp before any compute starts.

    One per test, not per compute: a test's computes share it, as Nova's hosts share a path in
    its own functional tests. Not in nova's NestedTempfile directory (0700): an unprivileged
    container's root must reach its config drive below it for the bind mount.
    """
    path = test.useFixture(fixtures.TempDir(rootdir='/var/tmp')).path
    os.chmod(path, 0o711)
    test.flags(instances_path=path)
