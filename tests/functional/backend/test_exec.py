"""POST /1.0/instances/{name}/exec: pylxd, the stock `lxc` client and a raw websocket client."""
import asyncio
import json
import os
import signal
import subprocess

import aiohttp
import pylxd
import pytest

from tests.functional.backend.busybox_rootfs import cleanup, create_busybox, host_root
from tests.functional.backend.terminal import wait_until


@pytest.fixture(scope='module')
def running(backend):
    client = backend.client()
    inst = create_busybox(client, backend)
    inst.start(wait=True)
    yield inst
    cleanup(inst)


def _lxc(backend, *args, **kwargs):
    return subprocess.run(['lxc'] + list(args), env=dict(os.environ, LXD_DIR=backend.data_dir),
                          capture_output=True, timeout=60, **kwargs)


def _daemon_pid(backend):
    return backend.process.pid


def _exec_fds(pid):
    """The pipes and terminals the daemon holds: what an exec session opens."""
    found = []
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            target = os.readlink('/proc/%d/fd/%s' % (pid, fd))
        except OSError:
            continue
        if target.startswith('pipe:') or target.startswith('/dev/pts') or target == '/dev/ptmx':
            found.append(target)
    return sorted(found)


def _processes_matching(running, marker):
    out = running.execute(['ps', '-o', 'pid,args'])
    return [line for line in out.stdout.splitlines() if marker in line and 'ps -o' not in line]


# -- pylxd ---------------------------------------------------------------------------------------

def test_pylxd_execute_stdin_env_exit_code(running):
    result = running.execute(['sh', '-c', 'cat; echo "$GREETING"; echo oops >&2; exit 3'],
                             stdin_payload='from stdin\n', environment={'GREETING': 'hello'})
    assert result.exit_code == 3
    assert result.stdout == 'from stdin\nhello\n'
    assert result.stderr == 'oops\n'


def test_runs_as_container_root_in_all_its_namespaces(backend, running):
    init_pid = running.state().pid
    names = ['pid', 'mnt', 'net', 'uts', 'ipc', 'user', 'cgroup']
    script = '; '.join('readlink /proc/self/ns/%s' % n for n in names)
    result = running.execute(['sh', '-c', script + '; id -u; cat /proc/self/cgroup'])
    lines = result.stdout.splitlines()
    assert lines[:len(names)] == [os.readlink('/proc/%d/ns/%s' % (init_pid, n)) for n in names]
    assert lines[len(names)] == '0'
    # every hierarchy: the container's own cgroup (liblxc puts attached processes in the
    # `.lxc` leaf of the unified one, as it does for LXD)
    init_cgroups = running.execute(['cat', '/proc/1/cgroup']).stdout.splitlines()
    ours = lines[len(names) + 1:]
    assert len(ours) == len(init_cgroups)
    for mine, init in zip(ours, init_cgroups):
        assert mine == init or mine.startswith(init.rstrip('/') + '/.lxc'), (mine, init)
    # the container's root is not the host's root
    uid_map = running.execute(['cat', '/proc/self/uid_map']).stdout.split()
    assert uid_map[:2] == ['0', str(host_root()[0])] and uid_map[1] != '0'


def test_command_gets_default_signal_dispositions(running):
    """The daemon (Python) ignores SIGPIPE; `yes | head` must still end."""
    result = running.execute(['sh', '-c', 'yes | head -n 2; grep SigIgn /proc/self/status'])
    assert result.stdout.startswith('y\ny\n')
    ignored = int(result.stdout.split()[-1], 16)
    assert not ignored & (1 << (13 - 1))   # SIGPIPE


def test_user_group_cwd(running):
    result = running.execute(['sh', '-c', 'id -u; id -g; pwd'], user=1000, group=1001, cwd='/tmp')
    assert result.stdout.split() == ['1000', '1001', '/tmp']
    assert running.execute(['pwd']).stdout == '/root\n'


def test_command_not_found_is_exit_127(running):
    result = running.execute(['/no/such/binary'])
    assert result.exit_code == 127
    assert 'no/such/binary' in result.stderr


def test_command_that_never_reads_stdin(backend, running):
    before = _exec_fds(_daemon_pid(backend))
    result = running.execute(['sh', '-c', 'echo done'], stdin_payload=b'x' * (4 << 20))
    assert (result.exit_code, result.stdout) == (0, 'done\n')
    assert wait_until(lambda: _exec_fds(_daemon_pid(backend)) == before)


