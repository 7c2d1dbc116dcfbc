"""/1.0/storage-pools: pools (CRUD, resources) and their volumes (instance, image, custom)."""
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.storage import StorageService

routes = web.RouteTableDef()


def _storage(request):
    return request.app['daemon'].storage


async def _blocking(request, func, *args):
    """mkfs, mount, btrfs and du calls run in the worker pool, never on the event loop."""
    return await request.app['daemon'].operations.run_blocking(func, *args)


def _pool_etag(view):
    return response.etag_of(*StorageService.etag_parts(view))


# -- pools -----------------------------------------------------------------------------------

@routes.get('/1.0/storage-pools')
async def list_pools(request):
    pools = await _blocking(request, _storage(request).list_pools)
    if response.recursion(request):
        return response.sync(pools)
    return response.sync(['/1.0/storage-pools/%s' % p['name'] for p in pools])


@routes.post('/1.0/storage-pools')
async def create_pool(request):
    body = await response.json_body(request)
    view = await _blocking(request, _storage(request).create_pool, body.get('name'),
                           body.get('driver'), body.get('config'), body.get('description'))
    return response.sync({}, headers={'Location': '/1.0/storage-pools/%s' % view['name']})


@routes.get('/1.0/storage-pools/{pool}')
async def get_pool(request):
    view = await _blocking(request, _storage(request).get_pool, request.match_info['pool'])
    return response.sync(view, etag=_pool_etag(view))


async def _update_pool(request, merge):
    storage, name = _storage(request), request.match_info['pool']
    response.check_etag(request, _pool_etag(await _blocking(request, storage.get_pool, name)))
    body = await response.json_body(request)
    await _blocking(request, storage.update_pool, name, body, merge)
    return response.sync({})


@routes.put('/1.0/storage-pools/{pool}')
async def put_pool(request):
    return await _update_pool(request, merge=False)


@routes.patch('/1.0/storage-pools/{pool}')
async def patch_pool(request):
    return await _update_pool(request, merge=True)


@routes.delete('/1.0/storage-pools/{pool}')
async def delete_pool(request):
    await _blocking(request, _storage(request).delete_pool, request.match_info['pool'])
    return response.sync({})


@routes.get('/1.0/storage-pools/{pool}/resources')
async def pool_resources(request):
    return response.sync(await _blocking(request, _storage(request).resources,
                                         request.match_info['pool']))


# -- volumes ---------------------------------------------------------------------------------

def _volume_urls(views):
    return ['/1.0/storage-pools/%s/volumes/%s/%s' % (v['pool'], v['type'], v['name'])
            for v in views]


@routes.get('/1.0/storage-pools/{pool}/volumes')
async def list_volumes(request):
    views = await _blocking(request, _storage(request).list_volumes, request.match_info['pool'])
    return response.sync(views if response.recursion(request) else _volume_urls(views))


@routes.get('/1.0/storage-pools/{pool}/volumes/{type}')
async def list_volumes_of_type(request):
    views = await _blocking(request, _storage(request).list_volumes, request.match_info['pool'],
                            request.match_info['type'])
    return response.sync(views if response.recursion(request) else _volume_urls(views))


async def _create_volume(request, vol_type=None):
    body = await response.json_body(request)
    if vol_type is not None:
        if body.get('type') not in (None, '', vol_type):
            raise BadRequest('Volume type %r does not match the URL' % body['type'])
        body['type'] = vol_type
    view = await _blocking(request, _storage(request).create_custom_volume,
                           request.match_info['pool'], body)
    return response.sync({}, headers={'Location': _volume_urls([view])[0]})


@routes.post('/1.0/storage-pools/{pool}/volumes')
async def create_volume(request):
    return await _create_volume(request)


@routes.post('/1.0/storage-pools/{pool}/volumes/{type}')
async def create_volume_of_type(request):
    return await _create_volume(request, request.match_info['type'])


def _volume_key(request):
    return request.match_info['pool'], request.match_info['type'], request.match_info['name']


def _only_custom(vol_type):
    if vol_type != 'custom':
        raise BadRequest('Only custom storage volumes can be changed here (not %r)' % vol_type)


@routes.get('/1.0/storage-pools/{pool}/volumes/{type}/{name}')
async def get_volume(request):
    view = await _blocking(request, _storage(request).get_volume, *_volume_key(request))
    return response.sync(view, etag=response.etag_of(view['config'], view['description']))


async def _update_volume(request, merge):
    pool, vol_type, name = _volume_key(request)
    _only_custom(vol_type)
    storage = _storage(request)
    view = await _blocking(request, storage.get_volume, pool, vol_type, name)
    response.check_etag(request, response.etag_of(view['config'], view['description']))
    body = await response.json_body(request)
    await _blocking(request, storage.update_custom_volume, pool, name, body, merge)
    return response.sync({})


@routes.put('/1.0/storage-pools/{pool}/volumes/{type}/{name}')
async def put_volume(request):
    return await _update_volume(request, merge=False)


@routes.patch('/1.0/storage-pools/{pool}/volumes/{type}/{name}')
async def patch_volume(request):
    return await _update_volume(request, merge=True)


@routes.post('/1.0/storage-pools/{pool}/volumes/{type}/{name}')
async def rename_volume(request):
    pool, vol_type, name = _volume_key(request)
    _only_custom(vol_type)
    body = await response.json_body(request)
    if body.get('migration'):
        raise BadRequest('Migrating storage volumes is not supported')
    view = await _blocking(request, _storage(request).rename_custom_volume, pool, name, body)
    return response.sync({}, headers={'Location': _volume_urls([view])[0]})


@routes.delete('/1.0/storage-pools/{pool}/volumes/{type}/{name}')
async def delete_volume(request):
    pool, vol_type, name = _volume_key(request)
    _only_custom(vol_type)
    await _blocking(request, _storage(request).delete_custom_volume, pool, name)
    return response.sync({})
