"""The driver's pylxd client: the only way the driver reaches its backend.

The backend may restart under a running nova-compute (an upgrade, a crash). The client then
reconnects by itself (pylxd's connection pool opens a new connection for a dead one); what this
module adds is waiting, for at most RECONNECT_TIMEOUT seconds, while the backend is down:
- a request that never reached the backend (its socket absent or refusing) is sent again;
- a request lost on the way (the connection died after it was sent) is sent again only if
  repeating it cannot do harm: GET/HEAD (reads, and waits on operations), DELETE (a second
  one finds nothing and says 404) and PUT of a record (a second one leaves what the first
  did; not PUT .../state, an action: a second start of a running instance is an error);
- anything else, and a backend that does not come back in time, raises BackendUnavailable (a
  HypervisorUnavailable naming the endpoint). Callers whose action is idempotent by its effect
  (stop a stopped instance, delete a deleted one) re-run it with until_done(); the others
  (create, start, rename, snapshot, publish: the helpers below) give until_done a check of the
  state that tells whether the lost attempt had its effect after all, so none runs twice.
"""
import time

import pylxd
from pylxd.models import instance as lxd_instance
from pylxd import exceptions as lxd_exceptions
import requests
from urllib3 import exceptions as urllib3_exceptions

from oslo_log import log as logging

from nova import exception
from nova.i18n import _

from nova_lxd.virt import conf

CONF = conf.CONF
LOG = logging.getLogger(__name__)
RECONNECT_TIMEOUT = 60.0      # seconds a restarting backend is waited for
RETRY_INTERVAL = 0.5
RESENDABLE = frozenset(['GET', 'HEAD', 'OPTIONS', 'DELETE'])


class BackendUnavailable(exception.HypervisorUnavailable):
    msg_fmt = _('The LXD API at %(host)s is unavailable: %(reason)s')


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
    deadline = time.monotonic() + RECONNECT_TIMEOUT
    while True:
        try:
            client = pylxd.Client(endpoint=target, **kwargs)
            break
        except (lxd_exceptions.ClientConnectionFailed, requests.RequestException) as exc:
            # (pylxd takes a socket path that does not exist yet for a URL without a scheme)
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    host=target, reason=_('cannot reach it (%s); start nova-lxd-backend or set '
                                          '[lxd] endpoint') % exc)
            LOG.warning('The LXD API at %s does not answer (%s); retrying', target, exc)
            time.sleep(RETRY_INTERVAL)
    if not client.trusted:
        raise BackendUnavailable(
            host=target, reason=_('it does not trust this client; add [lxd] client_cert to its '
                                  'trust store'))
    client.api.session.request = _Reconnecting(client.api.session.request, target)
    return client


def _never_sent(exc):
    """Whether a connection error happened before the request reached the backend."""
    seen, todo = set(), [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, (FileNotFoundError, ConnectionRefusedError,
                            urllib3_exceptions.NewConnectionError, requests.ConnectTimeout)):
            return True
        todo += [a for a in getattr(err, 'args', ()) if isinstance(a, BaseException)]
        todo += [getattr(err, 'reason', None), err.__cause__, err.__context__]
    return False


def _resendable(method, url):
    method = method.upper()
    return method in RESENDABLE or (method == 'PUT' and not url.rstrip('/').endswith('/state'))


class _Reconnecting:
    """Session.request, waiting out a restarting backend (see the module docstring)."""

    def __init__(self, request, target):
        self._request = request
        self._target = target

    def __call__(self, method, url, *args, **kwargs):
        deadline = None
        while True:
            try:
                return self._request(method, url, *args, **kwargs)
            except requests.ConnectionError as exc:
                if deadline is None:
                    deadline = time.monotonic() + RECONNECT_TIMEOUT
                    LOG.warning('Lost the LXD API at %s (%s %s: %s)', self._target, method,
                                url, exc)
                if not _resendable(method, url) and not _never_sent(exc):
                    raise BackendUnavailable(host=self._target, reason=_(
                        'the connection broke during %(method)s %(url)s (%(error)s)') % {
                        'method': method, 'url': url, 'error': exc}) from exc
                if time.monotonic() >= deadline:
                    raise BackendUnavailable(host=self._target, reason=_(
                        'no answer for %(seconds)ds (%(error)s)') % {
                        'seconds': RECONNECT_TIMEOUT, 'error': exc}) from exc
                time.sleep(RETRY_INTERVAL)


def _lost_operation(exc):
    """A 404 for an operation: the backend restarted and forgot it (it was interrupted)."""
    url = getattr(getattr(exc, 'response', None), 'url', '') or ''
    return isinstance(exc, lxd_exceptions.NotFound) and '/operations/' in url


def _busy(exc):
    """The instance is busy with another operation, free in a moment.

    (LXD finishing its own stop after a failed start, or a clean stop still running.)
    """
    return 'busy' in str(exc).lower()


