"""A private LXD 5.0.2 daemon for tests: own LXD_DIR, bridge and storage pool; nothing left.

LXD is the reference backend: the driver's tests run against it as well as against the bundled
backend (NOVA_LXD_TEST_BACKEND=lxd|bundled). Subnets are explicit because every outbound connect
appears to succeed on this machine, which defeats `lxd init --auto`'s free-subnet probe.
"""
import os
import random
import re
import shutil
import subprocess
import tempfile
import time

import pylxd
import yaml

LXD = shutil.which('lxd') or '/usr/bin/lxd'


def _free_subnet_octet():
    """N of a 10.213.N.0/24 that no link of the host has (other LXD fixtures run at once)."""
    out = subprocess.run(['ip', '-4', '-o', 'addr'], capture_output=True, text=True).stdout
    used = {int(n) for n in re.findall(r'inet 10\.213\.(\d+)\.', out)}
    return random.choice([n for n in range(20, 250) if n not in used])


class LXDDaemon:
    def __init__(self):
        self.data_dir = tempfile.mkdtemp(prefix='nova-lxd-lxd-', dir='/var/tmp')
        os.chmod(self.data_dir, 0o711)
        suffix = '%04x' % random.randrange(0x10000)
        self.bridge = 'nlxdbr' + suffix
        self.subnet_octet = _free_subnet_octet()
        self.pool = 'default'
        self.process = None

    @property
    def socket(self):
        return os.path.join(self.data_dir, 'unix.socket')

    @property
    def log_file(self):
        return os.path.join(self.data_dir, 'lxd.log')

    def _env(self):
        return dict(os.environ, LXD_DIR=self.data_dir)

    def start(self, timeout=60):
        self.process = subprocess.Popen(
            [LXD, '--group', 'root', '--logfile', self.log_file], env=self._env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            subprocess.run([LXD, 'waitready', '--timeout', str(timeout)], env=self._env(),
                           check=True, capture_output=True)
            preseed = {
                'networks': [{'name': self.bridge, 'type': 'bridge', 'config': {
                    'ipv4.address': '10.213.%d.1/24' % self.subnet_octet, 'ipv4.nat': 'true',
                    # LXD's dnsmasq forwards outside names to the host's resolvers: never
                    # from a test (a Debian guest's timesyncd would look up its NTP pool)
                    'ipv6.address': 'none', 'raw.dnsmasq': 'no-resolv'}}],
                'storage_pools': [{'name': self.pool, 'driver': 'dir'}],
                'profiles': [{'name': 'default', 'devices': {
                    'root': {'type': 'disk', 'path': '/', 'pool': self.pool},
                    'eth0': {'type': 'nic', 'name': 'eth0', 'network': self.bridge}}}],
            }
            result = subprocess.run([LXD, 'init', '--preseed'], env=self._env(),
                                    input=yaml.safe_dump(preseed).encode(), capture_output=True)
            if result.returncode != 0:     # LXD's reason, not just its exit status
                raise RuntimeError('lxd init --preseed failed: %s'
                                   % result.stderr.decode(errors='replace').strip())
        except Exception:
            self.destroy()
            raise
        return self.client()

    def client(self):
        return pylxd.Client(endpoint=self.socket)

    def log(self):
        try:
            with open(self.log_file) as f:
                return f.read()[-20000:]
        except OSError:
            return ''

    def delete_all(self):
        """Remove instances, images and extra profiles through the API."""
        client = self.client()
        for instance in client.instances.all():
            if instance.status != 'Stopped':
                instance.stop(force=True, wait=True)
            instance.delete(wait=True)
        for image in client.images.all():
            image.delete(wait=True)
        for profile in client.profiles.all():
            if profile.name != 'default':
                profile.delete()

    def destroy(self):
        if self.process and self.process.poll() is None:
            try:
                self.delete_all()
            except Exception:
                pass
            # The network is removed before shutdown so LXD takes its bridge, dnsmasq and
            # nftables rules with it.
            subprocess.run(['lxc', 'profile', 'device', 'remove', 'default', 'eth0'],
                           env=self._env(), capture_output=True)
            subprocess.run(['lxc', 'network', 'delete', self.bridge], env=self._env(),
                           capture_output=True)
            subprocess.run([LXD, 'shutdown', '--timeout', '30'], env=self._env(),
                           capture_output=True)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        subprocess.run(['ip', 'link', 'delete', self.bridge], capture_output=True)
        _delete_empty_nft_table()
        for _ in range(3):
            if subprocess.run(['umount', '-R', '-l', self.data_dir],
                              capture_output=True).returncode != 0:
                break
            time.sleep(0.1)
        self._umount_below()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _umount_below(self):
        with open('/proc/self/mountinfo') as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(self.data_dir)), reverse=True):
            subprocess.run(['umount', '-l', point], capture_output=True)


def _delete_empty_nft_table():
    """LXD leaves an empty `inet lxd` table at shutdown; remove it unless another LXD uses it."""
    listing = subprocess.run(['nft', 'list', 'table', 'inet', 'lxd'], capture_output=True,
                             text=True)
    if listing.returncode == 0 and 'chain' not in listing.stdout:
        subprocess.run(['nft', 'delete', 'table', 'inet', 'lxd'], capture_output=True)
