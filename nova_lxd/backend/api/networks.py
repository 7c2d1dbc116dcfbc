"""/1.0/networks: managed bridges (create, get, put, patch, rename, delete), leases and state."""
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.errors import BadRequest

routes = web.RouteTableDef()


def _service(request):
    return request.app['daemon'].networks


async def _blocking(request, func, *args):
    # netlink calls and dnsmasq starts block: keep them off the event loop
    return await request.app['daemon'].operations.run_blocking(func, *args)


def _writable(network):
    return {'config': network['config'], 'description': network['description']}


@routes.get('/1.0/networks')
async def list_networks(request):
    if response.recursion(request):
        return response.sync(await _blocking(request, _service(request).list))
    names = await _blocking(request, _service(request).names)
    return response.sync(['/1.0/networks/%s' % name for name in names])


@routes.post('/1.0/networks')
async def create_network(request):
    body = await response.json_body(request)
    name = body.get('name')
    if not name:
        raise BadRequest('No network name given')
    config = body.get('config') or {}
    if not isinstance(config, dict):
        raise BadRequest('config must be an object')
    await _blocking(request, lambda: _service(request).create(
        name, config, body.get('description') or '', body.get('type') or 'bridge'))
    return response.sync(None, status=201, headers={'Location': '/1.0/networks/%s' % name})


@routes.get('/1.0/networks/{name}')
async def get_network(request):
    network = await _blocking(request, _service(request).get, request.match_info['name'])
    return response.sync(network, etag=response.etag_of(_writable(network)))


async def _update(request, merge):
    service, name = _service(request), request.match_info['name']
    network = await _blocking(request, service.get, name)
    if not network['managed']:
        raise BadRequest('Network %r is not managed by this server' % name)
    response.check_etag(request, response.etag_of(_writable(network)))
    body = await response.json_body(request)
    config = body.get('config') or {}
    if not isinstance(config, dict):
        raise BadRequest('config must be an object')
    await _blocking(request, lambda: service.update(name, config, body.get('description'),
                                                    merge=merge))
    return response.sync(None)


@routes.put('/1.0/networks/{name}')
async def put_network(request):
    return await _update(request, merge=False)


@routes.patch('/1.0/networks/{name}')
async def patch_network(request):
    return await _update(request, merge=True)


@routes.post('/1.0/networks/{name}')
async def rename_network(request):
    body = await response.json_body(request)
    new = body.get('name')
    if not new:
        raise BadRequest('No new name given')
    old = request.match_info['name']
    await _blocking(request, _service(request).rename, old, new)
    return response.sync(None, status=201, headers={'Location': '/1.0/networks/%s' % new})


@routes.delete('/1.0/networks/{name}')
async def delete_network(request):
    name = request.match_info['name']
    service = _service(request)
    if not await _blocking(request, service.is_managed, name):
        await _blocking(request, service.get, name)     # 404 for unknown names
        raise BadRequest('Network %r is not managed by this server' % name)
    await _blocking(request, service.delete, name)
    return response.sync(None)


@routes.get('/1.0/networks/{name}/leases')
async def network_leases(request):
    return response.sync(await _blocking(request, _service(request).leases,
                                         request.match_info['name']))


@routes.get('/1.0/networks/{name}/state')
async def network_state(request):
    return response.sync(await _blocking(request, _service(request).state,
                                         request.match_info['name']))
