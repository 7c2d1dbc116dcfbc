"""HTTPS on core.https_address and the trust store, with real TLS clients (pylxd, `lxc`)."""
import datetime
import grp
import os
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile

import pylxd
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.backend_fixture import BackendDaemon

PASSWORD = 'correct horse'


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch):
    # this machine sets these, and they override `verify=` in requests
    monkeypatch.delenv('REQUESTS_CA_BUNDLE', raising=False)
    monkeypatch.delenv('CURL_CA_BUNDLE', raising=False)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_client_cert(directory, name):
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA384()))
    crt, pem_key = os.path.join(directory, name + '.crt'), os.path.join(directory, name + '.key')
    with open(crt, 'wb') as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(pem_key, 'wb') as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return crt, pem_key, cert.fingerprint(hashes.SHA256()).hex()


@pytest.fixture(scope='module')
def daemon():
    d = BackendDaemon(extra_args=['--group', 'nogroup'])
    d.https_port = free_port()
    client = d.start()
    client.api.patch(json={'config': {'core.https_address': '127.0.0.1:%d' % d.https_port,
                                      'core.trust_password': PASSWORD}})
    d.certdir = tempfile.mkdtemp(prefix='nlxt-certs-', dir='/var/tmp')
    yield d
    shutil.rmtree(d.certdir, ignore_errors=True)
    d.destroy()


def https(daemon, cert=None):
    return pylxd.Client(endpoint='https://127.0.0.1:%d' % daemon.https_port, cert=cert,
                        verify=os.path.join(daemon.data_dir, 'server.crt'))


def raw_get(daemon, path, cert=None):
    return requests.get('https://127.0.0.1:%d%s' % (daemon.https_port, path), cert=cert,
                        verify=os.path.join(daemon.data_dir, 'server.crt'))


