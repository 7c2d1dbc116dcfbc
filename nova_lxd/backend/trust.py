"""Who may use the HTTPS API: the certificate trust store, the trust password, single-use tokens.

A client is trusted when the sha256 fingerprint of the certificate it presented in the TLS
handshake is in the store (db kind 'certificate'). It gets there by POST /1.0/certificates from
a trusted client, or with the trust password (core.trust_password, scrypt-hashed in the server
config; failures are rate limited per client address), or with a single-use token made by a
trusted client (LXD's `lxc config trust add`).
"""
import base64
import binascii
import ctypes
import json
import logging
import secrets
import ssl
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from nova_lxd.backend import config as server_config
from nova_lxd.backend.errors import BadRequest, Conflict, Forbidden, NotFound

LOG = logging.getLogger(__name__)

KIND = 'certificate'
# Password guessing: at most MAX_FAILURES wrong passwords per address per WINDOW seconds.
MAX_FAILURES = 5
WINDOW = 60.0


def load_certificate(data):
    """A certificate from PEM, base64 DER (as `lxc`/pylxd send it) or DER bytes."""
    if not isinstance(data, (str, bytes)):
        raise BadRequest('The certificate must be a string (PEM or base64 DER)')
    if isinstance(data, str):
        data = data.strip().encode()
    try:
        if data.startswith(b'-----BEGIN'):
            return x509.load_pem_x509_certificate(data)
        try:
            der = base64.b64decode(b''.join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            der = data
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise BadRequest('Invalid certificate: %s' % exc)


def fingerprint_of(cert):
    return cert.fingerprint(hashes.SHA256()).hex()


def fingerprint_of_der(der):
    return fingerprint_of(x509.load_der_x509_certificate(der))


class TrustStore:
    def __init__(self, db, server_fingerprint='', addresses=lambda: []):
        self.db = db
        self.server_fingerprint = server_fingerprint
        self.addresses = addresses
        self._failures = {}          # address -> [monotonic times of recent failures]
        self._tokens = {}            # secret -> {'name', 'on_used', 'expires_at'}
        self._lock = threading.Lock()

    # -- the store --------------------------------------------------------------------------
    def is_trusted_der(self, der):
        return bool(der) and self.db.get(KIND, fingerprint_of_der(der)) is not None

    def list(self):
        return self.db.list(KIND)

    def get(self, fingerprint):
        """By full fingerprint or a unique prefix of it, as `lxc config trust` accepts."""
        doc = self.db.get(KIND, fingerprint)
        if doc is not None:
            return doc
        matches = [d for d in self.db.list(KIND) if d['fingerprint'].startswith(fingerprint)]
        if len(matches) == 1 and fingerprint:
            return matches[0]
        if len(matches) > 1:
            raise BadRequest('Certificate fingerprint %r is ambiguous' % fingerprint)
        raise NotFound('Certificate %r not found' % fingerprint)

    def add(self, cert, name='', cert_type='client', restricted=False, projects=None):
        if cert_type not in ('client', 'metrics'):
            raise BadRequest('Invalid certificate type %r (client or metrics)' % cert_type)
        fingerprint = fingerprint_of(cert)
        if fingerprint == self.server_fingerprint:
            raise BadRequest('The server\'s own certificate cannot be added as a client')
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        doc = {'name': name or _common_name(cert), 'type': cert_type, 'certificate': pem,
               'fingerprint': fingerprint, 'restricted': bool(restricted),
               'projects': list(projects or [])}
        if not self.db.insert(KIND, fingerprint, doc):
            raise Conflict('Certificate %s is already trusted' % fingerprint)
        return doc

    def update(self, fingerprint, values):
        doc = self.get(fingerprint)
        for key in ('name', 'restricted', 'projects', 'type'):
            if key in values:
                doc[key] = values[key]
        if doc['type'] not in ('client', 'metrics'):
            raise BadRequest('Invalid certificate type %r' % doc['type'])
        self.db.put(KIND, doc['fingerprint'], doc)
        return doc

    def delete(self, fingerprint):
        doc = self.get(fingerprint)
        self.db.delete(KIND, doc['fingerprint'])

    # -- proofs for an untrusted client ---------------------------------------------------
    def check_password(self, password, stored_hash, address):
        """True if right; Forbidden once an address has failed too often recently."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(address, []) if now - t < WINDOW]
            self._failures[address] = recent
            if len(recent) >= MAX_FAILURES:
                raise Forbidden('Too many failed trust password attempts; try again later')
        if stored_hash and server_config.check_password(password, stored_hash):
            with self._lock:
                self._failures.pop(address, None)
            return True
        with self._lock:
            self._failures.setdefault(address, []).append(now)
        return False

    def new_token(self, name, on_used=None, expires_at=None):
        """A new single-use secret; on_used() is called when a client redeems it."""
        secret = secrets.token_hex(32)
        with self._lock:
            self._tokens[secret] = {'name': name, 'on_used': on_used, 'expires_at': expires_at}
        return secret

    def encode_token(self, name, secret):
        """The string `lxc remote add NAME TOKEN` and pylxd take (base64 of compact JSON)."""
        token = {'client_name': name, 'fingerprint': self.server_fingerprint,
                 'addresses': self.addresses(), 'secret': secret,
                 'expires_at': '0001-01-01T00:00:00Z'}
        return base64.b64encode(json.dumps(token, separators=(',', ':')).encode()).decode()

    def take_token(self, value):
        """Consume a token (its secret or the whole base64 token); its entry, or None."""
        secret = _token_secret(value)
        with self._lock:
            entry = self._tokens.pop(secret, None) if secret else None
        if entry and entry['expires_at'] and entry['expires_at'] < time.time():
            return None
        return entry

    def drop_token(self, secret):
        with self._lock:
            self._tokens.pop(secret, None)

    def tokens(self):
        with self._lock:
            return dict(self._tokens)


def _token_secret(value):
    if not value or not isinstance(value, str):
        return None
    try:
        decoded = json.loads(base64.b64decode(value.strip(), validate=True))
        if isinstance(decoded, dict) and 'secret' in decoded:
            return decoded['secret']
    except (binascii.Error, ValueError):
        pass
    return value


def _common_name(cert):
    names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return names[0].value if names else ''


# -- TLS ---------------------------------------------------------------------------------------

def server_ssl_context(cert_path, key_path, trusted_pems=()):
    """TLS for the API: the daemon's certificate; a client certificate requested, not required.

    Clients use self-signed certificates that no CA vouches for, and an untrusted one must still
    complete the handshake (to POST /1.0/certificates with a password, as `lxc remote add`
    does). OpenSSL would reject it, so the context's verify callback is replaced (through
    ctypes, the ssl module has no API for it) by one that accepts any certificate: trust is
    decided per request by fingerprint (Daemon.is_trusted). If that is impossible, the trusted
    certificates are loaded as the only roots, so trusted clients still work.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    if not _accept_any_client_certificate(ctx):
        LOG.warning('Cannot relax client certificate checks; only already trusted client '
                    'certificates can connect')
        for pem in trusted_pems:
            ctx.load_verify_locations(cadata=pem)
    return ctx


_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_ACCEPT_ANY = _VERIFY_CALLBACK(lambda preverify_ok, store: 1)   # kept alive for the process
SSL_VERIFY_PEER = 1


def _accept_any_client_certificate(ctx):
    try:
        import _ssl
        libssl = ctypes.CDLL(_ssl.__file__)
        set_verify = libssl.SSL_CTX_set_verify
        set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
        set_verify.restype = None
        get_mode = libssl.SSL_CTX_get_verify_mode
        get_mode.argtypes = [ctypes.c_void_p]
        get_mode.restype = ctypes.c_int
        # CPython's PySSLContext starts with PyObject_HEAD followed by the SSL_CTX pointer
        ssl_ctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if not ssl_ctx or get_mode(ssl_ctx) != SSL_VERIFY_PEER:
            return False          # not the layout we expect: touch nothing
        set_verify(ssl_ctx, SSL_VERIFY_PEER, _ACCEPT_ANY)
        return True
    except (OSError, AttributeError, ImportError):
        return False


def peer_certificate_der(request):
    """The DER certificate the client presented on this request's TLS connection, or None."""
    transport = request.transport
    ssl_object = transport.get_extra_info('ssl_object') if transport else None
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)
