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


def test_arenas_can_be_capped_on_glibc():
    # a separate process: the cap is for the whole process, set before its threads start
    import subprocess
    import sys
    code = ('from nova_lxd.backend import memory; import sys; '
            'sys.exit(0 if memory.limit_arenas(2) else 1)')
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0
