"""POST /1.0/images/{fingerprint}/secret: a single-use secret to read a private image (image copy
between daemons). Instance migration enters through /1.0/instances (api/instances.py)."""
from aiohttp import web

from nova_lxd.backend.api import response

routes = web.RouteTableDef()


@routes.post('/1.0/images/{fingerprint}/secret')
async def create_image_secret(request):
    secrets = request.app['daemon'].migration.image_secrets
    return response.async_operation(secrets.create(request.match_info['fingerprint']))


def image_readable_by_secret(request, fingerprint, consume=False):
    """Whether the request's ?secret= grants (and, for an export, uses up) this image."""
    secrets = request.app['daemon'].migration.image_secrets
    secret = request.query.get('secret')
    return secrets.use(fingerprint, secret) if consume else secrets.valid(fingerprint, secret)
