"""Cinder volumes on loop devices for Nova harness tests (os-brick's local connector, for real).

Nova's Cinder fixture hands every attachment a connection_info; here a volume of the test's
own gets one of os-brick's local connector, naming a loop device on the volume's data file.
A volume can have several loop devices on that one file, each a view of the same bytes: the
volume's n-th attachment gets the n-th view (the last when there are fewer), as each host
of a move sees the volume at its own device. So a test tells which host connected what by
device path: the boot's attachment is the first view, the attachment Nova makes for a live
migration's destination the second.

os-brick's privileged calls run in-process (root), and it reads the real host (/sys, host
NICs), which nova.test poisons: see test_volumes.
"""
import os
import shutil
import subprocess
import tempfile
import uuid

import fixtures
from os_brick.initiator.connectors import local as brick_local
from os_brick import privileged as brick_privileged

from nova.tests.fixtures import cinder as cinder_fixture

from tests.functional.nova import test_volumes


class LoopVolumes:
    """Call from setUp after the base class's setUp (the Cinder fixture runs by then)."""

    def __init__(self, test):
        self._test = test
        test.useFixture(fixtures.MockPatchObject(brick_privileged.default, 'client_mode',
                                                 False))
        for name, func in test_volumes._UNPOISONED.items():
            test.useFixture(fixtures.MonkeyPatch(name, func))
        self.tmp = tempfile.mkdtemp(dir='/var/tmp', prefix='nova-lxd-vol-')
        test.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.views = {}          # volume id -> its loop devices
        self._attachments = {}   # volume id -> its attachment ids, oldest first
        self.connected, self.disconnected = [], []
        real_find = cinder_fixture.CinderFixture._find_connection_info
        volumes = self

        def find_connection_info(fixture, volume_id, attachment_id):
            if volume_id not in volumes.views:
                return real_find(fixture, volume_id, attachment_id)
            return volumes._connection_info(volume_id, attachment_id)
        test.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.cinder.CinderFixture._find_connection_info',
            find_connection_info))
        self._record('connect_volume', self.connected)
        self._record('disconnect_volume', self.disconnected)

    def _record(self, method, calls):
        """The device paths os-brick's local connector is given (the real call still runs)."""
        real = getattr(brick_local.LocalConnector, method)

        def recording(connector, props, *args, **kwargs):
            calls.append(props['device_path'])
            return real(connector, props, *args, **kwargs)
        self._test.useFixture(fixtures.MonkeyPatch(
            'os_brick.initiator.connectors.local.LocalConnector.%s' % method, recording))

    def _connection_info(self, volume_id, attachment_id):
        seen = self._attachments.setdefault(volume_id, [])
        if attachment_id not in seen:
            seen.append(attachment_id)
        views = self.views[volume_id]
        device = views[min(seen.index(attachment_id), len(views) - 1)]
        return {'driver_volume_type': 'local', 'data': {
            'device_path': device, 'volume_id': volume_id, 'attachment_id': attachment_id}}

    def create(self, data=b'', size_mb=16, views=1):
        """A new volume id, `data` at its start, seen through `views` loop devices."""
        volume_id = str(uuid.uuid4())
        path = os.path.join(self.tmp, volume_id)
        with open(path, 'wb') as f:
            f.write(data)
            f.truncate(size_mb * 1024 * 1024)
        self.views[volume_id] = []
        for _view in range(views):
            device = subprocess.run(['losetup', '--find', '--show', path], check=True,
                                    capture_output=True, text=True).stdout.strip()
            self._test.addCleanup(subprocess.run, ['losetup', '-d', device],
                                  capture_output=True)
            self.views[volume_id].append(device)
        return volume_id
