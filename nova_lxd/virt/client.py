"""The driver's pylxd client: the only way the driver reaches its backend."""
import pylxd
from pylxd import exceptions as lxd_exceptions

from nova import exception
from nova.i18n import _

from nova_lxd.virt import conf

CONF = conf.CONF


def endpoint():
    return CONF.lxd.endpoint or conf.DEFAULT_BUNDLED_SOCKET


def connect():
    """A pylxd client for the configured endpoint, or a Nova error that says what to fix."""
    target = endpoint()
    kwargs = {'timeout': CONF.lxd.timeout}
    if target.startswith('https://'):
        if CONF.lxd.client_cert:
            kwargs['cert'] = (CONF.lxd.client_cert, CONF.lxd.client_key)
        kwargs['verify'] = CONF.lxd.server_cert or True
    try:
        client = pylxd.Client(endpoint=target, **kwargs)
    except lxd_exceptions.ClientConnectionFailed as exc:
        raise exception.HypervisorUnavailable(
            host=target, reason=_('cannot reach the LXD API at %(target)s (%(error)s); start '
                                  'nova-lxd-backend or set [lxd] endpoint') %
            {'target': target, 'error': exc})
    if not client.trusted:
        raise exception.HypervisorUnavailable(
            host=target, reason=_('the LXD API at %s does not trust this client; add '
                                  '[lxd] client_cert to its trust store') % target)
    return client
