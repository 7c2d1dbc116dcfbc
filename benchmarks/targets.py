"""The two sides of every benchmark: a private bundled backend and a private LXD 5.0.2.

Both are driven by the same client (pylxd over the unix socket) with the same images. The daemons
come from nova_lxd/backend/local.py and the test fixture tests/lxd_fixture.py; LXD gets a storage
pool of the same kind as the bundled backend's default (btrfs on a loop file when that is what
the bundled backend uses), so the comparison is like for like.
"""
import itertools
import os
import random
import socket
import subprocess
import tempfile

import pylxd
from pylxd.exceptions import LXDAPIException

from benchmarks import host
from nova_lxd.backend.local import LocalDaemon
from tests.lxd_fixture import LXDDaemon

_counter = itertools.count()


class CheckFailed(Exception):
    """A scenario's result was wrong: the measurement is void, whatever its speed."""


# Absolute targets, beside the ratios: metric -> (side, limit in seconds, where it is asked).
LIMITS = {
    'nova boot p50': ('nova-lxd', 1.0, 'issue 6: Nova boot p50 under 1 s with the bundled backend'),
}


def limits_report(table):
    """One line per absolute target whose metric was measured: the median, met or not."""
    lines = []
    for row in table:
        if row['metric'] in LIMITS:
            side, limit, source = LIMITS[row['metric']]
            measured = row['sides'].get(side, {}).get('median')
            if measured is not None:
                lines.append('%s: %.3f s on %s: %s' % (
                    source, measured, side, 'met' if measured < limit else 'NOT met'))
    return '\n'.join(lines)


class BenchLXD(LXDDaemon):
    """The test fixture's LXD, its default profile's root disk on a pool of the given driver.

    The fixture's own pool is `dir`; a `bench` pool of another driver is added when asked.
    """

    POOL = 'bench'

    def start(self, pool_driver='dir', pool_size='30GiB', timeout=60):
        client = super().start(timeout=timeout)
        if pool_driver != 'dir':
            try:
                config = {'size': pool_size} if pool_driver == 'btrfs' else {}
                client.storage_pools.create({'name': self.POOL, 'driver': pool_driver,
                                             'config': config})
                profile = client.profiles.get('default')
                devices = dict(profile.devices)
                devices['root'] = dict(devices['root'], pool=self.POOL)
                profile.devices = devices
                profile.save()
            except Exception:
                self.destroy()
                raise
        return client

    def destroy(self):
        if self.process and self.process.poll() is None:
            try:
                self.delete_all()
                client = self.client()
                profile = client.profiles.get('default')
                profile.devices = dict(profile.devices,
                                       root=dict(profile.devices['root'], pool=self.pool))
                profile.save()
                if client.storage_pools.exists(self.POOL):
                    client.storage_pools.get(self.POOL).delete()
            except Exception:
                pass
        super().destroy()


