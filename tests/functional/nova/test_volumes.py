"""Volumes through os-brick, called as the compute manager calls the driver.

For real: os-brick's local connector on loop devices (attach to a running container, the bytes
readable inside it, extend, swap with the data copied, detach) and get_volume_connector, which
is os-brick's own connector properties of this host (its privileged calls in-process: root).
iSCSI, RBD and NFS cannot run on this machine: for them the test stops at the os-brick
boundary (the connector os-brick picks for the connection type).
"""
import glob
import os
import shutil
import subprocess
import tempfile

import fixtures
import psutil
from os_brick.initiator.connectors import iscsi as brick_iscsi
from os_brick.initiator.connectors import rbd as brick_rbd
from os_brick.initiator.connectors import remotefs as brick_remotefs
from os_brick import privileged as brick_privileged

from nova import exception

from nova_lxd.virt import conf
from nova_lxd.virt import volumes as lxd_volumes
from tests.functional.nova import base
from tests.functional.nova import test_driver

MARKER = b'volume-data'
# nova.test poisons these (/sys, host NICs); os-brick reads the real host here, on purpose.
_UNPOISONED = {'os.path.isdir': os.path.isdir, 'builtins.open': open,
               'glob.iglob': glob.iglob, 'glob.glob': glob.glob, 'os.listdir': os.listdir,
               'psutil.net_if_addrs': psutil.net_if_addrs}


class _VolumesTest(test_driver._DriverTest):
    __test__ = False

    def setUp(self):
        super().setUp()
        # nova.test forbids spawning privsep helpers; as root, os-brick's privileged calls run
        # in this process instead (as nova's PrivsepFixture does for its own context)
        self.useFixture(fixtures.MockPatchObject(brick_privileged.default, 'client_mode',
                                                 False))
        for name, func in _UNPOISONED.items():
            self.useFixture(fixtures.MonkeyPatch(name, func))
        self.tmp = tempfile.mkdtemp(dir='/var/tmp', prefix='nova-lxd-vol-')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _loop(self, name, size_mb, data=b''):
        path = os.path.join(self.tmp, name)
        with open(path, 'wb') as f:
            f.write(data)
            f.truncate(size_mb * 1024 * 1024)
        dev = subprocess.run(['losetup', '--find', '--show', path], check=True,
                             capture_output=True, text=True).stdout.strip()
        self.addCleanup(subprocess.run, ['losetup', '-d', dev], capture_output=True)
        return path, dev

    def _info(self, dev):
        return {'driver_volume_type': 'local', 'data': {'device_path': dev}}

    def _read_inside(self, inst, count):
        return self._exec(inst, 'head', '-c', str(count), '/dev/vdb')

    def test_connector_is_os_brick(self):
        inst = self._spawn(self._image(base.busybox_bytes()))
        props = self.driver.get_volume_connector(inst)
        self.assertEqual(conf.CONF.host, props['host'])
        self.assertEqual(conf.CONF.my_ip, props['ip'])
        for key in ('platform', 'os_type', 'multipath', 'enforce_multipath'):
            self.assertIn(key, props)
        self.driver.destroy(self.ctxt, inst, [])

    def test_attach_extend_swap_detach(self):
        inst = self._spawn(self._image(base.busybox_bytes()))
        path, dev = self._loop('vol1', 16, MARKER)
        info = self._info(dev)
        self.driver.attach_volume(self.ctxt, info, inst, '/dev/vdb')
        self.assertEqual(MARKER.decode(), self._read_inside(inst, len(MARKER)))
        # attached twice at one mountpoint: refused, nothing changes
        self.assertRaises(exception.InvalidInput, self.driver.attach_volume, self.ctxt,
                          self._info(dev), inst, '/dev/vdb')

        with open(path, 'r+b') as f:
            f.truncate(32 * 1024 * 1024)
        subprocess.run(['losetup', '-c', dev], check=True)
        self.assertEqual(32 * 1024 * 1024,
                         self.driver.extend_volume(self.ctxt, info, inst, 32 * 1024 ** 2))

        _path2, dev2 = self._loop('vol2', 32)
        info2 = self._info(dev2)
        self.driver.swap_volume(self.ctxt, info, info2, inst, '/dev/vdb', 32)
        devices = self.client.instances.get(inst.name).devices
        self.assertEqual([dev2], [d['source'] for d in devices.values()
                                  if d.get('path') == '/dev/vdb'])
        self.assertEqual(MARKER.decode(), self._read_inside(inst, len(MARKER)))

        self.driver.detach_volume(self.ctxt, info2, inst, '/dev/vdb')
        result = self.client.instances.get(inst.name).execute(['test', '-e', '/dev/vdb'])
        self.assertNotEqual(0, result.exit_code)
        self.assertEqual('Running', self.client.instances.get(inst.name).status)
        self.driver.destroy(self.ctxt, inst, [])

    def test_remote_protocols_at_the_os_brick_boundary(self):
        """iSCSI, RBD, NFS cannot run here: the driver hands them to os-brick's connectors."""
        for kind, cls in (('iscsi', brick_iscsi.ISCSIConnector),
                          ('rbd', brick_rbd.RBDConnector),
                          ('nfs', brick_remotefs.RemoteFsConnector)):
            self.assertIsInstance(lxd_volumes._brick({'driver_volume_type': kind}), cls)
        self.assertRaises(exception.VolumeDriverNotFound, lxd_volumes._brick,
                          {'driver_volume_type': 'no-such-protocol'})


# Only the helpers of test_driver's base are wanted here, not its tests.
for _name in dir(test_driver._DriverTest):
    if _name.startswith('test_') and _name not in vars(_VolumesTest):
        setattr(_VolumesTest, _name, None)

base.for_each_backend(globals(), _VolumesTest, 'TestVolumes')