def test_unix_socket_is_root_and_socket_group_0660(daemon):
    st = os.stat(daemon.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == 0 and st.st_gid == grp.getgrnam('nogroup').gr_gid


def test_https_serves_the_servers_own_certificate(daemon):
    pem = ssl.get_server_certificate(('127.0.0.1', daemon.https_port))
    with open(os.path.join(daemon.data_dir, 'server.crt')) as f:
        assert x509.load_pem_x509_certificate(pem.encode()) == \
            x509.load_pem_x509_certificate(f.read().encode())


def test_untrusted_client_sees_only_the_public_server_info(daemon):
    crt, key, _ = make_client_cert(daemon.certdir, 'stranger')
    for cert in (None, (crt, key)):
        info = raw_get(daemon, '/1.0', cert).json()['metadata']
        assert info['auth'] == 'untrusted'
        assert 'environment' not in info and 'config' not in info
        assert raw_get(daemon, '/', cert).status_code == 200
        for path in ('/1.0/networks', '/1.0/instances', '/1.0/certificates', '/1.0/operations',
                     '/1.0/images', '/1.0/nope'):
            resp = raw_get(daemon, path, cert)
            assert resp.status_code == 403, path
            assert resp.json()['type'] == 'error' and resp.json()['error_code'] == 403
    resp = requests.put('https://127.0.0.1:%d/1.0' % daemon.https_port,
                        json={'config': {}}, cert=(crt, key),
                        verify=os.path.join(daemon.data_dir, 'server.crt'))
    assert resp.status_code == 403
    assert daemon.client().api.get().json()['metadata']['config']['core.trust_password'] is True


def test_trust_by_password_with_pylxd(daemon):
    crt, key, fingerprint = make_client_cert(daemon.certdir, 'by-password')
    client = https(daemon, (crt, key))
    assert not client.trusted
    client.authenticate(PASSWORD)
    assert client.trusted
    assert isinstance(client.networks.all(), list)
    certs = daemon.client().api.certificates.get(params={'recursion': 1}).json()['metadata']
    assert fingerprint in [c['fingerprint'] for c in certs]
    doc = client.api.certificates[fingerprint].get().json()['metadata']
    assert doc['name'] == 'by-password' and doc['type'] == 'client'
    # a fingerprint prefix finds it too, as `lxc config trust show` allows
    assert client.api.certificates[fingerprint[:12]].get().json()['metadata']['fingerprint'] \
        == fingerprint


def test_wrong_password_is_refused_and_retries_are_limited(daemon):
    crt, key, fingerprint = make_client_cert(daemon.certdir, 'guesser')
    url = 'https://127.0.0.1:%d/1.0/certificates' % daemon.https_port
    verify = os.path.join(daemon.data_dir, 'server.crt')
    resp = requests.post(url, json={'type': 'client', 'password': 'wrong'}, cert=(crt, key),
                         verify=verify)
    assert resp.status_code == 403 and resp.json()['error'] == 'not authorized'
    assert raw_get(daemon, '/1.0/networks', (crt, key)).status_code == 403


def test_password_guessing_is_rate_limited():
    # its own daemon: the limit is per client address, and every test here is 127.0.0.1
    d = BackendDaemon()
    d.https_port = free_port()
    certdir = tempfile.mkdtemp(prefix='nlxt-certs-', dir='/var/tmp')
    try:
        d.start().api.patch(json={'config': {
            'core.https_address': '127.0.0.1:%d' % d.https_port,
            'core.trust_password': PASSWORD}})
        crt, key, fingerprint = make_client_cert(certdir, 'guesser')
        url = 'https://127.0.0.1:%d/1.0/certificates' % d.https_port
        verify = os.path.join(d.data_dir, 'server.crt')
        for _ in range(5):
            resp = requests.post(url, json={'type': 'client', 'password': 'wrong'},
                                 cert=(crt, key), verify=verify)
            assert resp.status_code == 403 and resp.json()['error'] == 'not authorized'
        # now even the right password is refused for a while
        resp = requests.post(url, json={'type': 'client', 'password': PASSWORD},
                             cert=(crt, key), verify=verify)
        assert resp.status_code == 403 and 'Too many' in resp.json()['error']
        assert fingerprint not in str(d.client().api.certificates.get().json())
    finally:
        shutil.rmtree(certdir, ignore_errors=True)
        d.destroy()


def test_no_certificate_cannot_become_trusted(daemon):
    resp = requests.post('https://127.0.0.1:%d/1.0/certificates' % daemon.https_port,
                         json={'type': 'client', 'password': PASSWORD},
                         verify=os.path.join(daemon.data_dir, 'server.crt'))
    assert resp.status_code == 400 and 'certificate' in resp.json()['error']


def test_trust_by_single_use_token(daemon):
    local = daemon.client()
    resp = local.api.certificates.post(json={'token': True, 'name': 'tokened', 'type': 'client'})
    assert resp.status_code == 202
    op = resp.json()['metadata']
    assert op['class'] == 'token' and op['status'] == 'Running'
    token = op['metadata']['token']
    assert op['metadata']['addresses'] == ['127.0.0.1:%d' % daemon.https_port]
    crt, key, fingerprint = make_client_cert(daemon.certdir, 'tokened')
    client = https(daemon, (crt, key))
    client.authenticate(token)
    assert client.trusted
    assert client.api.certificates[fingerprint].get().json()['metadata']['name'] == 'tokened'
    finished = local.api.operations[op['id']].wait.get(params={'timeout': 10}).json()
    assert finished['metadata']['status'] == 'Success'
    # single use: a second client cannot redeem it
    crt2, key2, fp2 = make_client_cert(daemon.certdir, 'second')
    resp = requests.post('https://127.0.0.1:%d/1.0/certificates' % daemon.https_port,
                         json={'type': 'client', 'trust_token': token}, cert=(crt2, key2),
                         verify=os.path.join(daemon.data_dir, 'server.crt'))
    assert resp.status_code == 403


def test_untrusted_client_cannot_make_tokens_and_cancelled_tokens_die(daemon):
    crt, key, _ = make_client_cert(daemon.certdir, 'sneaky')
    resp = requests.post('https://127.0.0.1:%d/1.0/certificates' % daemon.https_port,
                         json={'token': True}, cert=(crt, key),
                         verify=os.path.join(daemon.data_dir, 'server.crt'))
    assert resp.status_code == 403
    local = daemon.client()
    op = local.api.certificates.post(json={'token': True, 'name': 'x'}).json()['metadata']
    local.api.operations[op['id']].delete()
    resp = requests.post('https://127.0.0.1:%d/1.0/certificates' % daemon.https_port,
                         json={'type': 'client', 'trust_token': op['metadata']['secret']},
                         cert=(crt, key), verify=os.path.join(daemon.data_dir, 'server.crt'))
    assert resp.status_code == 403


def test_deleted_certificate_is_untrusted_again(daemon):
    crt, key, fingerprint = make_client_cert(daemon.certdir, 'revoked')
    client = https(daemon, (crt, key))
    client.authenticate(PASSWORD)
    assert raw_get(daemon, '/1.0/networks', (crt, key)).status_code == 200
    daemon.client().api.certificates[fingerprint].delete()
    assert raw_get(daemon, '/1.0/networks', (crt, key)).status_code == 403
    assert raw_get(daemon, '/1.0', (crt, key)).json()['metadata']['auth'] == 'untrusted'


def test_certificate_added_by_a_trusted_client_and_bad_certificates(daemon):
    crt, key, fingerprint = make_client_cert(daemon.certdir, 'preloaded')
    with open(crt) as f:
        pem = f.read()
    body = ''.join(pem.strip().splitlines()[1:-1])
    local = daemon.client()
    assert local.api.certificates.post(json={'type': 'client', 'certificate': body,
                                             'name': 'pre'}).status_code == 201
    assert raw_get(daemon, '/1.0/networks', (crt, key)).status_code == 200
    resp = local.api.session.post(local.api._api_endpoint + '/certificates',
                                  json={'type': 'client', 'certificate': body})
    assert resp.status_code == 409
    resp = local.api.session.post(local.api._api_endpoint + '/certificates',
                                  json={'type': 'client', 'certificate': 'bm90IGEgY2VydA=='})
    assert resp.status_code == 400 and 'Invalid certificate' in resp.json()['error']
    local.api.certificates[fingerprint].delete()


def test_https_listener_moves_and_stops_with_core_https_address():
    d = BackendDaemon()
    try:
        client = d.start()
        first, second = free_port(), free_port()
        client.api.patch(json={'config': {'core.https_address': '127.0.0.1:%d' % first}})
        assert ssl.get_server_certificate(('127.0.0.1', first))
        client.api.patch(json={'config': {'core.https_address': '127.0.0.1:%d' % second}})
        assert ssl.get_server_certificate(('127.0.0.1', second))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(('127.0.0.1', first), timeout=5).close()
        # it comes back on the configured address after a restart
        d.stop()
        d.start()
        assert ssl.get_server_certificate(('127.0.0.1', second))
        assert d.client().api.get().json()['metadata']['environment']['addresses'] == \
            ['127.0.0.1:%d' % second]
        # an address that cannot be bound is refused and the listener stays where it was
        with socket.socket() as busy:
            busy.bind(('127.0.0.1', 0))
            busy.listen()
            resp = d.client().api.session.patch(
                d.client().api._api_endpoint, json={'config': {
                    'core.https_address': '127.0.0.1:%d' % busy.getsockname()[1]}})
            assert resp.status_code == 400 and 'Cannot listen' in resp.json()['error']
        assert ssl.get_server_certificate(('127.0.0.1', second))
        assert d.client().api.get().json()['metadata']['config']['core.https_address'] == \
            '127.0.0.1:%d' % second
        d.client().api.patch(json={'config': {'core.https_address': None}})
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(('127.0.0.1', second), timeout=5).close()
    finally:
        d.destroy()


def _lxc(conf, *args):
    env = dict(os.environ, LXD_CONF=conf, HOME=conf)
    return subprocess.run(['lxc'] + list(args), env=env, capture_output=True, text=True,
                          timeout=60)


def test_stock_lxc_remote_add_with_password_and_with_token(daemon):
    for mode in ('password', 'token'):
        conf = tempfile.mkdtemp(prefix='nlxt-lxcconf-', dir='/var/tmp')
        try:
            if mode == 'password':
                proc = _lxc(conf, 'remote', 'add', 'nd', 'https://127.0.0.1:%d' % daemon.https_port,
                            '--accept-certificate', '--password', PASSWORD)
            else:
                token = daemon.client().api.certificates.post(json={
                    'token': True, 'name': 'lxc-token'}).json()['metadata']['metadata']['token']
                proc = _lxc(conf, 'remote', 'add', 'nd', token)
            assert proc.returncode == 0, proc.stderr
            proc = _lxc(conf, 'network', 'list', 'nd:', '--format', 'csv')
            assert proc.returncode == 0, proc.stderr
            assert 'eth0,physical,NO' in proc.stdout
        finally:
            shutil.rmtree(conf, ignore_errors=True)


def test_stock_lxc_config_trust_commands(daemon):
    env = dict(os.environ, LXD_DIR=daemon.data_dir)

    def lxc(*args):
        proc = subprocess.run(['lxc'] + list(args), env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert 'certificate add token' in lxc('config', 'trust', 'add', '--name', 'cli-token')
    assert 'cli-token' in lxc('config', 'trust', 'list-tokens')
    crt, key, fingerprint = make_client_cert(daemon.certdir, 'cli-file')
    lxc('config', 'trust', 'add', crt)
    assert 'client,cli-file.crt,cli-file,%s,' % fingerprint[:12] in \
        lxc('config', 'trust', 'list', '--format', 'csv')
    assert 'fingerprint: %s' % fingerprint in lxc('config', 'trust', 'show', fingerprint[:12])
    assert raw_get(daemon, '/1.0/networks', (crt, key)).status_code == 200
    lxc('config', 'trust', 'remove', fingerprint[:12])
    assert fingerprint[:12] not in lxc('config', 'trust', 'list', '--format', 'csv')
    assert raw_get(daemon, '/1.0/networks', (crt, key)).status_code == 403
