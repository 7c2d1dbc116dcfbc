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
    cfg.StrOpt('pool', default='default',
               help='Storage pool that holds instances\' root disks and whose space is reported '
                    'to placement as DISK_GB.'),
    cfg.IntOpt('soft_reboot_timeout', default=60, min=1,
               help='Seconds a soft reboot waits for a clean shutdown before forcing it.'),
    cfg.IntOpt('console_log_max_bytes', default=100 * 1024, min=1024,
               help='get_console_output returns at most the last this many bytes.'),
    cfg.StrOpt('config_drive_path', default='/config-drive',
               help='Where the config drive appears (read-only) inside a container; cloud-init\'s '
                    'ConfigDrive datasource reads it there.'),
    cfg.StrOpt('rescue_path', default='/mnt/rescue',
               help='Where a rescued instance\'s root filesystem appears (read-write) inside '
                    'its rescue container (nova_lxd/virt/rescue.py).'),
    cfg.BoolOpt('listen_events', default=True,
                help='Follow the backend\'s lifecycle events so that containers stopped or '
                     'started behind Nova\'s back are reported to Nova at once (after the stream '
                     'was lost, what changed meanwhile is reported when it is back).'),
    # moves between hosts (nova_lxd/virt/migration.py)
    cfg.DictOpt('migration_endpoints', default={},
                help='host:https-URL of every compute host\'s backend, for cold migration and '
                     'resize to another host (the same map on every host). Backends pull '
                     'instances from each other over HTTPS: each backend must trust '
                     '[lxd] client_cert, and the source backend listens at its URL.'),
    cfg.DictOpt('migration_server_certs', default={},
                help='host:PEM path of each backend\'s server certificate, pinned when this '
                     'host talks to that backend for a move. Unset hosts are verified against '
                     'the system CA bundle.'),
    cfg.BoolOpt('allow_stateless_live_migration', default=False,
                help='Live migration needs CRIU on both backends. When it is not available, '
                     'True lets live-migration requests move the instance statelessly: it is '
                     'stopped, transferred and started again on the destination, so its '
                     'processes RESTART (connections drop, memory is lost). False (default) '
                     'refuses such requests in the pre-check and leaves the instance running.'),
]


def register_opts(conf):
    conf.register_group(lxd_group)
    conf.register_opts(lxd_opts, group=lxd_group)


def list_opts():
    # oslo-config-generator and sphinx's show-options want [(group, opts)]
    return [(lxd_group, lxd_opts)]


CONF = cfg.CONF
register_opts(CONF)
