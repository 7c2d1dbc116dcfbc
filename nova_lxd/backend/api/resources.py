"""GET /1.0/resources: the host's CPUs and memory (storage pools report theirs in storage.py)."""
from aiohttp import web

from nova_lxd.backend import resources
from nova_lxd.backend.api import response

routes = web.RouteTableDef()


@routes.get('/1.0/resources')
async def get_resources(request):
    return response.sync(await request.app['daemon'].operations.run_blocking(
        resources.host_resources))
