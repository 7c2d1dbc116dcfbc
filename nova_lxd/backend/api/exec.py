"""POST /1.0/instances/{name}/exec and the recorded output under /1.0/instances/{name}/logs."""
from aiohttp import web

from nova_lxd.backend.api import response
from nova_lxd.backend.errors import NotFound
from nova_lxd.backend.instances import exec as instance_exec

routes = web.RouteTableDef()


@routes.post('/1.0/instances/{name}/exec')
async def post_exec(request):
    body = await response.json_body(request)
    op = await instance_exec.start(request.app['daemon'], request.match_info['name'], body)
    return response.async_operation(op)


def _logs(request):
    daemon, name = request.app['daemon'], request.match_info['name']
    if not daemon.instances.exists(name):
        raise NotFound('Instance not found')
    return instance_exec.ExecLogs(daemon, name)


@routes.get('/1.0/instances/{name}/logs')
async def list_logs(request):
    logs = _logs(request)
    return response.sync([logs.url(f) for f in logs.list()])


@routes.get('/1.0/instances/{name}/logs/{file}')
async def get_log(request):
    return web.FileResponse(_logs(request).path(request.match_info['file']),
                            headers={'Content-Type': 'application/octet-stream'})


@routes.delete('/1.0/instances/{name}/logs/{file}')
async def delete_log(request):
    _logs(request).delete(request.match_info['file'])
    return response.sync({})
