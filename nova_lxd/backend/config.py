"""The daemon's configuration: its own file (paths, socket group) and PUT /1.0's server config."""
import configparser
import hashlib
import hmac
import ipaddress
import os
import secrets

from nova_lxd.backend.errors import BadRequest

DEFAULT_DATA_DIR = '/var/lib/nova-lxd'
DEFAULT_CONFIG_FILE = '/etc/nova-lxd/backend.conf'
# Where the DNS of managed networks sends the names it does not answer itself: the host's
# resolvers, as LXD's bridges do (dnsmasq re-reads the file when it changes).
DEFAULT_DNS_RESOLV_FILE = '/etc/resolv.conf'

# Seconds the API server keeps a connection that is idle between requests. aiohttp's default is
# an hour, and each idle connection holds its parser, buffers and last request; pylxd leaves
# dozens open (a pool per URL) and reconnects at its next request when one was closed.
KEEPALIVE_TIMEOUT = 30.0

# The daemon re-executes itself when quiet with this many MB more than it had when it began
# serving (0: never): a burst's fragmented heap goes back only with the process image
# (recycle.py). Ordinary work stays well under it: lazily imported modules take a few MB.
RECYCLE_GROWTH_MB = 16


class DaemonConfig:
    """Settings read once at start: `[backend]` section of backend.conf, overridden by flags."""

    def __init__(self, data_dir=DEFAULT_DATA_DIR, socket_group='', socket_mode=0o660,
                 log_file='', debug=False, storage_driver='', bridge_subnet='',
                 keepalive_timeout=KEEPALIVE_TIMEOUT, recycle_growth_mb=RECYCLE_GROWTH_MB,
                 cgroup_favordynmods=True, dns_resolv_file=DEFAULT_DNS_RESOLV_FILE):
        self.data_dir = os.path.abspath(data_dir)
        self.socket_group = socket_group
        self.socket_mode = socket_mode
        self.log_file = log_file
        self.debug = debug
        # '' chooses the fastest driver that works on this host
        self.storage_driver = storage_driver
        self.bridge_subnet = bridge_subnet
        self.keepalive_timeout = keepalive_timeout
        self.recycle_growth_mb = recycle_growth_mb
        self.cgroup_favordynmods = cgroup_favordynmods
        # '' forwards nothing: containers resolve only their networks' own names
        self.dns_resolv_file = dns_resolv_file and os.path.abspath(dns_resolv_file)

    @classmethod
    def load(cls, path, **overrides):
        values = {}
        if path and os.path.exists(path):
            parser = configparser.ConfigParser()
            parser.read(path)
            if parser.has_section('backend'):
                section = parser['backend']
                for key in ('data_dir', 'socket_group', 'log_file', 'storage_driver',
                            'bridge_subnet', 'dns_resolv_file'):
                    if key in section:
                        values[key] = section[key]
                if 'socket_mode' in section:
                    values['socket_mode'] = int(section['socket_mode'], 8)
                for key in ('debug', 'cgroup_favordynmods'):
                    if key in section:
                        values[key] = section.getboolean(key)
                if 'keepalive_timeout' in section:
                    values['keepalive_timeout'] = section.getfloat('keepalive_timeout')
                if 'recycle_growth_mb' in section:
                    values['recycle_growth_mb'] = section.getfloat('recycle_growth_mb')
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        directory = os.path.dirname(config.dns_resolv_file)
        if config.dns_resolv_file and not os.path.isdir(directory):
            # dnsmasq watches the file's directory: without it no network's DNS would start
            raise ValueError('dns_resolv_file %s: there is no directory %s'
                             % (config.dns_resolv_file, directory))
        return config

    def path(self, *parts):
        return os.path.join(self.data_dir, *parts)

    @property
    def socket_path(self):
        return self.path('unix.socket')


# -- server config (GET/PUT/PATCH /1.0) ------------------------------------------------------------

def _address(value):
    host, _, port = value.rpartition(':')
    host = host.strip('[]') or '0.0.0.0'
    try:
        ipaddress.ip_address(host)
        if not 0 < int(port) < 65536:
            raise ValueError()
    except ValueError:
        raise BadRequest('Invalid address %r: expected IP:PORT' % value)
    return value


def _positive_int(value):
    if not str(value).isdigit():
        raise BadRequest('Invalid value %r: expected a whole number' % value)
    return str(value)


def _compression(value):
    if value not in ('none', 'gzip', 'xz', 'zstd', 'bzip2'):
        raise BadRequest('Invalid compression algorithm %r' % value)
    return value


SERVER_KEYS = {
    'core.https_address': _address,
    'core.trust_password': str,          # stored hashed, see hash_password
    'images.remote_cache_expiry': _positive_int,
    'images.auto_update_interval': _positive_int,
    'images.compression_algorithm': _compression,
    'user.': str,                         # free-form user keys, as in LXD
}


def validate_server_config(config):
    if not isinstance(config, dict):
        raise BadRequest('config must be an object')
    clean = {}
    for key, value in config.items():
        if value is None or value == '':
            continue
        if not isinstance(value, (str, int, bool)):
            raise BadRequest('Invalid value for server config key %r' % key)
        check = SERVER_KEYS.get(key) or (SERVER_KEYS['user.'] if key.startswith('user.') else None)
        if check is None:
            raise BadRequest('Unknown server config key %r' % key)
        clean[key] = check(str(value))
    return clean


def hash_password(password):
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=1 << 14, r=8, p=1, dklen=32)
    return salt.hex() + digest.hex()


def check_password(password, stored):
    if not stored or len(stored) != 96:
        return False
    salt = bytes.fromhex(stored[:32])
    digest = hashlib.scrypt(password.encode(), salt=salt, n=1 << 14, r=8, p=1, dklen=32)
    return hmac.compare_digest(digest.hex(), stored[32:])
