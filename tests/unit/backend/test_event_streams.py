"""An events stream served on by a new image of the daemon (backend/event_streams.py).

The stream runs over a real socket pair: one end is what the previous image handed over, the
other the client, which writes masked frames and reads the daemon's as RFC 6455 defines them.
The whole re-exec with a real websocket client is in tests/functional/backend/test_restart.py.
"""
import asyncio
import json
import os
import socket
import struct

from nova_lxd.backend import event_streams, events


def _masked(opcode, payload):
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return struct.pack('!BB', 0x80 | opcode, 0x80 | len(payload)) + mask + body


async def _adopted(types=frozenset({'lifecycle'})):
    hub = events.EventHub()
    daemon_end, client_end = socket.socketpair()
    stream = event_streams.AdoptedStream(daemon_end, types, hub)
    task = asyncio.ensure_future(stream.run())
    reader, writer = await asyncio.open_unix_connection(sock=client_end)
    while not hub.listener_count():
        await asyncio.sleep(0.01)
    return hub, task, reader, writer


def test_frames_of_every_length_read_back():
    async def scenario():
        reader = asyncio.StreamReader()
        for size in (0, 125, 126, 65535, 65536):
            reader.feed_data(event_streams.frame(event_streams.TEXT, b'x' * size))
        reader.feed_eof()
        return [(opcode, len(payload)) for opcode, payload in
                [await event_streams.read_frame(reader) for _ in range(5)]]
    assert asyncio.run(scenario()) == [(1, 0), (1, 125), (1, 126), (1, 65535), (1, 65536)]


def test_events_of_the_wanted_types_as_text_frames_and_pings_answered():
    async def scenario():
        hub, task, reader, writer = await _adopted()
        hub.send('logging', {'message': 'not wanted'})
        hub.lifecycle('instance-started', '/1.0/instances/c1')
        opcode, payload = await asyncio.wait_for(event_streams.read_frame(reader), 5)
        writer.write(_masked(event_streams.PING, b'still there?'))
        pong = await asyncio.wait_for(event_streams.read_frame(reader), 5)
        writer.write(_masked(event_streams.CLOSE, struct.pack('!H', 1000)))
        close = await asyncio.wait_for(event_streams.read_frame(reader), 5)
        await asyncio.wait_for(task, 5)
        return opcode, json.loads(payload), pong, close, hub.listener_count()
    opcode, event, pong, close, listeners = asyncio.run(scenario())
    assert opcode == event_streams.TEXT
    assert event['type'] == 'lifecycle'
    assert event['metadata']['action'] == 'instance-started'
    assert pong == (event_streams.PONG, b'still there?')
    assert close == (event_streams.CLOSE, struct.pack('!H', 1000))
    assert listeners == 0                           # the client's close ended the stream


def test_a_client_going_away_ends_the_stream():
    async def scenario():
        hub, task, reader, writer = await _adopted()
        writer.close()
        await asyncio.wait_for(task, 5)
        return hub.listener_count()
    assert asyncio.run(scenario()) == 0


def test_a_restart_hands_the_stream_over_again_without_a_byte():
    async def scenario():
        hub, task, reader, writer = await _adopted(frozenset({'lifecycle', 'operation'}))
        hub.restarting()
        await asyncio.wait_for(task, 5)
        (fd, types), = hub.kept
        # the next image writes to the same connection; the client saw nothing before it
        with socket.socket(fileno=fd) as kept:
            kept.sendall(event_streams.frame(event_streams.TEXT, b'{}'))
            frame = await asyncio.wait_for(event_streams.read_frame(reader), 5)
        writer.close()
        return types, frame, event_streams.handover(hub.kept)
    types, frame, env = asyncio.run(scenario())
    assert types == {'lifecycle', 'operation'}
    assert frame == (event_streams.TEXT, b'{}')
    assert env.endswith(':lifecycle+operation')


def test_inherited_streams_are_read_from_the_environment_once(monkeypatch):
    first, second = socket.socketpair()
    fd = os.dup(first.fileno())
    first.close()
    monkeypatch.setenv(event_streams.HANDOVER_ENV, '%d:lifecycle+logging' % fd)
    (sock, types), = event_streams.inherited()
    assert types == {'lifecycle', 'logging'} and not sock.get_inheritable()
    assert event_streams.inherited() == []          # the entry is gone from the environment
    sock.sendall(b'ok')
    assert second.recv(2) == b'ok'
    sock.close()
    second.close()


class _Transport:
    """What hand_over asks of an aiohttp connection's transport."""

    def __init__(self, sock, ssl=None, unsent=0):
        self.extra = {'socket': sock, 'sslcontext': ssl}
        self.unsent = unsent
        self.aborted = False

    def get_extra_info(self, name):
        return self.extra.get(name)

    def get_write_buffer_size(self):
        return self.unsent

    def abort(self):
        self.aborted = True


def test_tls_streams_and_unsent_bytes_are_not_handed_over():
    hub = events.EventHub()
    unix, peer = socket.socketpair()
    tcp = socket.socket()
    try:
        for transport in (_Transport(unix, ssl=object()), _Transport(unix, unsent=10),
                          _Transport(tcp)):
            assert not event_streams.hand_over(transport, frozenset({'lifecycle'}), hub)
            assert not transport.aborted
        assert hub.kept == []
        plain = _Transport(unix)
        assert event_streams.hand_over(plain, frozenset({'lifecycle'}), hub)
        assert plain.aborted and len(hub.kept) == 1
        os.close(hub.kept[0][0])
    finally:
        for sock in (unix, peer, tcp):
            sock.close()
