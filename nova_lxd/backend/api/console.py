"""POST/DELETE /1.0/instances/{name}/console: the console websocket; clearing the console log.

(GET, the console log itself, is served with the instance's other logs.)
"""
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.instances import console

routes = web.RouteTableDef()


@routes.post('/1.0/instances/{name}/console')
@routes.post('/1.0/containers/{name}/console')
async def open_console(request):
    body = await response.json_body(request)
    op = await console.start(request.app['daemon'], request.match_info['name'], body)
    return response.async_operation(op)


@routes.delete('/1.0/instances/{name}/console')
@routes.delete('/1.0/containers/{name}/console')
async def clear_console_log(request):
    daemon = request.app['daemon']
    await daemon.operations.run_blocking(console.clear_log, daemon, request.match_info['name'])
    return response.sync({})
