"""GET /1.0/openapi.json: an OpenAPI 3 description of the API this daemon implements.

The paths and methods are read from the live aiohttp router on every request, so the document
cannot drift from the routes; only the request bodies of the main writes are described by hand
(REQUEST_BODIES), keyed by (method, path) with /1.0/containers folded onto /1.0/instances.
"""
import re

from aiohttp import web


routes = web.RouteTableDef()

_STR = {'type': 'string'}
_BOOL = {'type': 'boolean'}
_INT = {'type': 'integer'}
_STR_MAP = {'type': 'object', 'additionalProperties': {'type': 'string'}}
_DEVICES = {'type': 'object', 'additionalProperties': _STR_MAP}
_STRINGS = {'type': 'array', 'items': _STR}
_NAME = {'type': 'object', 'required': ['name'], 'properties': {'name': _STR}}

_INSTANCE_PUT = {
    'type': 'object',
    'properties': {
        'architecture': _STR, 'config': _STR_MAP, 'devices': _DEVICES, 'ephemeral': _BOOL,
        'profiles': _STRINGS, 'description': _STR, 'restore': _STR, 'stateful': _BOOL,
    },
}
_INSTANCE_SOURCE = {
    'type': 'object',
    'required': ['type'],
    'properties': {
        'type': {'type': 'string', 'enum': ['none', 'image', 'copy', 'migration']},
        'fingerprint': _STR, 'alias': _STR, 'source': _STR, 'server': _STR, 'protocol': _STR,
        'mode': _STR, 'operation': _STR, 'secrets': _STR_MAP, 'instance_only': _BOOL,
        'properties': _STR_MAP,
    },
}
_INSTANCE_POST = {
    'type': 'object',
    'required': ['name', 'source'],
    'properties': dict(_INSTANCE_PUT['properties'], name=_STR, type=_STR,
                       source=_INSTANCE_SOURCE, instance_type=_STR),
}
_PROFILE = {'type': 'object',
            'properties': {'config': _STR_MAP, 'devices': _DEVICES, 'description': _STR}}
_NETWORK = {'type': 'object', 'properties': {'config': _STR_MAP, 'description': _STR}}
_POOL = {'type': 'object', 'properties': {'config': _STR_MAP, 'description': _STR}}
_IMAGE_PUT = {'type': 'object',
              'properties': {'auto_update': _BOOL, 'properties': _STR_MAP, 'public': _BOOL,
                             'expires_at': _STR, 'profiles': _STRINGS}}
_ALIAS = {'type': 'object', 'properties': {'target': _STR, 'description': _STR}}
_CERTIFICATE_PUT = {'type': 'object',
                    'properties': {'name': _STR, 'type': _STR, 'restricted': _BOOL,
                                   'projects': _STRINGS, 'certificate': _STR}}