def until_done(what, action, done=None):
    """Run action (`what` names it in the log) to its end, through restarts and busy instances.

    action must be idempotent by its effect and check the state before acting (sync, then stop
    if still running): a request lost with the backend, an operation the restarted backend no
    longer knows, or a busy instance makes it run again (for at most RECONNECT_TIMEOUT).
    For an action that is not idempotent (a create), done checks the state before each repeat:
    it returns the action's result when the lost attempt took effect after all, else None.
    """
    deadline = time.monotonic() + RECONNECT_TIMEOUT
    repeat = False
    while True:
        if repeat and done is not None:
            result = done()
            if result is not None:
                LOG.info('%s: done before the backend restarted', what)
                return result
        repeat = True
        try:
            return action()
        except lxd_exceptions.LXDAPIException as exc:
            if not (_lost_operation(exc) or _busy(exc)) or time.monotonic() >= deadline:
                raise
            LOG.debug('%s: %s; running it again', what, exc)
        except BackendUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            LOG.warning("The backend restarted during %s (%s): running it again", what, exc)
        time.sleep(RETRY_INTERVAL)


def run(client, response):
    """Wait for the operation an async request started; raise its error if it failed.

    One request (GET .../wait), where pylxd's wait=True makes two (GET the operation, then
    .../wait) and reads the instance again afterwards.
    """
    operation = response.json()['operation']
    result = client.api.operations[operation.rsplit('/', 1)[-1]].wait.get()
    metadata = result.json().get('metadata') or {}
    code = metadata.get('status_code')
    if metadata.get('status') == 'Failure' or (code is not None and not 200 <= code < 300):
        raise lxd_exceptions.LXDAPIException(result)
    return metadata


def _found(lookup, *args):
    """lookup(*args), or None when the backend has no such thing (404)."""
    try:
        return lookup(*args)
    except lxd_exceptions.NotFound:
        return None


def _instance_json(client, name):
    """The backend's record of an instance, None when it has none."""
    found = _found(client.api.instances[name].get)
    return found.json()['metadata'] if found is not None else None


def create_instance(client, definition):
    """Create an instance and wait for it: the pylxd Instance, not read back until used.

    A create lost with a restarting backend is done if the instance is there with the config
    asked for; one of that name with another config is not ours to take.
    """
    name = definition['name']
    made = lxd_instance.Instance(client, name=name)

    def create():
        run(client, client.api.instances.post(json=definition))
        return made

    def created():
        found = _instance_json(client, name)
        if found is None:
            return None
        wanted = definition.get('config') or {}
        if any(found['config'].get(key) != value for key, value in wanted.items()):
            raise exception.InstanceExists(name=name)
        return made
    return until_done('creating %s' % name, create, done=created)


def start_instance(container):
    """Start an instance and wait until it runs (its status is not read back)."""
    def start():
        run(container.client, container.api.state.put(
            json={'action': 'start', 'timeout': 30, 'force': True}))
        return True

    def running():
        found = _instance_json(container.client, container.name)
        return True if found and found['status'] == 'Running' else None
    until_done('starting %s' % container.name, start, done=running)


def rename_instance(container, new_name):
    """Rename an instance (container.name follows); done if only the new name is there."""
    client = container.client

    def rename():
        run(client, client.api.instances[container.name].post(json={'name': new_name}))
        return True

    def renamed():
        gone = _instance_json(client, container.name) is None
        return True if gone and _instance_json(client, new_name) is not None else None
    until_done('renaming %s to %s' % (container.name, new_name), rename, done=renamed)
    container.name = new_name


def create_snapshot(container, name):
    """Take a stateless snapshot of the instance; done if the snapshot is there."""
    def take():
        return container.snapshots.create(name, stateful=False, wait=True)

    return until_done('snapshot %s of %s' % (name, container.name), take,
                      done=lambda: _found(container.snapshots.get, name))


def publish_snapshot(snap, alias):
    """Publish a snapshot as a private image under alias (a unique name).

    The alias tells a publish lost with a restarting backend that took effect from one that
    did not.
    """
    client = snap.client

    def publish():
        metadata = run(client, client.api.images.post(json={
            'public': False, 'aliases': [{'name': alias}],
            'source': {'type': 'snapshot', 'name': '%s/%s' % (snap.instance.name, snap.name)}}))
        return client.images.get(metadata['metadata']['fingerprint'])

    return until_done('publishing %s/%s' % (snap.instance.name, snap.name), publish,
                      done=lambda: _found(client.images.get_by_alias, alias))


def delete_instance(container):
    """Delete the instance; one already gone (our earlier request did it) counts as deleted."""
    try:
        container.delete(wait=True)
    except lxd_exceptions.NotFound as exc:
        if _lost_operation(exc):
            raise
        LOG.debug('Instance %s was already deleted', container.name)
