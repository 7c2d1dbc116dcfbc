"""The daemon's memory given back after a burst (backend/memory.py): real glibc, no daemon."""
import asyncio
import ctypes

from nova_lxd.backend import memory

MB = 1 << 20


def test_give_back_returns_a_freed_heap_to_the_system():
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # 48 MB in 64 KB blocks (under glibc's mmap threshold: on the heap), touched so they are
    # resident; the last one stays allocated, so glibc cannot shrink the heap from its top
    blocks = [libc.malloc(64 * 1024) for _ in range(768)]
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    for block in blocks[:-1]:
        libc.free(block)
    try:
        assert memory.give_back() > 32 * MB
    finally:
        libc.free(blocks[-1])


def test_idle_trimmer_trims_once_after_a_burst_and_not_when_idle():
    async def scenario():
        trimmer = memory.IdleTrimmer(asyncio.get_running_loop(), delay=0.05)
        await asyncio.sleep(0.3)
        untouched = trimmer.trims          # no operation ran: nothing to give back
        for _ in range(5):                 # a burst: the trim waits for its end
            trimmer.activity()
            await asyncio.sleep(0.01)
        for _ in range(200):
            if trimmer.trims:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        trimmer.cancel()
        return untouched, trimmer.trims
    assert asyncio.run(scenario()) == (0, 1)


def test_activity_after_the_loop_closed_is_ignored():
    loop = asyncio.new_event_loop()
    trimmer = memory.IdleTrimmer(loop, delay=0.05)
    loop.close()
    trimmer.activity()
    assert trimmer.trims == 0


TUNED_PROCESS = """
import ctypes, sys
from nova_lxd.backend import memory
if not memory.tune_malloc():
    sys.exit('tune_malloc refused')
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))   # untuned, glibc would now serve up to 8 MB from its heap
block = libc.malloc(1 << 20)
mapped = memory.malloc_summary()['mmapped']
libc.free(block)
if mapped < 1:
    sys.exit('a 1 MB block came from the heap (%.1f MB mmapped)' % mapped)
# asyncio's TLS reads allocate max_size for each record: below the threshold, on the heap
import asyncio.sslproto
size = asyncio.sslproto.SSLProtocol.max_size
sys.exit(0 if size < memory.MMAP_THRESHOLD else 'TLS reads of %d bytes' % size)
"""


def test_tuned_malloc_keeps_large_blocks_out_of_the_heap():
    # a separate process: the settings are for the whole process, made before threads start
    import subprocess
    import sys
    result = subprocess.run([sys.executable, '-c', TUNED_PROCESS], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_sigusr2_logs_memory_and_does_not_end_the_daemon(caplog, tmp_path, monkeypatch):
    import logging
    import os
    import signal
    monkeypatch.delenv('NOVA_LXD_TRACEMALLOC', raising=False)

    async def scenario():
        memory.report_on_signal(asyncio.get_running_loop(), str(tmp_path))
        os.kill(os.getpid(), signal.SIGUSR2)     # unhandled, this would end the test run
        for _ in range(100):
            if 'RSS' in caplog.text:
                break
            await asyncio.sleep(0.01)
    with caplog.at_level(logging.INFO, logger=memory.__name__):
        asyncio.run(scenario())      # closing the loop removes its handler
    assert 'Memory: RSS' in caplog.text
    assert not list(tmp_path.iterdir())      # no snapshot without tracing


def test_idle_trimmer_trims_again_once_idle_connections_have_closed():
    async def scenario():
        # late well after the first: a trim still running when the next is due is skipped
        trimmer = memory.IdleTrimmer(asyncio.get_running_loop(), delay=0.05, late=1.5)
        trimmer.activity()
        for _ in range(200):               # polled: a loaded host runs the trims late
            if trimmer.trims >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)           # and no third one without new activity
        trimmer.cancel()
        return trimmer.trims
    assert asyncio.run(scenario()) == 2
