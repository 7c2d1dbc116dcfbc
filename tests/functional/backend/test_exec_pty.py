"""Interactive exec: a terminal of the container's own devpts, window sizes, signals, Ctrl-C.

Driven by the stock `lxc` client on a real pseudo-terminal, by pylxd's interactive websocket API
and by a raw websocket client; after each, nothing of the session is left on the host.
"""
import asyncio
import json
import os
import re
import signal
import time

import aiohttp
import pytest

from tests.functional.backend.busybox_rootfs import cleanup, create_busybox
from tests.functional.backend.terminal import Terminal, wait_until

TTY_RE = re.compile(rb'\nTTY=(\S+)\r')


@pytest.fixture(scope='module')
def running(backend):
    inst = create_busybox(backend.client(), backend)
    inst.start(wait=True)
    yield inst
    cleanup(inst)


def _children(pid):
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode()
    except FileNotFoundError:
        return ''


def _session_leftovers(backend):
    """What an exec session may leave on the host.

    The helper's per-command children (each supervises a command), terminals and pidfds the
    daemon still holds (but those of containers' liblxc monitors, which it watches while they run).
    """
    daemon = backend.process.pid
    left = []
    for child in _children(daemon):
        if 'nova_lxd.backend.instances.attach' in _cmdline(child):
            left += ['helper child %d: %s' % (p, _cmdline(p)) for p in _children(child)]
    for fd in os.listdir('/proc/%d/fd' % daemon):
        try:
            target = os.readlink('/proc/%d/fd/%s' % (daemon, fd))
        except OSError:
            continue
        if 'pidfd' in target and _cmdline(_pidfd_pid(daemon, fd)).startswith('[lxc monitor]'):
            continue
        if target.startswith('/dev/pts') or target == '/dev/ptmx' or 'pidfd' in target:
            left.append('daemon fd %s -> %s' % (fd, target))
    return left


def _pidfd_pid(pid, fd):
    """The process a pidfd of process `pid` refers to (its fdinfo's Pid line), or 0."""
    try:
        with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
            for line in f:
                if line.startswith('Pid:'):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _container_processes(running, marker):
    out = running.execute(['ps', '-o', 'pid,args']).stdout
    return [line for line in out.splitlines() if marker in line and 'ps -o' not in line]


def _assert_nothing_left(backend, running, marker):
    assert wait_until(lambda: not _container_processes(running, marker)), \
        _container_processes(running, marker)
    assert wait_until(lambda: not _session_leftovers(backend)), _session_leftovers(backend)


# -- the stock `lxc` client on a real terminal ---------------------------------------------------

def test_lxc_exec_terminal_is_the_containers_own(backend, running):
    marker = 'ptyshell%d' % os.getpid()
    term = Terminal(backend, 'exec', running.name, '--', 'sh', '-c', 'M=%s; sh; exit $?' % marker,
                    rows=31, cols=97)
    try:
        term.send(b'echo TTY=$(tty); stty size; echo ONE$((0+1))\n')
        assert term.read_until(rb'ONE1'), term.output
        tty = TTY_RE.search(term.output).group(1).decode()
        assert re.fullmatch(r'/dev/pts/\d+', tty), term.output
        assert b'31 97' in term.output
        # the name is the container's: it exists there and is this terminal
        term.send(b'[ "$(stat -L -c %t:%T /proc/self/fd/0)" = "$(stat -c %t:%T ' +
                  tty.encode() + b')" ] && echo SAME$((1+1))\n')
        assert term.read_until(rb'SAME2'), term.output
        # a resize of the user's terminal reaches the command (control: window-resize)
        term.resize(44, 132)
        assert term.read_until(rb'44 132', timeout=0.1) is None
        deadline = time.monotonic() + 20
        while not term.read_until(rb'44 132', timeout=1) and time.monotonic() < deadline:
            term.send(b'stty size\n')
        assert re.search(rb'44 132', term.output), term.output
        # job control: Ctrl-C ends the foreground `sleep`, the shell carries on
        term.send(b'sleep 300; echo AFTER$((1+1))\n')
        assert wait_until(lambda: any('sleep 300' in p for p in
                                      _container_processes(running, 'sleep 300')))
        term.send(b'\x03')
        term.send(b'echo BACK$((2+2))\n')
        assert term.read_until(rb'BACK4'), term.output
        assert b'AFTER2' not in term.output
        assert not _container_processes(running, 'sleep 300')
        term.send(b'exit 6\n')
    except BaseException:
        os.kill(term.pid, signal.SIGKILL)
        term.wait()
        raise
    assert term.wait() == 6
    _assert_nothing_left(backend, running, marker)


def test_lxc_exec_client_killed_leaves_nothing(backend, running):
    marker = 'ptykill%d' % os.getpid()
    term = Terminal(backend, 'exec', running.name, '--', 'sh', '-c',
                    'M=%s; sleep 600 & echo READY; sh; exit $?' % marker, rows=25, cols=80)
    try:
        assert term.read_until(rb'READY'), term.output
        assert _container_processes(running, marker)
    finally:
        os.kill(term.pid, signal.SIGKILL)   # the user's client vanishes without a word
        term.wait()
    _assert_nothing_left(backend, running, marker)
    _assert_nothing_left(backend, running, 'sleep 600')


