"""DELETE /1.0/instances/{name}/console: clear the console log (GET lives with the instances)."""
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.instances import console

routes = web.RouteTableDef()


@routes.delete('/1.0/instances/{name}/console')
@routes.delete('/1.0/containers/{name}/console')
async def clear_console_log(request):
    daemon = request.app['daemon']
    await daemon.operations.run_blocking(console.clear_log, daemon, request.match_info['name'])
    return response.sync({})