class Target:
    """One daemon under test, as the scenarios see it."""

    kind = None       # 'nova-lxd' or 'lxd'

    def __init__(self, daemon, client):
        self.daemon = daemon
        self.client = client
        self.checks = 0
        self._images = {}
        self.peers = []

    @property
    def name(self):
        return self.kind

    @property
    def pid(self):
        return self.daemon.process.pid

    @property
    def socket(self):
        return self.daemon.socket

    # -- checks and names ---------------------------------------------------------------------
    def check(self, condition, what):
        self.checks += 1
        if not condition:
            raise CheckFailed(what)

    @staticmethod
    def unique(prefix):
        return '%s-%d-%d' % (prefix, os.getpid() % 10000, next(_counter))

    # -- images -------------------------------------------------------------------------------
    def ensure_image(self, image):
        """Import an image once (untimed set-up); returns its fingerprint.

        One instance is created from it and deleted, so that the daemon has unpacked the image
        into its pool: later launches are launches from a cached image on both sides.
        """
        if image.alias not in self._images:
            fingerprint = image.fingerprint
            if not self.client.images.exists(fingerprint):
                with open(image.path, 'rb') as f:
                    imported = self.client.images.create(f.read(), wait=True)
                if imported.fingerprint != fingerprint:
                    raise CheckFailed('%s imported %s as %s' % (self.name, image.path,
                                                                imported.fingerprint))
            warm = self.client.instances.create(
                {'name': self.unique('warm'),
                 'source': {'type': 'image', 'fingerprint': fingerprint}}, wait=True)
            warm.delete(wait=True)
            self._images[image.alias] = fingerprint
        return self._images[image.alias]

    def forget_image(self, image):
        """The image was deleted: the next ensure_image imports it again."""
        self._images.pop(image.alias, None)

    # -- instances ----------------------------------------------------------------------------
    def create(self, image, name=None):
        fingerprint = self.ensure_image(image)
        return self.client.instances.create(
            {'name': name or self.unique('b'),
             'source': {'type': 'image', 'fingerprint': fingerprint}}, wait=True)

    def init_pid(self, instance):
        return instance.state().pid

    def check_running(self, instance):
        """The container really runs: Running, and its init is a pid-namespaced init on the host."""
        instance.sync()
        self.check(instance.status == 'Running', '%s: %s is %s, not Running'
                   % (self.name, instance.name, instance.status))
        pid = self.init_pid(instance)
        self.check(host.is_container_init(pid), '%s: %s has no container init (pid %r)'
                   % (self.name, instance.name, pid))
        return pid

    def check_stopped(self, instance):
        instance.sync()
        self.check(instance.status == 'Stopped', '%s: %s is %s, not Stopped'
                   % (self.name, instance.name, instance.status))

    def launch(self, image, name=None, ready=False):
        instance = self.create(image, name)
        instance.start(wait=True)
        pid = self.check_running(instance)
        if ready:
            # Untimed: let the boot finish before anyone asks init to stop.
            self.check(host.wait_boot(pid),
                       '%s: %s never finished booting' % (self.name, instance.name))
        return instance

    def remove(self, instance):
        """Untimed clean-up; never raises (a failing clean-up must not hide the real error)."""
        try:
            instance.sync()
            if instance.status != 'Stopped':
                instance.stop(force=True, wait=True)
            instance.delete(wait=True)
        except Exception:
            pass

    def lxc(self, *args):
        """Run the stock lxc client against this daemon (its unix socket); the CompletedProcess."""
        return subprocess.run(['lxc'] + list(args), capture_output=True, timeout=120,
                              env=dict(os.environ, LXD_DIR=self.daemon.data_dir))

    def list_raw(self, recursion):
        """GET /1.0/instances?recursion=N through pylxd's raw API object (same client)."""
        response = self.client.api.instances.get(params={'recursion': recursion})
        return response.json()['metadata']

    # -- description and peers ----------------------------------------------------------------
    def describe(self):
        # what this run made on the host: gone after it (the smoke test checks)
        info = {'kind': self.kind, 'data_dir': self.daemon.data_dir,
                'bridge': getattr(self, 'bridge', None) or getattr(self.daemon, 'bridge', None)}
        try:
            env = self.client.host_info.get('environment', {})
            info.update(server_version=env.get('server_version'),
                        storage=env.get('storage'),
                        api_extensions=len(self.client.host_info.get('api_extensions', [])))
            profile = self.client.profiles.get('default')
            info['default_profile_devices'] = sorted(
                '%s:%s' % (k, v.get('type')) for k, v in profile.devices.items())
            pool = profile.devices.get('root', {}).get('pool')
            info['root_pool'] = '%s (%s)' % (pool, self.client.storage_pools.get(pool).driver)
        except Exception as e:
            info['describe_error'] = str(e)
        return info

    def storage_driver(self):
        return self.client.host_info.get('environment', {}).get('storage', '')

    def spawn_peer(self):
        """A second daemon of the same kind (migration); closed with this one."""
        peer = self.start_peer()
        self.peers.append(peer)
        return peer

    def enable_https(self):
        """Listen on a loopback port; returns an HTTPS pylxd client trusted by the daemon."""
        with socket.socket() as probe:
            probe.bind(('127.0.0.1', 0))
            port = probe.getsockname()[1]
        address = '127.0.0.1:%d' % port
        self.client.api.patch(json={'config': {'core.https_address': address}})
        cert, key = _client_certificate()
        with open(cert, 'rb') as f:
            try:
                self.client.certificates.create('', f.read(), name='bench')
            except LXDAPIException as e:
                if 'already' not in str(e).lower():
                    raise
        # REQUESTS_CA_BUNDLE would override verify=False (see ARCHITECTURE.md).
        for var in ('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE'):
            os.environ.pop(var, None)
        return pylxd.Client(endpoint='https://' + address, cert=(cert, key), verify=False)

    def close(self):
        for peer in self.peers:
            peer.close()
        self.daemon.destroy()


