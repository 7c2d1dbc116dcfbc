"""The [lxd] options of nova.conf, registered once."""
from oslo_config import cfg

DEFAULT_BUNDLED_SOCKET = '/var/lib/nova-lxd/unix.socket'

lxd_group = cfg.OptGroup('lxd', title='LXD options',
                         help='How the nova-lxd compute driver reaches its container backend.')

lxd_opts = [
    cfg.StrOpt('endpoint',
               help='The LXD API endpoint: a unix socket path or an https:// URL. Unset means '
                    'the bundled backend on this host (%s).' % DEFAULT_BUNDLED_SOCKET),
    cfg.StrOpt('client_cert',
               help='Client certificate (PEM) presented to an https:// endpoint; the endpoint '
                    'must trust it.'),
    cfg.StrOpt('client_key', help='Private key of client_cert.'),
    cfg.StrOpt('server_cert',
               help='Certificate (PEM) of an https:// endpoint, pinned for verification. Unset '
                    'verifies against the system CA bundle.'),
    cfg.IntOpt('timeout', default=300, min=1,
               help='Seconds to wait for one backend operation before giving up.'),
]


def register_opts(conf):
    conf.register_group(lxd_group)
    conf.register_opts(lxd_opts, group=lxd_group)


def list_opts():
    return {lxd_group: lxd_opts}


CONF = cfg.CONF
register_opts(CONF)