# -- the websocket API: pylxd and a raw client ---------------------------------------------------

async def _connect(backend, path):
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=backend.socket))
    return session, await session.ws_connect('http://lxd' + path)


async def _read_until(ws, pattern, seen=b'', timeout=20):
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen):
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type != aiohttp.WSMsgType.BINARY:
            break
        seen += msg.data
    return seen


async def _op_result(backend, op_id):
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=backend.socket))
    try:
        url = 'http://lxd/1.0/operations/%s/wait?timeout=30' % op_id
        async with session.get(url) as resp:
            return (await resp.json())['metadata']
    finally:
        await session.close()


def test_pylxd_interactive_execute(backend, running):
    """pylxd's interactive API: a terminal socket and a control socket (window-resize)."""
    marker = 'pylxdpty%d' % os.getpid()
    fds = running.raw_interactive_execute(['sh', '-c', 'M=%s; sh; exit $?' % marker])
    op_id = fds['ws'].split('/')[3]

    async def scenario():
        s1, term = await _connect(backend, fds['ws'])
        s2, control = await _connect(backend, fds['control'])
        try:
            await term.send_bytes(b'echo TTY=$(tty); stty size; echo ONE$((0+1))\n')
            seen = await _read_until(term, rb'ONE1')
            await control.send_str(json.dumps({'command': 'window-resize',
                                               'args': {'width': '150', 'height': '50'}}))
            await asyncio.sleep(0.3)   # the control and terminal sockets are not ordered
            await term.send_bytes(b'stty size; echo TWO$((1+1))\n')
            seen = await _read_until(term, rb'TWO2', seen)
            await term.send_bytes(b'exit 3\n')
            return seen, await _op_result(backend, op_id)
        finally:
            for ws, session in ((term, s1), (control, s2)):
                await ws.close()
                await session.close()
    seen, op = asyncio.run(scenario())
    assert re.search(rb'TTY=/dev/pts/\d+\s', seen), seen
    assert b'25 80' in seen   # pylxd's request gives no size: LXD's 80x25
    assert b'50 150' in seen, seen
    assert op['status'] == 'Success' and op['metadata']['return'] == 3
    _assert_nothing_left(backend, running, marker)


def test_raw_interactive_size_and_signals(backend, running):
    """The request's width and height; a signal through the control socket ends the command."""
    async def scenario():
        session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=backend.socket))
        try:
            async with session.post('http://lxd/1.0/instances/%s/exec' % running.name, json={
                    'command': ['sh', '-c', 'echo TTY=$(tty); stty size; exec sleep 300'],
                    'interactive': True, 'wait-for-websocket': True,
                    'width': 123, 'height': 45}) as resp:
                op = (await resp.json())['metadata']
            base = 'http://lxd/1.0/operations/%s/websocket?secret=' % op['id']
            term = await session.ws_connect(base + op['metadata']['fds']['0'])
            control = await session.ws_connect(base + op['metadata']['fds']['control'])
            seen = await _read_until(term, rb'\d+ \d+\s')
            await control.send_str(json.dumps({'command': 'signal', 'signal': 2}))   # SIGINT
            result = await _op_result(backend, op['id'])
            await term.close()
            await control.close()
            return seen, result
        finally:
            await session.close()
    seen, op = asyncio.run(scenario())
    assert re.search(rb'TTY=/dev/pts/\d+\s', seen), seen
    assert b'45 123' in seen
    assert op['metadata']['return'] == 128 + signal.SIGINT
    _assert_nothing_left(backend, running, 'sleep 300')


def test_symlinked_devpts_never_opens_a_host_file(backend, running):
    """A symlink at the container's /dev/pts/ptmx never sends the daemon to a host path.

    The container's root owns /dev/pts; an absolute link would resolve against the host's root.
    """
    setup = running.execute(['sh', '-c', 'mount -t tmpfs none /dev/pts && '
                             'ln -s /etc/hostname /dev/pts/ptmx && echo OK'])
    assert setup.stdout == 'OK\n', setup.stderr
    try:
        async def scenario():
            session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=backend.socket))
            try:
                async with session.post('http://lxd/1.0/instances/%s/exec' % running.name,
                                        json={'command': ['sh', '-c', 'test -t 0 && echo ISTTY;'
                                                          ' readlink /proc/self/fd/0; echo END'],
                                              'interactive': True,
                                              'wait-for-websocket': True}) as resp:
                    op = (await resp.json())['metadata']
                base = 'http://lxd/1.0/operations/%s/websocket?secret=' % op['id']
                term = await session.ws_connect(base + op['metadata']['fds']['0'])
                seen = await _read_until(term, rb'END')
                result = await _op_result(backend, op['id'])
                await term.close()
                return seen, result
            finally:
                await session.close()
        seen, op = asyncio.run(scenario())
        assert op['metadata']['return'] == 0
        assert b'ISTTY' in seen, seen   # a terminal still (the host's, as LXD falls back to)
        assert b'hostname' not in seen and b'ptmx' not in seen, seen
    finally:
        running.execute(['umount', '/dev/pts'])
    assert running.execute(['sh', '-c', 'test -c /dev/pts/ptmx']).exit_code == 0