class BundledTarget(Target):
    """The bundled backend with a bridge of its own and eth0 in its default profile.

    That is what the LXD fixture's preseed gives LXD, so a launch sets up a NIC on both sides.
    The bridge gets a unique name and subnet through the API (the daemon's configured default
    network, novalxdbr0, is one per host and may be in use by a test).
    """
    kind = 'nova-lxd'

    @classmethod
    def start(cls):
        daemon = LocalDaemon(prefix='nova-lxd-bench-backend-')
        try:
            client = daemon.start()
            target = cls(daemon, client)
            target.bridge = None
            target._attach_bridge()
        except Exception:
            daemon.destroy()
            raise
        return target

    def _attach_bridge(self):
        name = 'nlbbr%04x' % random.randrange(0x10000)
        for _ in range(5):
            # a /20: room for the density ramp's 1000 leases (in a /24, the ~750 without one
            # kept asking: their DHCP discovers and the offers, flooded to every port of the
            # bridge, took a core at 1000 running and slowed every launch)
            address = '10.214.%d.1/20' % (16 * random.randrange(1, 16))
            try:
                self.client.networks.create(name, type='bridge', config={
                    'ipv4.address': address, 'ipv4.nat': 'true', 'ipv6.address': 'none'})
                break
            except LXDAPIException as e:
                error = e       # most likely the subnet is taken: another one
        else:
            raise error
        self.bridge = name
        profile = self.client.profiles.get('default')
        profile.devices = dict(profile.devices, eth0={'type': 'nic', 'name': 'eth0',
                                                      'network': name})
        profile.save()

    def close(self):
        for peer in self.peers:
            peer.close()
        if self.bridge and self.daemon.process and self.daemon.process.poll() is None:
            try:
                self.daemon.delete_all()
                profile = self.client.profiles.get('default')
                profile.devices = {k: v for k, v in profile.devices.items() if k != 'eth0'}
                profile.save()
                self.client.networks.get(self.bridge).delete()
            except Exception:
                pass
        self.daemon.destroy()
        if self.bridge:
            subprocess.run(['ip', 'link', 'delete', self.bridge], capture_output=True)

    def start_peer(self):
        return BundledTarget.start()


class LXDTarget(Target):
    kind = 'lxd'

    @classmethod
    def start(cls, pool_driver='dir'):
        daemon = BenchLXD()
        client = daemon.start(pool_driver=pool_driver)
        target = cls(daemon, client)
        target.pool_driver = pool_driver
        return target

    def start_peer(self):
        return LXDTarget.start(self.pool_driver)


_CERT = {}


def _client_certificate():
    """A self-signed client certificate for HTTPS clients, made once per run."""
    if not _CERT:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'nova-lxd-bench')])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .sign(key, hashes.SHA384()))
        directory = tempfile.mkdtemp(prefix='nova-lxd-bench-cert-', dir='/var/tmp')
        _CERT['dir'] = directory
        _CERT['cert'] = os.path.join(directory, 'client.crt')
        _CERT['key'] = os.path.join(directory, 'client.key')
        with open(_CERT['cert'], 'wb') as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(_CERT['key'], 'wb') as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    return _CERT['cert'], _CERT['key']


def remove_client_certificate():
    import shutil
    if _CERT:
        shutil.rmtree(_CERT['dir'], ignore_errors=True)
        _CERT.clear()
