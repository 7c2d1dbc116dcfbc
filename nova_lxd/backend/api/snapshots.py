"""/1.0/instances/{name}/snapshots: list, create, get, update, rename, delete snapshots."""
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.errors import BadRequest

routes = web.RouteTableDef()
PREFIXES = ('/1.0/instances', '/1.0/containers')


def _route(method, suffix):
    def decorate(handler):
        for prefix in PREFIXES:
            routes.route(method, prefix + '/{name}/snapshots' + suffix)(handler)
        return handler
    return decorate


def _args(request):
    return request.app['daemon'].snapshots, request.match_info['name']


@_route('GET', '')
async def list_snapshots(request):
    service, name = _args(request)
    if response.recursion(request):
        return response.sync(service.list(name))
    prefix = request.path.rstrip('/')
    return response.sync(['%s/%s' % (prefix, snap) for snap in service.names(name)])


@_route('POST', '')
async def create_snapshot(request):
    service, name = _args(request)
    body = await response.json_body(request)
    return response.async_operation(await service.create(name, body))


@_route('GET', '/{snap}')
async def get_snapshot(request):
    service, name = _args(request)
    snap = request.match_info['snap']
    return response.sync(service.get(name, snap),
                         etag=response.etag_of(service.etag(name, snap)))


async def _update(request, merge):
    service, name = _args(request)
    snap = request.match_info['snap']
    response.check_etag(request, response.etag_of(service.etag(name, snap)))
    service.update(name, snap, await response.json_body(request), merge)
    return response.sync({})


@_route('PUT', '/{snap}')
async def put_snapshot(request):
    return await _update(request, merge=False)


@_route('PATCH', '/{snap}')
async def patch_snapshot(request):
    return await _update(request, merge=True)


@_route('POST', '/{snap}')
async def rename_snapshot(request):
    service, name = _args(request)
    body = await response.json_body(request)
    if body.get('migration'):   # a copy of this snapshot to another server
        return response.async_operation(await request.app['daemon'].migration.start_source(
            name, body, snapshot=request.match_info['snap']))
    if not body.get('name'):
        raise BadRequest('A new snapshot name is required')
    return response.async_operation(
        await service.rename(name, request.match_info['snap'], body['name']))


@_route('DELETE', '/{snap}')
async def delete_snapshot(request):
    service, name = _args(request)
    return response.async_operation(await service.delete(name, request.match_info['snap']))
