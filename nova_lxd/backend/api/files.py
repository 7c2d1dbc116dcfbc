"""GET/POST/DELETE /1.0/instances/{name}/files?path=: files, directories and symlinks."""
import os

from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.instances import files

routes = web.RouteTableDef()
PREFIXES = ('/1.0/instances', '/1.0/containers')
MAX_SYMLINK_TARGET = 4096


def _route(method):
    def decorate(handler):
        for prefix in PREFIXES:
            routes.route(method, prefix + '/{name}/files')(handler)
        return handler
    return decorate


def _path(request):
    path = request.query.get('path')
    if not path:
        raise BadRequest('Missing "path" query parameter')
    return path


@_route('GET')
async def get_file(request):
    daemon, name = request.app['daemon'], request.match_info['name']
    info, payload = await daemon.operations.run_blocking(files.read, daemon, name, _path(request))
    headers = info.headers()
    if info.kind == 'directory':
        return response.sync(payload, headers=headers)
    if info.kind == 'symlink':
        return web.Response(body=os.fsencode(payload), headers=headers,
                            content_type='application/octet-stream')
    try:
        reply = web.StreamResponse(headers=headers)
        reply.content_type = 'application/octet-stream'
        await reply.prepare(request)
        while True:
            chunk = await daemon.operations.run_blocking(os.read, payload, files.CHUNK)
            if not chunk:
                break
            await reply.write(chunk)
        await reply.write_eof()
        return reply
    finally:
        os.close(payload)


@_route('POST')
async def post_file(request):
    daemon, name, path = request.app['daemon'], request.match_info['name'], _path(request)
    headers = request.headers
    kind = headers.get('X-LXD-type', 'file')
    write = headers.get('X-LXD-write', 'overwrite')
    if write not in files.WRITE_MODES:
        raise BadRequest('Invalid X-LXD-write %r (overwrite or append)' % write)
    ids = dict(uid=files.parse_id(headers.get('X-LXD-uid'), 'X-LXD-uid'),
               gid=files.parse_id(headers.get('X-LXD-gid'), 'X-LXD-gid'))
    mode = files.parse_mode(headers.get('X-LXD-mode'))
    if kind == 'file':
        await files.push(daemon, name, path, kind, request.content.iter_chunked(files.CHUNK),
                         mode=mode, append=write == 'append', **ids)
    elif kind == 'symlink':
        target = await request.content.read(MAX_SYMLINK_TARGET + 1)
        if len(target) > MAX_SYMLINK_TARGET:
            raise BadRequest('Symlink target too long')
        await files.push(daemon, name, path, kind, target, **ids)
    else:
        await files.push(daemon, name, path, kind, b'', mode=mode, **ids)
    return response.sync({})


@_route('DELETE')
async def delete_file(request):
    daemon = request.app['daemon']
    await daemon.operations.run_blocking(files.delete, daemon, request.match_info['name'],
                                         _path(request))
    return response.sync({})
