"""A private Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath) for VIF tests.

Its own database, sockets and logs in a temporary directory; no kernel module is needed because
bridges use datapath_type=netdev. Stopped by PID and removed afterwards.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema'


class OVS:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='nova-lxd-ovs-', dir='/var/tmp')
        self.db_sock = os.path.join(self.dir, 'db.sock')
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir,
                        OVS_DBDIR=self.dir)

    @property
    def connection(self):
        return 'unix:' + self.db_sock

    def _pid(self, name):
        try:
            with open(os.path.join(self.dir, name + '.pid')) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self):
        db = os.path.join(self.dir, 'conf.db')
        subprocess.run(['ovsdb-tool', 'create', db, SCHEMA], check=True, env=self.env)
        subprocess.run(['ovsdb-server', db, '--remote=punix:' + self.db_sock,
                        '--pidfile=%s/ovsdb-server.pid' % self.dir,
                        '--unixctl=%s/ovsdb-server.ctl' % self.dir,
                        '--log-file=%s/ovsdb-server.log' % self.dir, '--detach'],
                       check=True, env=self.env)
        self.vsctl('--no-wait', 'init')
        subprocess.run(['ovs-vswitchd', self.connection,
                        '--pidfile=%s/ovs-vswitchd.pid' % self.dir,
                        '--unixctl=%s/ovs-vswitchd.ctl' % self.dir,
                        '--log-file=%s/ovs-vswitchd.log' % self.dir, '--detach'],
                       check=True, env=self.env)
        return self

    def vsctl(self, *args):
        return subprocess.run(['ovs-vsctl', '--db=' + self.connection, '--timeout=10'] +
                              list(args), check=True, capture_output=True, text=True,
                              env=self.env).stdout

    def ports(self, bridge):
        return self.vsctl('list-ports', bridge).split()

    def destroy(self):
        try:
            for bridge in self.vsctl('list-br').split():
                self.vsctl('--if-exists', 'del-br', bridge)
        except Exception:
            pass
        for name in ('ovs-vswitchd', 'ovsdb-server'):
            pid = self._pid(name)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                for _ in range(100):
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)


_shared = None


def shared():
    """One switch per test process: os-vif's OVS plugin keeps its ovsdb connection for good."""
    global _shared
    if _shared is None:
        _shared = OVS().start()
    return _shared


def stop_shared():
    """Called at the end of the test session (pytest-xdist workers skip atexit)."""
    global _shared
    if _shared is not None:
        _shared.destroy()
        _shared = None
