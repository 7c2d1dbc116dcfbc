"""POST /1.0/instances/{name}/exec (recorded output is served with the instance's logs)."""
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.instances import exec as instance_exec

routes = web.RouteTableDef()


@routes.post('/1.0/instances/{name}/exec')
async def post_exec(request):
    body = await response.json_body(request)
    op = await instance_exec.start(request.app['daemon'], request.match_info['name'], body)
    return response.async_operation(op)
