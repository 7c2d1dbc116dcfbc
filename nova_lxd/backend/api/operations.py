"""/1.0/operations: list, get, wait and cancel background operations."""
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.errors import BadRequest

routes = web.RouteTableDef()


def _by_status(ops):
    grouped = {}
    for op in ops:
        grouped.setdefault(op.to_dict()['status'].lower(), []).append(op)
    return grouped


@routes.get('/1.0/operations')
async def list_operations(request):
    level = response.recursion(request)
    grouped = _by_status(request.app['daemon'].operations.all())
    return response.sync({status: [op.to_dict() if level else op.url for op in ops]
                          for status, ops in grouped.items()})


@routes.get('/1.0/operations/{id}')
async def get_operation(request):
    return response.sync(request.app['daemon'].operations.get(request.match_info['id']).to_dict())


@routes.get('/1.0/operations/{id}/wait')
async def wait_operation(request):
    raw = request.query.get('timeout', '-1')
    try:
        timeout = float(raw)
    except ValueError:
        raise BadRequest('Invalid timeout %r' % raw)
    op = await request.app['daemon'].operations.wait(request.match_info['id'], timeout)
    return response.sync(op.to_dict())


@routes.get('/1.0/operations/{id}/websocket')
async def operation_websocket(request):
    op = request.app['daemon'].operations.get(request.match_info['id'])
    return await op.connect_websocket(request, request.query.get('secret', ''))


@routes.delete('/1.0/operations/{id}')
async def cancel_operation(request):
    request.app['daemon'].operations.cancel(request.match_info['id'])
    return response.sync({})