REQUEST_BODIES = {
    ('PUT', '/1.0'): {'type': 'object', 'required': ['config'], 'properties': {'config': _STR_MAP}},
    ('PATCH', '/1.0'): {'type': 'object', 'properties': {'config': _STR_MAP}},
    ('POST', '/1.0/instances'): _INSTANCE_POST,
    ('PUT', '/1.0/instances/{name}'): _INSTANCE_PUT,
    ('PATCH', '/1.0/instances/{name}'): _INSTANCE_PUT,
    ('POST', '/1.0/instances/{name}'): {
        'type': 'object',
        'properties': {'name': _STR, 'migration': _BOOL, 'live': _BOOL, 'instance_only': _BOOL,
                       'pool': _STR, 'target': {'type': 'object'}}},
    ('PUT', '/1.0/instances/{name}/state'): {
        'type': 'object', 'required': ['action'],
        'properties': {'action': {'type': 'string',
                                  'enum': ['start', 'stop', 'restart', 'freeze', 'unfreeze']},
                       'timeout': _INT, 'force': _BOOL, 'stateful': _BOOL}},
    ('POST', '/1.0/instances/{name}/exec'): {
        'type': 'object', 'required': ['command'],
        'properties': {'command': _STRINGS, 'environment': _STR_MAP, 'wait-for-websocket': _BOOL,
                       'interactive': _BOOL, 'record-output': _BOOL, 'width': _INT,
                       'height': _INT, 'user': _INT, 'group': _INT, 'cwd': _STR}},
    ('POST', '/1.0/instances/{name}/console'): {
        'type': 'object', 'properties': {'width': _INT, 'height': _INT, 'type': _STR}},
    ('POST', '/1.0/instances/{name}/snapshots'): {
        'type': 'object',
        'properties': {'name': _STR, 'stateful': _BOOL, 'expires_at': _STR}},
    ('POST', '/1.0/instances/{name}/snapshots/{snap}'): {
        'type': 'object', 'properties': {'name': _STR, 'migration': _BOOL, 'live': _BOOL}},
    ('PUT', '/1.0/instances/{name}/snapshots/{snap}'): {
        'type': 'object', 'properties': {'expires_at': _STR}},
    ('PATCH', '/1.0/instances/{name}/snapshots/{snap}'): {
        'type': 'object', 'properties': {'expires_at': _STR}},
    ('POST', '/1.0/instances/{name}/backups'): {
        'type': 'object', 'properties': {'name': _STR, 'instance_only': _BOOL}},
    ('POST', '/1.0/profiles'): dict(_PROFILE, required=['name'],
                                    properties=dict(_PROFILE['properties'], name=_STR)),
    ('PUT', '/1.0/profiles/{name}'): _PROFILE,
    ('PATCH', '/1.0/profiles/{name}'): _PROFILE,
    ('POST', '/1.0/profiles/{name}'): _NAME,
    ('POST', '/1.0/networks'): dict(_NETWORK, required=['name'],
                                    properties=dict(_NETWORK['properties'], name=_STR, type=_STR)),
    ('PUT', '/1.0/networks/{name}'): _NETWORK,
    ('PATCH', '/1.0/networks/{name}'): _NETWORK,
    ('POST', '/1.0/networks/{name}'): _NAME,
    ('POST', '/1.0/storage-pools'): dict(_POOL, required=['name', 'driver'],
                                         properties=dict(_POOL['properties'], name=_STR,
                                                         driver=_STR)),
    ('PUT', '/1.0/storage-pools/{pool}'): _POOL,
    ('PATCH', '/1.0/storage-pools/{pool}'): _POOL,
    ('POST', '/1.0/storage-pools/{pool}/volumes/{type}'): {
        'type': 'object', 'required': ['name'],
        'properties': {'name': _STR, 'type': _STR, 'config': _STR_MAP, 'description': _STR}},
    ('PUT', '/1.0/storage-pools/{pool}/volumes/{type}/{name}'): _POOL,
    ('PATCH', '/1.0/storage-pools/{pool}/volumes/{type}/{name}'): _POOL,
    ('POST', '/1.0/storage-pools/{pool}/volumes/{type}/{name}'): {
        'type': 'object', 'properties': {'name': _STR, 'pool': _STR, 'migration': _BOOL}},
    ('POST', '/1.0/images'): {
        'type': 'object',
        'properties': dict(_IMAGE_PUT['properties'], filename=_STR, compression_algorithm=_STR,
                           aliases={'type': 'array', 'items': _ALIAS},
                           source={'type': 'object', 'properties': {
                               'type': _STR, 'name': _STR, 'fingerprint': _STR, 'alias': _STR,
                               'server': _STR, 'protocol': _STR, 'secret': _STR,
                               'certificate': _STR, 'url': _STR, 'mode': _STR}})},
    ('PUT', '/1.0/images/{fingerprint}'): _IMAGE_PUT,
    ('PATCH', '/1.0/images/{fingerprint}'): _IMAGE_PUT,
    ('POST', '/1.0/images/aliases'): dict(_ALIAS, required=['name', 'target'],
                                          properties=dict(_ALIAS['properties'], name=_STR)),
    ('PUT', '/1.0/images/aliases/{name}'): _ALIAS,
    ('PATCH', '/1.0/images/aliases/{name}'): _ALIAS,
    ('POST', '/1.0/images/aliases/{name}'): _NAME,
    ('POST', '/1.0/certificates'): {
        'type': 'object',
        'properties': dict(_CERTIFICATE_PUT['properties'], password=_STR, token=_BOOL,
                           trust_token=_STR)},
    ('PUT', '/1.0/certificates/{fingerprint}'): _CERTIFICATE_PUT,
    ('PATCH', '/1.0/certificates/{fingerprint}'): _CERTIFICATE_PUT,
}

