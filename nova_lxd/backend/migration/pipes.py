"""A volume stream's process (btrfs send/receive, tar) wired to the fs websocket by raw pipes.

asyncio's subprocess streams were most of the daemons' CPU in a 200 MB move: their 64 KiB pipes
woke both sides every 64 KiB, each read allocated a fresh 256 KiB buffer (at the daemon's fixed
mmap threshold: an mmap, page faults and an munmap per read), and what a write could not put in
the pipe at once was copied into the transport's buffer. Here the pipe holds 1 MiB
(pipe-max-size's default), the source reads into one buffer it reuses while nothing else holds
it, and the sink writes the websocket's frames straight into the pipe.
"""
import asyncio
import fcntl
import os

PIPE_SIZE = 1 << 20      # /proc/sys/fs/pipe-max-size's default
# The fs websocket's frames: below the daemon's mmap threshold (memory.MMAP_THRESHOLD), since
# the layers between us and the socket copy each frame into buffers of its size (TLS output,
# the peer's websocket reader). Moving 200 MB, 1 MiB frames cost the receiving daemon 0.8-0.9
# CPU-seconds, mostly fresh mappings and their page faults; 128 KiB frames 0.4-0.5.
CHUNK = 128 << 10


def make_pipe():
    """(read end, write end), close-on-exec, enlarged when the kernel lets it."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass     # a lower pipe-max-size: the default 64 KiB pipe is only slower
    return read_end, write_end


async def _spawn(cmd, stdin=None, stdout=None):
    """Start cmd with the given pipe ends (closed here once the child has them); stderr piped."""
    try:
        return await asyncio.create_subprocess_exec(
            *cmd, stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=stdout if stdout is not None else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
    finally:
        for fd in (stdin, stdout):
            if fd is not None:
                os.close(fd)


async def with_stdout(cmd):
    """Start cmd writing to a pipe; (process, Reader of its stdout)."""
    return await _start(cmd, to_stdin=False)


async def with_stdin(cmd):
    """Start cmd reading from a pipe; (process, Writer to its stdin)."""
    return await _start(cmd, to_stdin=True)


async def _start(cmd, to_stdin):
    read_end, write_end = make_pipe()
    ours = Writer(write_end) if to_stdin else Reader(read_end)
    try:
        if to_stdin:
            proc = await _spawn(cmd, stdin=read_end)
        else:
            proc = await _spawn(cmd, stdout=write_end)
    except BaseException:
        ours.close()
        raise
    return proc, ours


async def _ready(fd, writing):
    """Wait until fd can be read (or written) without blocking."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writing else \
        (loop.add_reader, loop.remove_reader)
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


class Reader:
    """Reads a pipe in chunks of up to CHUNK bytes, into one buffer reused between chunks."""

    def __init__(self, fd, chunk=CHUNK):
        os.set_blocking(fd, False)
        self.fd = fd
        self._chunk = chunk
        self._buffer = bytearray(chunk)

    def _free_buffer(self):
        """A buffer no one else holds a view of.

        A bytearray with a live export cannot be resized: if the transport below the websocket
        kept a view of the last chunk (its TLS layer was not ready to encrypt it), that chunk is
        left to it and a new buffer is taken.
        """
        try:
            self._buffer.append(0)
            del self._buffer[-1]
        except BufferError:
            self._buffer = bytearray(self._chunk)
        return self._buffer

    async def _fill(self, buffer):
        """Bytes read into buffer: as many as are there (at least one), 0 at the end."""
        filled = 0
        with memoryview(buffer) as whole:
            while filled < self._chunk:
                try:
                    count = os.readv(self.fd, [whole[filled:self._chunk]])
                except BlockingIOError:
                    if filled:
                        break       # send what there is rather than wait for a full chunk
                    await _ready(self.fd, writing=False)
                    continue
                if count == 0:
                    break
                filled += count
        return filled

    async def pump(self, send):
        """await send(chunk) for each chunk up to the end of the stream; the bytes sent."""
        total = 0
        while True:
            buffer = self._free_buffer()
            filled = await self._fill(buffer)
            if not filled:
                return total
            with memoryview(buffer) as whole:
                await send(whole[:filled])
            total += filled

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Writer:
    """Writes whole chunks to a pipe, waiting while it is full."""

    def __init__(self, fd):
        os.set_blocking(fd, False)
        self.fd = fd

    async def write(self, data):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await _ready(self.fd, writing=True)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
