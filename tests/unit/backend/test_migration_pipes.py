"""The raw pipes between a migration's stream process and the fs websocket (migration/pipes.py):
real pipes and real child processes, no daemon."""
import asyncio
import fcntl
import hashlib
import os
import sys

import pytest

from nova_lxd.backend.migration import pipes

# a child writing 3 MB and a bit of known bytes to its stdout
WRITER = ('import hashlib, sys\n'
          'data = b"".join(hashlib.sha512(b"%d" % i).digest() for i in range(50000))\n'
          'sys.stdout.buffer.write(data)\n')
EXPECTED = b''.join(hashlib.sha512(b'%d' % i).digest() for i in range(50000))


def test_the_pipe_is_enlarged():
    read_end, write_end = pipes.make_pipe()
    try:
        assert fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ) == pipes.PIPE_SIZE
        assert not os.get_inheritable(read_end) and not os.get_inheritable(write_end)
    finally:
        os.close(read_end)
        os.close(write_end)


async def _pump(send):
    proc, reader = await pipes.with_stdout([sys.executable, '-c', WRITER])
    try:
        total = await reader.pump(send)
    finally:
        reader.close()
    assert await proc.wait() == 0
    return total


def test_reader_sends_the_whole_stream_in_chunks_from_one_buffer():
    received, buffers = [], set()

    async def send(chunk):
        assert 0 < len(chunk) <= pipes.CHUNK
        buffers.add(id(chunk.obj))
        received.append(bytes(chunk))
    total = asyncio.run(_pump(send))
    assert b''.join(received) == EXPECTED and total == len(EXPECTED)
    assert len(received) >= len(EXPECTED) // pipes.CHUNK
    assert len(buffers) == 1        # nothing kept a chunk: the buffer was reused


def test_a_chunk_kept_by_the_sender_is_never_overwritten():
    """A transport that keeps a view of a chunk (its TLS layer not ready) keeps its bytes."""
    kept = []

    async def send(chunk):
        kept.append((chunk, bytes(chunk)))      # the view itself, and what it said when sent
    total = asyncio.run(_pump(send))
    assert total == len(EXPECTED)
    assert all(bytes(view) == copy for view, copy in kept)
    assert b''.join(bytes(view) for view, _ in kept) == EXPECTED


def test_writer_waits_while_the_pipe_is_full(tmp_path):
    out = tmp_path / 'out'

    async def scenario():
        # a slow reader: the first chunks fill the 1 MiB pipe while it sleeps
        proc, writer = await pipes.with_stdin(['sh', '-c', 'sleep 0.3; cat > %s' % out])
        try:
            for start in range(0, len(EXPECTED), 200000):
                await writer.write(EXPECTED[start:start + 200000])
        finally:
            writer.close()
        return await proc.wait()
    assert asyncio.run(scenario()) == 0
    assert out.read_bytes() == EXPECTED


def test_writer_to_a_process_that_stopped_reading_raises_broken_pipe():
    async def scenario():
        proc, writer = await pipes.with_stdin(['true'])
        await proc.wait()
        try:
            with pytest.raises(BrokenPipeError):
                await writer.write(EXPECTED)
        finally:
            writer.close()
    asyncio.run(scenario())


def test_a_command_that_cannot_start_leaves_no_pipe_open():
    def open_fds():
        return set(os.listdir('/proc/self/fd'))

    async def scenario():
        before = open_fds()
        for start in (pipes.with_stdout, pipes.with_stdin):
            with pytest.raises(FileNotFoundError):
                await start(['/nonexistent/stream-tool'])
        return open_fds() - before
    assert asyncio.run(scenario()) == set()