def test_large_output(running):
    result = running.execute(['sh', '-c', 'head -c 3000000 /dev/zero | tr "\\0" a'])
    assert result.stdout == 'a' * 3000000


def test_bad_requests(client, running):
    exec_api = client.api.instances[running.name].exec
    resp = exec_api.session.post(exec_api._api_endpoint, json={'command': 'ls'})
    assert resp.status_code == 400 and 'command' in resp.json()['error']
    resp = exec_api.session.post(exec_api._api_endpoint, json={'command': ['ls'], 'user': -1})
    assert resp.status_code == 400
    too_long = {'command': ['echo', 'x' * (3 << 19)]}
    resp = exec_api.session.post(exec_api._api_endpoint, json=too_long)
    assert resp.status_code == 400 and 'too long' in resp.json()['error']
    missing = client.api.instances['no-such-instance'].exec
    resp = missing.session.post(missing._api_endpoint, json={'command': ['ls']})
    assert resp.status_code == 404


def test_stopped_instance_is_refused(client, backend):
    inst = create_busybox(client, backend)
    try:
        with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
            inst.execute(['true'])
        assert 'not running' in str(err.value)
    finally:
        cleanup(inst)


def test_detached_with_recorded_output(client, running):
    resp = client.api.instances[running.name].exec.post(json={
        'command': ['sh', '-c', 'echo to-out; echo to-err >&2; exit 4'],
        'wait-for-websocket': False, 'record-output': True, 'interactive': False})
    op = client.operations.wait_for_operation(resp.json()['operation'])
    assert op.metadata['return'] == 4
    outputs = op.metadata['output']
    base = client.api._api_endpoint[:-len('/1.0')]
    out = client.api.session.get(base + outputs['1'])
    err = client.api.session.get(base + outputs['2'])
    assert (out.content, err.content) == (b'to-out\n', b'to-err\n')
    logs = client.api.instances[running.name].logs.get().json()['metadata']
    assert outputs['1'] in logs and outputs['2'] in logs


# -- a raw websocket client: control messages, a client that vanishes --------------------------

async def _raw_exec(backend, name, body):
    connector = aiohttp.UnixConnector(path=backend.socket)
    session = aiohttp.ClientSession(connector=connector)
    async with session.post('http://lxd/1.0/instances/%s/exec' % name, json=body) as resp:
        op = (await resp.json())['metadata']
    sockets = {}
    for fd, secret in op['metadata']['fds'].items():
        sockets[fd] = await session.ws_connect(
            'http://lxd/1.0/operations/%s/websocket?secret=%s' % (op['id'], secret))
    return session, op['id'], sockets


async def _wait_op(session, op_id):
    async with session.get('http://lxd/1.0/operations/%s/wait?timeout=30' % op_id) as resp:
        return (await resp.json())['metadata']


def test_signal_through_control_socket(backend, running):
    async def scenario():
        session, op_id, ws = await _raw_exec(backend, running.name, {
            'command': ['sh', '-c', 'echo started; exec sleep 300'],
            'wait-for-websocket': True, 'interactive': False})
        try:
            msg = await ws['1'].receive(timeout=20)
            assert msg.data == b'started\n'
            await ws['control'].send_str(json.dumps({'command': 'signal', 'signal': 15}))
            return await _wait_op(session, op_id)
        finally:
            for sock in ws.values():
                await sock.close()
            await session.close()
    op = asyncio.run(scenario())
    assert op['status'] == 'Success'
    assert op['metadata']['return'] == 128 + 15


def test_client_vanishing_mid_stream_leaves_nothing(backend, running):
    marker = 'vanish%d' % os.getpid()
    before = _exec_fds(_daemon_pid(backend))

    async def scenario():
        session, op_id, ws = await _raw_exec(backend, running.name, {
            'command': ['sh', '-c', 'M=%s; (sleep 600; echo child) & while :; do echo tick; '
                        'sleep 0.1; done' % marker],
            'wait-for-websocket': True, 'interactive': False})
        msg = await ws['1'].receive(timeout=20)
        assert msg.data.startswith(b'tick')
        assert _processes_matching(running, marker)
        await session.close()   # every socket drops at once, mid-stream, without a close frame
        check = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=backend.socket))
        try:
            return await _wait_op(check, op_id)
        finally:
            await check.close()
    op = asyncio.run(scenario())
    assert op['status_code'] == 200
    assert op['metadata']['return'] == 128 + 9
    # neither the command nor the child it started survive; the daemon holds no pipe of it
    assert wait_until(lambda: not _processes_matching(running, marker))
    assert wait_until(lambda: _exec_fds(_daemon_pid(backend)) == before)
    ops = running.client.api.operations.get(params={'recursion': 1}).json()['metadata']
    assert not [op for op in ops.get('running', []) if op['description'] == 'Executing command']


