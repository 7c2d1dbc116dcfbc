"""The two websockets of a migration ("control" and "fs"), whichever side dialled.

In pull mode the target dials the source's operation websockets; in push mode the source dials
the target's; in relay mode the client dials both and copies frames between them. Either way each
side ends up with one aiohttp websocket per name (server-side WebSocketResponse or client-side
ClientWebSocketResponse: the same send/receive interface), so the transfer code never cares who
connected.

Peers are authenticated as LXD does it: the dialling side pins the certificate the client gave it
(source.certificate / target.certificate) and proves itself with the operation's single-use
secrets; neither daemon has to trust the other's certificate.
"""
import asyncio
import json
import urllib.parse

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes

from nova_lxd.backend.errors import ApiError, BadRequest
from nova_lxd.backend import trust

NAMES = ('control', 'fs')
MAX_MESSAGE = 16 << 20
CONNECT_TIMEOUT = 30.0    # how long a side waits for its peer to connect
SEND_TIMEOUT = 120.0      # a peer that stops reading for this long is gone
HEARTBEAT = 20.0          # websocket pings: a peer that vanished without a FIN is noticed
CHUNK = 1 << 20


class TransferError(ApiError):
    """The peer went away or broke the protocol."""


class Channels:
    """The connected websockets of one migration, by name."""

    def __init__(self):
        self.sockets = {}
        self._session = None
        self._futures = {}
        self._finished = asyncio.Event()

    # -- served: the peer connects to our operation's websockets --------------------------------
    def serve(self, op):
        """Make op a websocket operation whose secrets (metadata) the peer must present."""
        loop = asyncio.get_running_loop()
        self._futures = {name: loop.create_future() for name in NAMES}
        fds = op.add_websockets(NAMES, self._accept)
        # LXD's migration operations carry the secrets as the whole metadata map (clients read
        # every value as a string)
        op.metadata = dict(fds)
        op.registry.notify(op)
        return fds

    async def _accept(self, request, name):
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=HEARTBEAT)
        await ws.prepare(request)
        future = self._futures[name]
        if future.done():
            await ws.close()
            return ws
        future.set_result(ws)
        await self._finished.wait()     # the websocket lives as long as the transfer
        return ws

    async def wait_connected(self, timeout=CONNECT_TIMEOUT):
        try:
            await asyncio.wait_for(asyncio.gather(*self._futures.values()), timeout)
        except asyncio.TimeoutError:
            raise TransferError('Timed out waiting for the migration peer to connect')
        self.sockets = {name: f.result() for name, f in self._futures.items()}

    # -- dialled: we connect to the peer's operation websockets ----------------------------------
    @staticmethod
    def check_dial_args(operation_url, secrets, certificate):
        """BadRequest unless these name a peer operation we could dial; (url, pinned digest)."""
        url = urllib.parse.urlsplit(operation_url if isinstance(operation_url, str) else '')
        if url.scheme != 'https' or not url.netloc or \
                not url.path.startswith('/1.0/operations/'):
            raise BadRequest('Invalid migration operation URL %r (https://host:port/1.0/'
                             'operations/<id> expected)' % (operation_url,))
        if not isinstance(secrets, dict) or any(not isinstance(secrets.get(n), str)
                                                for n in NAMES):
            raise BadRequest('Migration secrets for %s are required' % ', '.join(NAMES))
        return url, pinned_digest(certificate)

    async def dial(self, operation_url, secrets, certificate):
        url, digest = self.check_dial_args(operation_url, secrets, certificate)
        pinned = aiohttp.Fingerprint(digest)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT))
        base = 'wss://%s%s/websocket' % (url.netloc, url.path.rstrip('/'))
        try:
            for name in NAMES:
                self.sockets[name] = await self._session.ws_connect(
                    base + '?' + urllib.parse.urlencode({'secret': secrets[name]}),
                    ssl=pinned, max_msg_size=MAX_MESSAGE, heartbeat=HEARTBEAT)
        except aiohttp.ServerFingerprintMismatch:
            await self.close()
            raise TransferError('The migration peer at %s does not present the pinned '
                                'certificate' % url.netloc, 400)
        except aiohttp.WSServerHandshakeError as exc:
            await self.close()
            raise TransferError('The migration peer refused the websocket (%s %s): wrong or '
                                'used secret?' % (exc.status, exc.message), 400)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            await self.close()
            raise TransferError('Cannot connect to the migration peer at %s: %s'
                                % (url.netloc, exc or exc.__class__.__name__), 400)

    # -- messages --------------------------------------------------------------------------------
    async def send(self, channel, /, **message):
        await self._send(channel, self.sockets[channel].send_str, json.dumps(message))

    async def send_bytes(self, channel, data):
        await self._send(channel, self.sockets[channel].send_bytes, data)

    async def _send(self, channel, send, data):
        # a write to a dead TLS connection can be dropped silently: the peer must be seen alive
        if self.sockets[channel].closed:
            raise TransferError('The migration peer went away (%s channel closed)' % channel)
        try:
            # a timeout scope, not wait_for(): that made a task of every frame
            async with asyncio.timeout(SEND_TIMEOUT):
                await send(data)
        except asyncio.TimeoutError:
            raise TransferError('The migration peer stopped reading (%s channel)' % channel)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise TransferError('The migration peer went away (%s channel: %s)'
                                % (channel, exc or exc.__class__.__name__))

    async def receive(self, name, timeout=None):
        """The next message: a dict (JSON text frame) or bytes (binary frame)."""
        try:
            msg = await asyncio.wait_for(self.sockets[name].receive(), timeout)
        except asyncio.TimeoutError:
            raise TransferError('The migration peer did not answer in time')
        if msg.type == aiohttp.WSMsgType.BINARY:
            return msg.data
        if msg.type == aiohttp.WSMsgType.TEXT:
            try:
                value = json.loads(msg.data)
            except ValueError:
                raise TransferError('The migration peer sent an invalid message')
            if not isinstance(value, dict):
                raise TransferError('The migration peer sent an invalid message')
            if value.get('type') == 'abort':
                raise TransferError('The migration peer aborted: %s'
                                    % value.get('message', ''))
            return value
        raise TransferError('The migration peer went away (%s channel closed)' % name)

    async def receive_message(self, name, expected_type, timeout=None):
        value = await self.receive(name, timeout)
        if not isinstance(value, dict) or value.get('type') != expected_type:
            raise TransferError('Migration protocol error: expected %r on %s'
                                % (expected_type, name))
        return value

    async def abort(self, message):
        """Tell the peer why we give up (best effort)."""
        for name in ('control',):
            ws = self.sockets.get(name)
            if ws is not None and not ws.closed:
                try:
                    await ws.send_str(json.dumps({'type': 'abort', 'message': message}))
                except Exception:
                    pass

    async def close(self):
        for ws in self.sockets.values():
            try:
                await ws.close()
            except Exception:
                pass
        self._finished.set()
        for future in self._futures.values():
            if not future.done():
                future.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None


def pinned_digest(certificate):
    """sha256 of the DER certificate a peer must present (PEM or base64 DER given)."""
    if not certificate or not isinstance(certificate, str):
        raise BadRequest('The peer\'s certificate is required to pin the migration connection')
    return trust.load_certificate(certificate).fingerprint(hashes.SHA256())
