"""Copying images between daemons: POST /1.0/images {"source": {"type": "image", "mode": "pull",
"server": "https://host:port", "certificate": PEM, "secret": ..., "fingerprint"|"alias": ...}}.

The target downloads GET /1.0/images/{fp}/export from the source (pinning its certificate when
given, as LXD does; without one, the system's CAs must vouch for it) and imports it through the
image store's own checks (fingerprint verified, hostile tarballs refused). A private image is
readable by an untrusted peer only with a secret from POST /1.0/images/{fp}/secret (a "token"
operation that stays running until the secret is used by an export, or cancelled).
"""
import asyncio
import logging
import secrets as random_secrets
import ssl
import urllib.parse

import aiohttp

from nova_lxd.backend.errors import ApiError, BadRequest
from nova_lxd.backend.migration.channels import CHUNK, pinned_digest

LOG = logging.getLogger(__name__)
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)


class ImageSecrets:
    """Single-use secrets that let an untrusted peer read one private image."""

    def __init__(self, daemon):
        self.daemon = daemon
        self._secrets = {}    # secret -> (fingerprint, operation)

    def create(self, fingerprint):
        fingerprint = self.daemon.images.get(fingerprint)['fingerprint']
        secret = random_secrets.token_hex(32)
        forever = asyncio.Event()

        async def work(op):
            try:
                await forever.wait()
            finally:
                self._secrets.pop(secret, None)
        op = self.daemon.operations.start(
            work, 'Image download token', {'images': ['/1.0/images/%s' % fingerprint]},
            op_class='token', metadata={'secret': secret, 'fingerprint': fingerprint},
            may_cancel=True)
        self._secrets[secret] = (fingerprint, op)
        return op

    def valid(self, fingerprint, secret):
        entry = self._secrets.get(secret) if secret else None
        return bool(entry) and entry[0] == fingerprint and not entry[1].done.is_set()

    def use(self, fingerprint, secret):
        """True (and the secret revoked) if it grants this image."""
        if not self.valid(fingerprint, secret):
            return False
        _, op = self._secrets.pop(secret)
        if not op.done.is_set():
            op.task.cancel()
        return True


def _parse(body):
    source = body.get('source') or {}
    if source.get('mode', 'pull') != 'pull':
        raise BadRequest('Only mode pull is supported for image copies')
    if source.get('protocol', 'lxd') != 'lxd':
        raise BadRequest('Unsupported image server protocol %r (lxd only)'
                         % source.get('protocol'))
    server = source.get('server')
    url = urllib.parse.urlsplit(server if isinstance(server, str) else '')
    if url.scheme != 'https' or not url.netloc:
        raise BadRequest('source.server must be an https:// URL of an LXD API server')
    if not (source.get('fingerprint') or source.get('alias')):
        raise BadRequest('source.fingerprint or source.alias is required')
    ssl_arg = aiohttp.Fingerprint(pinned_digest(source['certificate'])) \
        if source.get('certificate') else ssl.create_default_context()
    return source, '%s://%s' % (url.scheme, url.netloc), ssl_arg


async def start_copy(daemon, body):
    source, server, ssl_arg = _parse(body)
    aliases = body.get('aliases') or []
    if not isinstance(aliases, list):
        raise BadRequest('aliases must be a list')

    async def work(op):
        fingerprint = await _download(daemon, op, source, server, ssl_arg, body, aliases)
        return {'fingerprint': fingerprint}
    return daemon.operations.start(work, 'Downloading image', {'images': []})


async def _get_json(session, url, ssl_arg, what):
    async with session.get(url, ssl=ssl_arg) as resp:
        data = await resp.json(content_type=None)
        if resp.status != 200:
            raise BadRequest('The image server refused %s: %s' % (what, data.get('error')))
        return data['metadata']


async def _download(daemon, op, source, server, ssl_arg, body, aliases):
    images = daemon.images
    query = {'secret': source['secret']} if source.get('secret') else {}
    suffix = '?' + urllib.parse.urlencode(query) if query else ''
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            fingerprint = source.get('fingerprint')
            if not fingerprint:
                alias = await _get_json(session, '%s/1.0/images/aliases/%s' % (
                    server, urllib.parse.quote(source['alias'], safe='')), ssl_arg, 'the alias')
                fingerprint = alias['target']
            quoted = urllib.parse.quote(fingerprint, safe='')
            info = await _get_json(session, '%s/1.0/images/%s%s' % (server, quoted, suffix),
                                   ssl_arg, 'the image')
            fingerprint = info['fingerprint']
            if images.exists(fingerprint):
                raise BadRequest('Image with same fingerprint already exists')
            staging = images.new_staging()
            try:
                async with session.get('%s/1.0/images/%s/export%s' % (server, quoted, suffix),
                                       ssl=ssl_arg) as resp:
                    if resp.status != 200:
                        raise BadRequest('The image server refused the export (%d)'
                                         % resp.status)
                    await _receive(resp, staging)
                plan = await op.run_blocking(images.check_upload, staging, fingerprint)
                public = body.get('public', info.get('public', False))
                properties = body.get('properties') or info.get('properties') or {}
                filename = body.get('filename') or info.get('filename') or ''
                return await op.run_blocking(images.commit, plan, bool(public), properties,
                                             filename, aliases)
            finally:
                await op.run_blocking(staging.discard)
    except aiohttp.ServerFingerprintMismatch:
        raise BadRequest('The image server %s does not present the pinned certificate' % server)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError, KeyError) as exc:
        if isinstance(exc, ApiError):
            raise
        raise BadRequest('Downloading the image from %s failed: %s'
                         % (server, exc or exc.__class__.__name__))


async def _receive(resp, staging):
    """A unified image (one body) or a split one (multipart: metadata, rootfs)."""
    if resp.content_type.startswith('multipart/'):
        reader = aiohttp.MultipartReader.from_response(resp)
        for wanted in ('metadata', 'rootfs'):
            part = await reader.next()
            if part is None or part.name != wanted:
                raise BadRequest('The image server sent an unexpected export')
            await staging.receive(wanted, lambda: part.read_chunk(CHUNK))
    else:
        await staging.receive('image', lambda: resp.content.read(CHUNK))
