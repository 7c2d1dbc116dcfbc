"""/1.0/images: upload (unified, split), publish, list, get, update, delete, export; aliases."""
import functools
import urllib.parse

import aiohttp
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.api.migration import image_readable_by_secret
from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.images import publish

routes = web.RouteTableDef()
CHUNK = 1 << 20


def _images(request):
    return request.app['daemon'].images


def _truthy(value):
    return (value or '').strip().lower() in ('1', 'true', 'yes', 'on')


# -- aliases (declared first: /1.0/images/aliases is not a fingerprint) ------------------------

def _alias_etag(alias):
    return response.etag_of(alias['name'], alias['description'], alias['target'])


@routes.get('/1.0/images/aliases')
async def list_aliases(request):
    aliases = _images(request).aliases
    if response.recursion(request):
        return response.sync(aliases.list())
    return response.sync([aliases.url(a['name']) for a in aliases.list()])


@routes.post('/1.0/images/aliases')
async def create_alias(request):
    body = await response.json_body(request)
    aliases = _images(request).aliases
    alias = aliases.create(body.get('name'), body.get('target'), body.get('description'))
    return response.sync({}, headers={'Location': aliases.url(alias['name'])})


@routes.get('/1.0/images/aliases/{name:.+}')
async def get_alias(request):
    alias = _images(request).aliases.get(request.match_info['name'])
    return response.sync(alias, etag=_alias_etag(alias))


async def _update_alias(request, merge):
    aliases = _images(request).aliases
    name = request.match_info['name']
    response.check_etag(request, _alias_etag(aliases.get(name)))
    aliases.update(name, await response.json_body(request), merge)
    return response.sync({})


@routes.put('/1.0/images/aliases/{name:.+}')
async def put_alias(request):
    return await _update_alias(request, merge=False)


@routes.patch('/1.0/images/aliases/{name:.+}')
async def patch_alias(request):
    return await _update_alias(request, merge=True)


@routes.post('/1.0/images/aliases/{name:.+}')
async def rename_alias(request):
    body = await response.json_body(request)
    aliases = _images(request).aliases
    alias = aliases.rename(request.match_info['name'], body.get('name'))
    return response.sync({}, headers={'Location': aliases.url(alias['name'])})


@routes.delete('/1.0/images/aliases/{name:.+}')
async def delete_alias(request):
    _images(request).aliases.delete(request.match_info['name'])
    return response.sync({})


# -- images ----------------------------------------------------------------------------------

@routes.get('/1.0/images')
async def list_images(request):
    images = _images(request).list(public_only=not request['trusted'])
    if response.recursion(request):
        return response.sync(images)
    return response.sync(['/1.0/images/%s' % image['fingerprint'] for image in images])


async def _receive(request, staging):
    """Stream the body to the staging directory: one file (unified) or metadata + rootfs."""
    if request.content_type.startswith('multipart/'):
        reader = await request.multipart()
        for wanted in ('metadata', 'rootfs'):
            part = await reader.next()
            if part is None:
                raise BadRequest('A split image upload needs a "metadata" part, then a '
                                 '"rootfs" part')
            if part.name == 'rootfs.img':
                raise BadRequest('Virtual-machine images are not supported')
            if part.name != wanted:
                raise BadRequest('Unexpected part %r in the image upload (expected %r)'
                                 % (part.name, wanted))
            await staging.receive(wanted, lambda: part.read_chunk(CHUNK))
        if await reader.next() is not None:
            raise BadRequest('Unexpected extra part in the image upload')
    else:
        await staging.receive('image', lambda: request.content.read(CHUNK))
    if not staging.size:
        raise BadRequest('The image upload is empty')


def _upload_options(request):
    headers = request.headers
    properties = dict(urllib.parse.parse_qsl(headers.get('X-LXD-properties', ''),
                                             keep_blank_values=True))
    return {'public': _truthy(headers.get('X-LXD-public')), 'properties': properties,
            'filename': headers.get('X-LXD-filename', '')}


