"""Event listeners that outlive a re-exec of the daemon (recycle.py).

An events websocket on the unix socket is a plain byte stream once its handshake is done, and
the daemon only ever writes whole frames to it. So when the daemon executes itself again, such a
stream is handed to the new image as an open file descriptor (HANDOVER_ENV, "fd:type+type,...")
instead of being closed: the new image goes on writing frames to it (AdoptedStream) and the
client never notices. A stream that cannot be handed over (TLS: its session state lives in this
image; unsent bytes still queued) is closed with 1012, "service restart", as before.
"""
import asyncio
import json
import logging
import os
import socket
import struct

LOG = logging.getLogger(__name__)

HANDOVER_ENV = 'NOVA_LXD_EVENT_FDS'
HEARTBEAT = 30.0              # a ping after this long without an event (aiohttp's too)
MAX_CLIENT_FRAME = 1 << 20    # an events client has nothing to say; a larger frame ends it

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
SERVICE_RESTART = 1012


def hand_over(transport, types, hub):
    """Keep a stream open for the next image (True), or False: it must be closed."""
    sock = transport.get_extra_info('socket')
    if (sock is None or sock.family != socket.AF_UNIX
            or transport.get_extra_info('sslcontext') is not None
            or transport.get_write_buffer_size()):
        return False
    hub.keep(sock, types)
    transport.abort()     # closes this image's descriptor only: no FIN, no close frame
    return True


def handover(streams):
    """The HANDOVER_ENV value for [(fd, types)] kept by the hub."""
    return ','.join('%d:%s' % (fd, '+'.join(sorted(types))) for fd, types in streams)


def inherited():
    """[(socket, types)] handed over by the previous image; the environment entry is cleared."""
    streams = []
    for item in filter(None, os.environ.pop(HANDOVER_ENV, '').split(',')):
        fd, _, types = item.partition(':')
        sock = socket.socket(fileno=int(fd))
        sock.set_inheritable(False)
        streams.append((sock, frozenset(filter(None, types.split('+')))))
    return streams


def frame(opcode, payload=b''):
    """One unmasked, unfragmented server frame (RFC 6455, 5.2)."""
    size = len(payload)
    if size < 126:
        head = struct.pack('!BB', 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack('!BBH', 0x80 | opcode, 126, size)
    else:
        head = struct.pack('!BBQ', 0x80 | opcode, 127, size)
    return head + payload


async def read_frame(reader):
    """(opcode, payload) of the client's next frame, unmasked."""
    first, second = await reader.readexactly(2)
    size = second & 0x7f
    if size == 126:
        size, = struct.unpack('!H', await reader.readexactly(2))
    elif size == 127:
        size, = struct.unpack('!Q', await reader.readexactly(8))
    if size > MAX_CLIENT_FRAME:
        raise ValueError('a client frame of %d bytes' % size)
    mask = await reader.readexactly(4) if second & 0x80 else b''
    payload = await reader.readexactly(size)
    if mask:
        payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return first & 0x0f, payload


class AdoptedStream:
    """An events websocket accepted by an earlier image, served on by this one."""

    def __init__(self, sock, types, hub):
        self._sock = sock
        self._types = types
        self._hub = hub
        # at once: events of the new image's start-up (an instance that stopped meanwhile)
        self._subscription = hub.subscribe(types)

    async def run(self):
        subscription = self._subscription
        reader, writer = await asyncio.open_unix_connection(sock=self._sock)
        client = asyncio.ensure_future(self._answer(reader, writer))
        handed_over = False
        try:
            while True:
                getter = asyncio.ensure_future(subscription[0].get())
                done, _ = await asyncio.wait({getter, client}, timeout=HEARTBEAT,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    if client in done:           # the client closed or went away
                        break
                    writer.write(frame(PING))
                elif getter.result() is None:    # the daemon re-executes itself again
                    handed_over = hand_over(writer.transport, self._types, self._hub)
                    if not handed_over:
                        writer.write(frame(CLOSE, struct.pack('!H', SERVICE_RESTART)))
                        await writer.drain()
                    break
                else:
                    writer.write(frame(TEXT, json.dumps(getter.result()).encode()))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            client.cancel()
            self._hub.unsubscribe(subscription)
            if not handed_over:
                writer.close()

    @staticmethod
    async def _answer(reader, writer):
        """Until the client closes or goes away: its pings answered, its close returned."""
        try:
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == PING:
                    writer.write(frame(PONG, payload))
                elif opcode == CLOSE:
                    writer.write(frame(CLOSE, payload[:2]))
                    return
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            return
