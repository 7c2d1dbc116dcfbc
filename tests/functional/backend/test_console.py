"""/1.0/instances/{name}/console: the log (GET, DELETE) and the console websocket (POST)."""
import os
import subprocess
import time

import pytest

from tests.functional.backend.busybox_rootfs import cleanup, create_busybox
from tests.functional.backend.terminal import Terminal, wait_until


@pytest.fixture
def running(backend):
    inst = create_busybox(backend.client(), backend)
    inst.start(wait=True)
    yield inst
    cleanup(inst)


def _lxc(backend, *args):
    return subprocess.run(['lxc'] + list(args), env=dict(os.environ, LXD_DIR=backend.data_dir),
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def _console_clients(name):
    """lxc-console processes serving this instance (the daemon's console helpers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if argv and argv[0] == b'lxc-console' and name.encode() in argv:
            found.append(pid)
    return found


def _log(client, name):
    return client.api.instances[name].console.get().content


def _detach(term):
    """ctrl+a, then q: `lxc console` detaches (it wants the two keys in separate reads)."""
    term.send(b'\x01')
    time.sleep(0.3)
    term.send(b'q')
    assert term.wait() == 0


def test_log_show_and_clear(backend, client, running):
    running.execute(['sh', '-c', 'echo MARK-ONE > /dev/console'])
    assert wait_until(lambda: b'MARK-ONE' in _log(client, running.name))
    out = _lxc(backend, 'console', running.name, '--show-log')
    assert out.returncode == 0, out.stderr
    assert b'MARK-ONE' in out.stdout
    client.api.instances[running.name].console.delete()
    assert b'MARK-ONE' not in _log(client, running.name)
    running.execute(['sh', '-c', 'echo MARK-TWO > /dev/console'])
    assert wait_until(lambda: b'MARK-TWO' in _log(client, running.name))   # still logging


def test_interactive_console_with_lxc(backend, running):
    term = Terminal(backend, 'console', running.name)
    try:
        assert term.read_until(b'Connected to tty 0'), term.output
        assert _console_clients(running.name)
        running.execute(['sh', '-c', 'echo HELLO-TERMINAL > /dev/console'])
        assert term.read_until(b'HELLO-TERMINAL'), term.output
    finally:
        _detach(term)
    # detaching ends the daemon's console helper; a second session works
    assert wait_until(lambda: not _console_clients(running.name))
    term = Terminal(backend, 'console', running.name)
    try:
        assert term.read_until(b'Connected to tty 0'), term.output
        running.execute(['sh', '-c', 'echo AGAIN-TERMINAL > /dev/console'])
        assert term.read_until(b'AGAIN-TERMINAL'), term.output
    finally:
        _detach(term)
    assert wait_until(lambda: not _console_clients(running.name))


def test_refusals(client, backend):
    inst = create_busybox(client, backend)
    try:
        api = client.api.instances[inst.name].console
        resp = api.session.post(api._api_endpoint, json={'type': 'console'})
        assert resp.status_code == 400 and 'not running' in resp.json()['error']
        resp = api.session.post(api._api_endpoint, json={'type': 'vga'})
        assert resp.status_code == 400
    finally:
        cleanup(inst)
    missing = client.api.instances['no-such-instance'].console
    assert missing.session.delete(missing._api_endpoint).status_code == 404