# Query parameters clients really send (pylxd, `lxc`); others are ignored by the daemon.
QUERY_PARAMETERS = {
    ('GET', '/1.0/instances'): [('recursion', _INT), ('filter', _STR), ('all-projects', _BOOL)],
    ('GET', '/1.0/images'): [('recursion', _INT), ('filter', _STR)],
    ('GET', '/1.0/profiles'): [('recursion', _INT)],
    ('GET', '/1.0/networks'): [('recursion', _INT)],
    ('GET', '/1.0/storage-pools'): [('recursion', _INT)],
    ('GET', '/1.0/certificates'): [('recursion', _INT)],
    ('GET', '/1.0/operations'): [('recursion', _INT)],
    ('GET', '/1.0/instances/{name}/snapshots'): [('recursion', _INT)],
    ('GET', '/1.0/operations/{id}/wait'): [('timeout', _INT)],
    ('GET', '/1.0/instances/{name}/files'): [('path', _STR)],
    ('POST', '/1.0/instances/{name}/files'): [('path', _STR)],
    ('DELETE', '/1.0/instances/{name}/files'): [('path', _STR)],
}

_ENVELOPE = {'type': 'object', 'required': ['type'],
             'properties': {'type': {'type': 'string', 'enum': ['sync', 'async']},
                            'metadata': {}}}
_ERROR = {'type': 'object', 'required': ['type', 'error', 'error_code'],
          'properties': {'type': {'type': 'string', 'enum': ['error']},
                         'error': _STR, 'error_code': _INT}}
_PARAM = re.compile(r'\{([^}/]+)\}')


def canonical(path):
    """The key REQUEST_BODIES uses: the legacy /1.0/containers alias folded onto /1.0/instances."""
    return re.sub(r'^/1\.0/containers(?=/|$)', '/1.0/instances', path)


def _operation(method, path, handler):
    doc = (handler.__doc__ or '').strip().splitlines()
    op = {
        'operationId': '%s_%s' % (method.lower(), re.sub(r'[^a-z0-9]+', '_', path.lower())
                                  .strip('_') or 'root'),
        'summary': doc[0] if doc else handler.__name__.replace('_', ' '),
        'responses': {
            '200': {'description': 'sync or async LXD response',
                    'content': {'application/json': {'schema': _ENVELOPE}}},
            'default': {'description': 'LXD error',
                        'content': {'application/json': {'schema': _ERROR}}},
        },
    }
    params = [{'name': name, 'in': 'path', 'required': True, 'schema': _STR}
              for name in _PARAM.findall(path)]
    params += [{'name': name, 'in': 'query', 'required': False, 'schema': schema}
               for name, schema in QUERY_PARAMETERS.get((method, canonical(path)), [])]
    if params:
        op['parameters'] = params
    body = REQUEST_BODIES.get((method, canonical(path)))
    if body is not None:
        op['requestBody'] = {'required': True,
                             'content': {'application/json': {'schema': body}}}
    return op


def document(router):
    """The OpenAPI document for every (method, path) the router serves (HEAD is implied by GET)."""
    paths = {}
    for route in router.routes():
        path = route.resource.canonical if route.resource is not None else None
        if path is None or route.method in ('HEAD', '*'):
            continue
        paths.setdefault(path, {})[route.method.lower()] = _operation(route.method, path,
                                                                      route.handler)
    return {
        'openapi': '3.0.3',
        'info': {'title': 'nova-lxd backend (LXD REST API 1.0 subset)', 'version': '1.0'},
        'paths': dict(sorted(paths.items())),
    }


@routes.get('/1.0/openapi.json')
async def get_openapi(request):
    """The OpenAPI description of this daemon's API, read from its router."""
    return web.json_response(document(request.app.router))
