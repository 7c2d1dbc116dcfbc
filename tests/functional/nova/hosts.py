"""Several compute hosts for the move tests: each with its own backend, reachable over HTTPS.

The first host uses the shared backend of tests/functional/nova/backends.py; further hosts get
their own daemons (started once per process, stopped at exit). Each backend listens on a
loopback HTTPS port and trusts one client certificate; the driver pins each backend's server
certificate ([lxd] migration_endpoints / migration_server_certs / client_cert), no verify=False.
"""
import atexit
import os
import socket
import subprocess

from tests.backend_fixture import BackendDaemon
from tests.functional.nova import backends
from tests import images
from tests.lxd_fixture import LXDDaemon

_extra = {}
_https = {}


def _client_cert():
    cert = os.path.join(images.CACHE_DIR, 'nova-moves-client.crt')
    key = os.path.join(images.CACHE_DIR, 'nova-moves-client.key')
    if not os.path.exists(cert):
        os.makedirs(images.CACHE_DIR, exist_ok=True)
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                        'ec_paramgen_curve:secp384r1', '-nodes', '-days', '3650',
                        '-subj', '/CN=nova-lxd-tests', '-keyout', key + '.tmp',
                        '-out', cert + '.tmp'], check=True, capture_output=True)
        os.rename(key + '.tmp', key)
        os.rename(cert + '.tmp', cert)
    return cert, key


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def daemon(backend_name, index):
    """Backend daemon of host number `index` (0 is the shared one)."""
    if index == 0:
        return backends.get(backend_name)
    key = (backend_name, index)
    if key not in _extra:
        d = LXDDaemon() if backend_name == 'lxd' else BackendDaemon()
        d.start()
        _extra[key] = d
    return _extra[key]


def https(backend_name, index):
    """(url, server certificate path) of a daemon, listening and trusting the client cert."""
    key = (backend_name, index)
    if key not in _https:
        d = daemon(backend_name, index)
        client = d.client()
        cert, _key = _client_cert()
        with open(cert) as f:
            pem = f.read()
        if not any(c.certificate.strip() == pem.strip() for c in client.certificates.all()):
            client.certificates.create('', pem.encode())
        port = _free_port()
        client.api.patch(json={'config': {'core.https_address': '127.0.0.1:%d' % port}})
        server_cert = os.path.join(d.data_dir, 'nova-moves-server.crt')
        with open(server_cert, 'w') as f:
            f.write(d.client().host_info['environment']['certificate'])
        _https[key] = ('https://127.0.0.1:%d' % port, server_cert)
    return _https[key]


def client_cert():
    return _client_cert()


def stop_all():
    _https.clear()
    while _extra:
        _key, d = _extra.popitem()
        d.destroy()


atexit.register(stop_all)
