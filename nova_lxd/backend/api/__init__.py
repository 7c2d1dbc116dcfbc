"""The REST API: one module per resource; handlers parse, call one service, shape the reply."""
import json
import logging
import re

from aiohttp import web

from nova_lxd.backend.api import certificates, events, networks, operations, response, server
from nova_lxd.backend.api import images, resources, storage
from nova_lxd.backend.api import instances, profiles
from nova_lxd.backend.api import console, exec as exec_api, files, snapshots
from nova_lxd.backend.api import migration, openapi
from nova_lxd.backend.errors import ApiError

LOG = logging.getLogger(__name__)

# Each module exposes `routes`; a new resource module is added here and nowhere else.
MODULES = [server, operations, events, networks, images, storage, resources, instances,
           profiles, exec_api, files, console, snapshots, certificates, migration, openapi]


@web.middleware
async def lxd_errors(request, handler):
    """Every failure leaves as LXD's error envelope with error_code == HTTP status."""
    try:
        return await handler(request)
    except ApiError as exc:
        return response.error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {404: 'not found', 405: 'method not allowed'}.get(exc.status, exc.reason)
        return response.error(exc.status, reason)
    except json.JSONDecodeError as exc:
        return response.error(400, 'Invalid JSON: %s' % exc)
    except Exception:
        LOG.exception('Unhandled error in %s %s', request.method, request.path)
        return response.error(500, 'Internal server error, see the daemon log')


@web.middleware
async def trust(request, handler):
    """The unix socket is trusted (root or the socket group); other transports must prove it."""
    request['trusted'] = request.app['daemon'].is_trusted(request)
    if not request['trusted'] and (request.method, request.path.rstrip('/') or '/') \
            not in UNTRUSTED_ALLOWED and not _by_secret(request):
        return response.error(403, 'not authorized')
    return await handler(request)


# All an untrusted HTTPS client may do: read the public server info and ask to be trusted.
UNTRUSTED_ALLOWED = {('GET', '/'), ('GET', '/1.0'), ('POST', '/1.0/certificates')}
# ... and, as in LXD, present a secret: a migration peer joining an operation's websockets, or
# a daemon pulling an image (public, or private with a secret); the handlers check the secret.
UNTRUSTED_WITH_SECRET = re.compile(
    r'^/1\.0/(operations/[0-9a-f-]+/websocket|images/[0-9a-f]{64}(/export)?)$')


def _by_secret(request):
    return request.method == 'GET' and bool(request.query.get('secret')) and \
        UNTRUSTED_WITH_SECRET.match(request.path) is not None


def make_app(daemon, modules=None):
    app = web.Application(middlewares=[lxd_errors, trust], client_max_size=0)
    app['daemon'] = daemon
    for module in modules or MODULES:
        app.router.add_routes(module.routes)
    return app
