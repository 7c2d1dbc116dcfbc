"""/1.0/certificates: the trust store; POST is the one call an untrusted client may make."""
import asyncio

from aiohttp import web

from nova_lxd.backend import trust
from nova_lxd.backend.api import response
from nova_lxd.backend.errors import BadRequest, Forbidden

routes = web.RouteTableDef()


def _store(request):
    return request.app['daemon'].trust


def _url(fingerprint):
    return '/1.0/certificates/%s' % fingerprint


def _writable(doc):
    return {k: doc[k] for k in ('name', 'type', 'restricted', 'projects')}


@routes.get('/1.0/certificates')
async def list_certificates(request):
    docs = _store(request).list()
    if response.recursion(request):
        return response.sync(docs)
    return response.sync([_url(doc['fingerprint']) for doc in docs])


@routes.post('/1.0/certificates')
async def add_certificate(request):
    body = await response.json_body(request)
    store, trusted = _store(request), request['trusted']
    if body.get('token'):
        if not trusted:
            raise Forbidden('not authorized')
        return await _issue_token(request, body)
    if body.get('certificate'):
        cert = trust.load_certificate(body['certificate'])
    else:
        der = trust.peer_certificate_der(request)
        if not der:
            raise BadRequest('No client certificate provided (neither in the request nor '
                             'in the TLS handshake)')
        cert = trust.load_certificate(der)
    name = body.get('name') or ''
    if not trusted:
        token = store.take_token(body.get('trust_token') or body.get('password') or '')
        if token is not None:
            name = name or token['name']
            if token['on_used'] is not None:
                token['on_used']()
        else:
            password = body.get('password') or ''
            stored = request.app['daemon'].db.config().get('core.trust_password')
            # scrypt takes tens of milliseconds of CPU: not on the event loop
            if not password or not await request.app['daemon'].operations.run_blocking(
                    store.check_password, password, stored, request.remote):
                raise Forbidden('not authorized')
    doc = store.add(cert, name, body.get('type') or 'client', body.get('restricted', False),
                    body.get('projects'))
    request.app['daemon'].events.lifecycle('certificate-created', _url(doc['fingerprint']))
    return response.sync(None, status=201, headers={'Location': _url(doc['fingerprint'])})


async def _issue_token(request, body):
    """A single-use token, alive as a running operation until used or cancelled (as LXD)."""
    daemon, store = request.app['daemon'], _store(request)
    name = body.get('name') or ''
    done = asyncio.Event()

    async def wait_until_used(op):
        try:
            await done.wait()
        finally:
            store.drop_token(secret)

    secret = store.new_token(name, on_used=done.set)
    metadata = {'request': {'name': name, 'type': body.get('type') or 'client',
                            'restricted': bool(body.get('restricted', False)),
                            'projects': body.get('projects') or []},
                'secret': secret, 'fingerprint': daemon.certificate_fingerprint,
                'addresses': daemon.https_addresses(),
                'token': store.encode_token(name, secret)}
    op = daemon.operations.start(wait_until_used, 'Generating trust token', op_class='token',
                                 metadata=metadata, may_cancel=True)
    op.metadata['id'] = op.id
    return response.async_operation(op)


@routes.get('/1.0/certificates/{fingerprint}')
async def get_certificate(request):
    doc = _store(request).get(request.match_info['fingerprint'])
    return response.sync(doc, etag=response.etag_of(_writable(doc)))


async def _update(request, merge):
    store = _store(request)
    doc = store.get(request.match_info['fingerprint'])
    response.check_etag(request, response.etag_of(_writable(doc)))
    body = await response.json_body(request)
    values = dict(_writable(doc), **body) if merge else body
    store.update(doc['fingerprint'], values)
    return response.sync(None)


@routes.put('/1.0/certificates/{fingerprint}')
async def put_certificate(request):
    return await _update(request, merge=False)


@routes.patch('/1.0/certificates/{fingerprint}')
async def patch_certificate(request):
    return await _update(request, merge=True)


@routes.delete('/1.0/certificates/{fingerprint}')
async def delete_certificate(request):
    store = _store(request)
    doc = store.get(request.match_info['fingerprint'])
    store.delete(doc['fingerprint'])
    request.app['daemon'].events.lifecycle('certificate-deleted', _url(doc['fingerprint']))
    return response.sync(None)
