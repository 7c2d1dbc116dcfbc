"""/1.0/profiles: CRUD, rename, used_by, ETag."""
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.errors import BadRequest

routes = web.RouteTableDef()


def _service(request):
    return request.app['daemon'].profiles


@routes.get('/1.0/profiles')
async def list_profiles(request):
    service = _service(request)
    if response.recursion(request):
        return response.sync([service.get(name) for name in service.names()])
    return response.sync(['/1.0/profiles/%s' % name for name in service.names()])


@routes.post('/1.0/profiles')
async def create_profile(request):
    _service(request).create(await response.json_body(request))
    return response.sync({})


@routes.get('/1.0/profiles/{name}')
async def get_profile(request):
    service, name = _service(request), request.match_info['name']
    return response.sync(service.get(name), etag=response.etag_of(service.etag(name)))


async def _update(request, merge):
    service, name = _service(request), request.match_info['name']
    response.check_etag(request, response.etag_of(service.etag(name)))
    body = await response.json_body(request)
    await request.app['daemon'].operations.run_blocking(service.update, name, body, merge)
    return response.sync({})


@routes.put('/1.0/profiles/{name}')
async def put_profile(request):
    return await _update(request, merge=False)


@routes.patch('/1.0/profiles/{name}')
async def patch_profile(request):
    return await _update(request, merge=True)


@routes.post('/1.0/profiles/{name}')
async def rename_profile(request):
    body = await response.json_body(request)
    if 'name' not in body:
        raise BadRequest('A new name is required')
    _service(request).rename(request.match_info['name'], body['name'])
    return response.sync({})


@routes.delete('/1.0/profiles/{name}')
async def delete_profile(request):
    _service(request).delete(request.match_info['name'])
    return response.sync({})
