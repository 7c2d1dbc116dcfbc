"""Two bundled daemons on one machine, each with its own directory, socket and HTTPS port on
127.0.0.1, and a client certificate both trust (by trust password): the set-up of the migration
and image copy tests."""
import datetime
import os
import shutil
import socket
import subprocess
import tempfile

import pylxd
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.backend_fixture import BackendDaemon

PASSWORD = 'migrate me'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def client_certificate(directory):
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'migration-tests')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA384()))
    crt, pem_key = os.path.join(directory, 'client.crt'), os.path.join(directory, 'client.key')
    with open(crt, 'wb') as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(pem_key, 'wb') as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return crt, pem_key


class Host:
    """One daemon: .daemon (BackendDaemon), .local (unix socket client), .remote (HTTPS)."""

    def __init__(self, cert, env=None):
        self.daemon = BackendDaemon(env=env)
        self.port = free_port()
        self.cert = cert
        self.daemon.start()
        self.local = self.daemon.client()
        self.local.api.patch(json={'config': {
            'core.https_address': '127.0.0.1:%d' % self.port, 'core.trust_password': PASSWORD}})
        self.remote = self.https_client()
        self.remote.authenticate(PASSWORD)

    @property
    def url(self):
        return 'https://127.0.0.1:%d' % self.port

    @property
    def server_cert_path(self):
        return os.path.join(self.daemon.data_dir, 'server.crt')

    def https_client(self):
        return pylxd.Client(endpoint=self.url, cert=self.cert, verify=self.server_cert_path)

    def certificate(self):
        with open(self.server_cert_path) as f:
            return f.read()

    def destroy(self):
        self.daemon.destroy()


class Hosts:
    """Hosts a and b (b only if second), and an `lxc` config with remotes hosta and hostb."""

    def __init__(self, second=True, env=None):
        # this machine sets these, and they override `verify=` in requests
        self._saved = {k: os.environ.pop(k) for k in ('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE')
                       if k in os.environ}
        self.dir = tempfile.mkdtemp(prefix='nlxt-migration-', dir='/var/tmp')
        self.cert = client_certificate(self.dir)
        self.a = self.b = None
        self.lxc_conf = os.path.join(self.dir, 'lxc')
        os.makedirs(self.lxc_conf)
        self.a = Host(self.cert, env)
        self.add_remote('hosta', self.a.url)
        if second:
            self.b = Host(self.cert, env)
            self.add_remote('hostb', self.b.url)

    def add_remote(self, name, url):
        out = self.lxc('remote', 'add', name, url, '--accept-certificate', '--password',
                       PASSWORD)
        assert out.returncode == 0, out.stderr

    def lxc(self, *args, timeout=180):
        env = dict(os.environ, LXD_CONF=self.lxc_conf, HOME=self.lxc_conf)
        return subprocess.run(['lxc'] + list(args), env=env, capture_output=True, text=True,
                              timeout=timeout)

    def destroy(self):
        for host in (self.a, self.b):
            if host is not None:
                host.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)
        os.environ.update(self._saved)
