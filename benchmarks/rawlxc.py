"""Raw liblxc: the physical reference, the same busybox rootfs started straight through liblxc.

No daemon, no API, no database: just an unprivileged container (the same idmap range a daemon would
use), one veth on a private bridge (or a daemon's, to start beside its containers), in a private
lxcpath. What a daemon adds on top of this is its own overhead.
"""
import os
import random
import shutil
import subprocess
import tempfile

import lxc

from benchmarks import host, images

LXC_CONFIG = '/usr/share/lxc/config'


def _subid_range(path, user='root'):
    with open(path) as f:
        for line in f:
            parts = line.strip().split(':')
            if len(parts) == 3 and parts[0] == user and int(parts[2]) >= 65536:
                return int(parts[1]), 65536
    raise RuntimeError('no subordinate id range of %d for %s in %s' % (65536, user, path))


class RawLXC:
    name = 'liblxc'

    def __init__(self, bridge=None):
        """Joins `bridge` if given (a daemon's, with its containers), else a bridge of its own."""
        self.lxcpath = tempfile.mkdtemp(prefix='nova-lxd-bench-lxc-', dir='/var/tmp')
        os.chmod(self.lxcpath, 0o711)
        self.uid_base, self.count = _subid_range('/etc/subuid')
        self.gid_base, _ = _subid_range('/etc/subgid')
        self.rootfs = os.path.join(self.lxcpath, 'rootfs')
        properties = images.rootfs_dir(images.busybox(), self.rootfs,
                                       self.uid_base, self.gid_base)
        # the image's own halt signal (nova-lxd-image records it), as a daemon should use
        self.halt_signal = properties.get('halt_signal', 'SIGPWR')
        self.own_bridge = bridge is None
        self.bridge = bridge or 'nlbench%04x' % random.randrange(0x10000)
        if self.own_bridge:
            subprocess.run(['ip', 'link', 'add', 'name', self.bridge, 'type', 'bridge'],
                           check=True)
            subprocess.run(['ip', 'link', 'set', self.bridge, 'up'], check=True)
        self.checks = 0
        self._names = 0

    def check(self, condition, what):
        self.checks += 1
        if not condition:
            raise RuntimeError(what)

    def _config(self, name):
        return '\n'.join([
            'lxc.include = %s/common.conf' % LXC_CONFIG,
            'lxc.include = %s/userns.conf' % LXC_CONFIG,
            'lxc.arch = linux64',
            'lxc.uts.name = %s' % name,
            'lxc.rootfs.path = %s' % self.rootfs,
            'lxc.idmap = u 0 %d %d' % (self.uid_base, self.count),
            'lxc.idmap = g 0 %d %d' % (self.gid_base, self.count),
            'lxc.signal.halt = %s' % self.halt_signal,
            'lxc.console.path = none',
            'lxc.log.file = %s/%s/lxc.log' % (self.lxcpath, name),
            'lxc.net.0.type = veth',
            'lxc.net.0.link = %s' % self.bridge,
            'lxc.net.0.flags = up',
            'lxc.net.0.name = eth0',
            '']) + '\n'

    def define(self):
        """Write a container's config (part of what a launch costs); returns the Container."""
        self._names += 1
        name = 'raw%d' % self._names
        directory = os.path.join(self.lxcpath, name)
        os.makedirs(directory)
        with open(os.path.join(directory, 'config'), 'w') as f:
            f.write(self._config(name))
        return lxc.Container(name, self.lxcpath)

    def start(self, container):
        """Start until init runs (the same definition of 'launched' as for the daemons).

        From a forked child: Container.start() moves its caller into the monitor's cgroup, which
        can then never be removed while this process lives.
        """
        child = os.fork()
        if child == 0:
            os._exit(0 if container.start() else 1)
        _, status = os.waitpid(child, 0)
        self.check(os.waitstatus_to_exitcode(status) == 0,
                   'lxc-start of %s failed' % container.name)
        self.check(container.wait('RUNNING', 30), '%s never reached RUNNING' % container.name)
        self.check(host.is_container_init(container.init_pid),
                   '%s has no container init' % container.name)

    def wait_ready(self, container):
        self.check(host.wait_boot(container.init_pid),
                   '%s never finished booting' % container.name)

    def clean_stop(self, container, timeout=30):
        self.check(container.shutdown(timeout), 'clean stop of %s timed out' % container.name)
        self.check(not container.running, '%s still running' % container.name)

    def force_stop(self, container):
        self.check(container.stop(), 'forced stop of %s failed' % container.name)
        self.check(not container.running, '%s still running' % container.name)

    def discard(self, container):
        # Not Container.destroy(): it would delete the shared rootfs too.
        if container.running:
            container.stop()
        shutil.rmtree(os.path.join(self.lxcpath, container.name), ignore_errors=True)

    def close(self):
        for name in lxc.list_containers(config_path=self.lxcpath):
            self.discard(lxc.Container(name, self.lxcpath))
        if self.own_bridge:
            subprocess.run(['ip', 'link', 'delete', self.bridge], capture_output=True)
        shutil.rmtree(self.lxcpath, ignore_errors=True)
