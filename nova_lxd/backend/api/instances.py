"""/1.0/instances (and the /1.0/containers aliases older clients use): CRUD, state, logs."""
import os

from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.errors import BadRequest, NotFound

routes = web.RouteTableDef()
PREFIXES = ('/1.0/instances', '/1.0/containers')


def _route(method, suffix):
    def decorate(handler):
        for prefix in PREFIXES:
            routes.route(method, prefix + suffix)(handler)
        return handler
    return decorate


def _service(request):
    return request.app['daemon'].instances


async def _blocking(request, func, *args):
    return await request.app['daemon'].operations.run_blocking(func, *args)


def _field(view, path):
    value = view
    for part in path.split('.'):
        if not isinstance(value, dict):
            return None
        if part not in value and path.startswith('config.'):   # config.key.with.dots
            return value.get(path[len('config.'):]) if value is view.get('config') else None
        value = value.get(part)
    return value


def _matches(view, expression):
    """LXD's ?filter= (api_filtering): `field eq|ne value` terms joined by and / or."""
    words = expression.split()
    result, joiner, i = None, 'and', 0
    while i < len(words):
        if words[i] in ('and', 'or'):
            joiner = words[i]
            i += 1
            continue
        negate = words[i] == 'not'
        if negate:
            i += 1
        if len(words) - i < 3:
            raise BadRequest('Invalid filter %r' % expression)
        field, op, value = words[i], words[i + 1], words[i + 2].strip('"\'')
        if op not in ('eq', 'ne'):
            raise BadRequest('Unsupported filter operator %r' % op)
        actual = _field(view, field)
        term = (str(actual) == value) if actual is not None else False
        term = term if op == 'eq' else not term
        term = not term if negate else term
        result = term if result is None else (result and term if joiner == 'and'
                                              else result or term)
        i += 3
    return True if result is None else result


@_route('GET', '')
async def list_instances(request):
    level = response.recursion(request)
    service = _service(request)
    prefix = request.path
    expression = request.query.get('filter', '').strip()
    if not level and not expression:
        names = await _blocking(request, service.names)
        return response.sync(['%s/%s' % (prefix, name) for name in names])
    listing = await _blocking(request, service.listing)

    def collect():
        # each view encoded as soon as made (response.SyncList), off the event loop
        items = response.SyncList()
        for doc in listing.docs:
            view = service.listed(listing, doc, level or 1)
            if expression and not _matches(view, expression):
                continue
            items.append(view if level else '%s/%s' % (prefix, doc['name']))
        return items.reply()
    # One worker thread: what a running instance costs is now Python under the GIL and short
    # syscalls (no waits on liblxc's monitors), so 1, 2 and 4 threads measured the same CPU and
    # time for 300 running; one thread spares the hand-offs.
    return await _blocking(request, collect)


@_route('POST', '')
async def create_instance(request):
    body = await response.json_body(request)
    return response.async_operation(await _service(request).create(body))


@_route('GET', '/{name}')
async def get_instance(request):
    service, name = _service(request), request.match_info['name']
    view = await _blocking(request, service.get, name)
    return response.sync(view, etag=response.etag_of(service.etag(name)))


async def _update(request, merge):
    service, name = _service(request), request.match_info['name']
    response.check_etag(request, response.etag_of(service.etag(name)))
    body = await response.json_body(request)
    if not merge and body.get('restore'):
        snapshot = body['restore']
        if not isinstance(snapshot, str):
            raise BadRequest('restore must be a snapshot name')

        async def work(op):
            await service.restore(name, snapshot)
        return response.async_operation(request.app['daemon'].operations.start(
            work, 'Restoring snapshot', {'instances': ['/1.0/instances/%s' % name]}))
    await service.update(name, body, merge)
    if merge:
        return response.sync({})

    async def done(op):
        return None
    # LXD answers PUT with an operation; pylxd's save(wait=True) waits on it
    return response.async_operation(request.app['daemon'].operations.start(
        done, 'Updating instance', {'instances': ['/1.0/instances/%s' % name]}))


@_route('PUT', '/{name}')
async def put_instance(request):
    return await _update(request, merge=False)


@_route('PATCH', '/{name}')
async def patch_instance(request):
    return await _update(request, merge=True)


@_route('POST', '/{name}')
async def rename_instance(request):
    body = await response.json_body(request)
    if body.get('migration'):
        migration = request.app['daemon'].migration
        return response.async_operation(
            await migration.start_source(request.match_info['name'], body))
    if 'name' not in body:
        raise BadRequest('A new name is required')
    op = await _service(request).rename(request.match_info['name'], body['name'])
    return response.async_operation(op)


@_route('DELETE', '/{name}')
async def delete_instance(request):
    return response.async_operation(await _service(request).delete(request.match_info['name']))


@_route('GET', '/{name}/state')
async def get_state(request):
    service = _service(request)
    return response.sync(await _blocking(request, service.state, request.match_info['name']))


@_route('PUT', '/{name}/state')
async def put_state(request):
    body = await response.json_body(request)
    op = await _service(request).change_state(request.match_info['name'], body)
    return response.async_operation(op)


@_route('GET', '/{name}/backups')
async def list_backups(request):
    """Backups are not implemented; the list exists because `lxc info` always asks for it."""
    await _blocking(request, _service(request).get, request.match_info['name'])
    return response.sync([])


@_route('POST', '/{name}/backups')
async def create_backup(request):
    raise BadRequest('Instance backups are not supported by this backend; use snapshots or '
                     'publish an image')


@_route('GET', '/{name}/logs')
async def list_logs(request):
    name = request.match_info['name']
    return response.sync(['%s/%s/logs/%s' % (PREFIXES[0], name, f)
                          for f in _service(request).log_files(name)])


def _log_path(request):
    service, name = _service(request), request.match_info['name']
    log = request.match_info['file']
    if log not in service.log_files(name):
        raise NotFound('Log file not found')
    return os.path.join(service.logs, name, log)


@_route('GET', '/{name}/logs/{file}')
async def get_log(request):
    return web.FileResponse(_log_path(request), headers={'Content-Type': 'text/plain'})


@_route('DELETE', '/{name}/logs/{file}')
async def delete_log(request):
    path = _log_path(request)
    if request.match_info['file'] in ('lxc.log', 'console.log'):
        raise BadRequest('Only rotated log files can be deleted')
    os.unlink(path)
    return response.sync({})


@_route('GET', '/{name}/console')
async def get_console_log(request):
    path = _service(request).console_log_path(request.match_info['name'])
    _service(request).log_files(request.match_info['name'])   # 404 for unknown instances
    if not os.path.exists(path):
        return web.Response(body=b'', content_type='text/plain')
    return web.FileResponse(path, headers={'Content-Type': 'text/plain'})