# -- the stock `lxc` client ----------------------------------------------------------------------

def test_lxc_exec_non_interactive(backend, running):
    out = _lxc(backend, 'exec', running.name, '--', 'sh', '-c', 'echo out; echo err >&2; exit 5',
               stdin=subprocess.DEVNULL)
    assert out.returncode == 5
    assert (out.stdout, out.stderr) == (b'out\n', b'err\n')
    out = _lxc(backend, 'exec', running.name, '--', 'sh', '-c', 'tr a-z A-Z', input=b'piped\n')
    assert (out.returncode, out.stdout) == (0, b'PIPED\n')
    out = _lxc(backend, 'exec', running.name, '--cwd', '/tmp', '--user', '7', '--env', 'A=b',
               '--', 'sh', '-c', 'pwd; id -u; echo $A', stdin=subprocess.DEVNULL)
    assert out.stdout.split() == [b'/tmp', b'7', b'b'], out.stderr


def test_forced_stop_during_exec(client, backend):
    """A forced stop while an exec runs completes, and the exec ends with it.

    The container's init waits for the exec'd command to be reaped: the daemon, blocked in the
    stop, must not be the one to reap it.
    """
    inst = create_busybox(client, backend)
    try:
        inst.start(wait=True)

        async def scenario():
            session, op_id, ws = await _raw_exec(backend, inst.name, {
                'command': ['sh', '-c', 'echo started; exec sleep 300'],
                'wait-for-websocket': True, 'interactive': False})
            try:
                msg = await ws['1'].receive(timeout=20)
                assert msg.data == b'started\n'
                stop = await asyncio.to_thread(_lxc, backend, 'stop', '--force', inst.name)
                return stop, await _wait_op(session, op_id)
            finally:
                for sock in ws.values():
                    await sock.close()
                await session.close()
        stop, op = asyncio.run(scenario())
        assert stop.returncode == 0, stop.stderr
        assert op['metadata']['return'] == 128 + 9
        assert inst.api.state.get().json()['metadata']['status'] == 'Stopped'
    finally:
        cleanup(inst)


def _host_pids_running(argv0, marker):
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                args = f.read().split(b'\0')
        except OSError:
            continue
        if args[0] == argv0 and marker in args:
            found.append(int(pid))
    return found


def _ppid(pid):
    with open('/proc/%d/status' % pid) as f:
        return int(next(line for line in f if line.startswith('PPid:')).split()[1])


def test_commands_are_started_by_the_helper_not_the_daemon(backend, running):
    """The command's parent is a single-threaded helper process, never the daemon.

    liblxc attach from the daemon's own threads once froze it.
    """
    marker = b'helper%d' % os.getpid()
    resp = running.client.api.instances[running.name].exec.post(json={
        'command': ['sh', '-c', 'sleep 30; :', marker.decode()], 'wait-for-websocket': False})
    op_id = resp.json()['operation'].split('/')[-1]
    try:
        assert wait_until(lambda: _host_pids_running(b'sh', marker))
        [pid] = _host_pids_running(b'sh', marker)
        parent = _ppid(pid)
        assert parent != _daemon_pid(backend)
        with open('/proc/%d/cmdline' % parent, 'rb') as f:
            assert b'nova_lxd.backend.instances.attach' in f.read()
        assert len(os.listdir('/proc/%d/task' % parent)) == 1   # one thread: fork-safe
        assert _ppid(_ppid(parent)) == _daemon_pid(backend)     # helper child <- helper <- daemon
    finally:
        for pid in _host_pids_running(b'sh', marker):
            os.killpg(pid, signal.SIGTERM)   # its own group (setsid): sh and its sleep
    op = running.client.operations.wait_for_operation(op_id)
    assert op.metadata['return'] == 128 + 15