async def _upload(request):
    """Receive, check and store an upload before answering; the operation only reports it.

    The checks answer a bad upload with a plain 400 (nothing stored); storing a checked one
    takes a millisecond, so it is done in the same worker-thread call rather than in the
    operation, which is then already finished when the client waits on it.
    """
    daemon = request.app['daemon']
    images = daemon.images
    options = _upload_options(request)
    staging = images.new_staging()
    try:
        try:
            await _receive(request, staging)
        except (aiohttp.ClientPayloadError, ConnectionError) as exc:
            raise BadRequest('The image upload was interrupted: %s' % exc)
        fingerprint = await daemon.operations.run_blocking(
            functools.partial(images.import_upload, staging,
                              request.headers.get('X-LXD-fingerprint'), **options))
    except BaseException:
        await daemon.operations.run_blocking(staging.discard)
        raise
    result = {'fingerprint': fingerprint, 'size': staging.size}

    async def work(op):
        return result
    op = daemon.operations.start(work, 'Downloading image',
                                 {'images': ['/1.0/images/%s' % fingerprint]})
    return response.async_operation(op)


async def _publish(request):
    daemon = request.app['daemon']
    body = await response.json_body(request)
    source = body.get('source') or {}
    if source.get('type') == 'image':   # a copy from another server
        return response.async_operation(await daemon.migration.copy_image(body))
    if source.get('type') in ('image', 'url'):
        raise BadRequest('Pulling images from a remote (source type %r) is not supported: '
                         'upload the image instead' % source['type'])
    instance, snapshot, options = publish.parse_request(body)
    publish.check_source(daemon, instance)

    async def work(op):
        return await publish.publish(daemon, instance, snapshot, options, op)
    op = daemon.operations.start(work, 'Creating image',
                                 {'instances': ['/1.0/instances/%s' % instance]})
    return response.async_operation(op)


@routes.post('/1.0/images')
async def create_image(request):
    if request.content_type == 'application/json':
        return await _publish(request)
    return await _upload(request)


@routes.get('/1.0/images/{fingerprint}')
async def get_image(request):
    image = _images(request).get(request.match_info['fingerprint'])
    if not request['trusted'] and not image['public'] and \
            not image_readable_by_secret(request, image['fingerprint']):
        raise web.HTTPNotFound()
    return response.sync(image, etag=response.etag_of(*_images(request).etag_parts(image)))


async def _update_image(request, merge):
    images = _images(request)
    fingerprint = request.match_info['fingerprint']
    response.check_etag(request, response.etag_of(*images.etag_parts(images.get(fingerprint))))
    images.update(fingerprint, await response.json_body(request), merge)
    return response.sync({})


@routes.put('/1.0/images/{fingerprint}')
async def put_image(request):
    return await _update_image(request, merge=False)


@routes.patch('/1.0/images/{fingerprint}')
async def patch_image(request):
    return await _update_image(request, merge=True)


@routes.delete('/1.0/images/{fingerprint}')
async def delete_image(request):
    daemon = request.app['daemon']
    fingerprint = daemon.images.get(request.match_info['fingerprint'])['fingerprint']

    async def work(op):
        await op.run_blocking(daemon.images.delete, fingerprint)
    op = daemon.operations.start(work, 'Deleting image',
                                 {'images': ['/1.0/images/%s' % fingerprint]})
    return response.async_operation(op)


@routes.get('/1.0/images/{fingerprint}/export')
async def export_image(request):
    """A unified image as its file; a split image as multipart (metadata, rootfs), as LXD."""
    images = _images(request)
    image = images.get(request.match_info['fingerprint'])
    if not request['trusted'] and not image['public'] and \
            not image_readable_by_secret(request, image['fingerprint'], consume=True):
        raise web.HTTPNotFound()
    parts = images.export_parts(image['fingerprint'])
    if len(parts) == 1:
        _, path, filename = parts[0]
        return web.FileResponse(path, headers={
            'Content-Type': 'application/octet-stream',
            'Content-Disposition': 'attachment; filename=%s' % filename})
    writer = aiohttp.MultipartWriter('form-data')
    for name, path, filename in parts:
        payload = writer.append(open(path, 'rb'), {'Content-Type': 'application/octet-stream'})
        payload.set_content_disposition('form-data', name=name, filename=filename)
    return web.Response(body=writer, status=200)
