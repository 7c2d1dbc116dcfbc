"""Re-executing the daemon in place (backend/recycle.py, listeners.py): when, and the sockets.

The exec itself and the daemon around it are covered by tests/functional/backend/test_restart.py;
here a stand-in daemon records what the recycler asks of it, and the exec is replaced.
"""
import asyncio
import os
import socket

import pytest

from nova_lxd.backend import events, listeners, memory, recycle

MB = 1 << 20


class _Daemon:
    def __init__(self, quiet=True, work_arrives=False):
        self.is_quiet = quiet
        self.work_arrives = work_arrives     # a client connects while the listeners pause
        self.calls = []

    def quiet(self):
        return self.is_quiet

    async def pause_listeners(self):
        self.calls.append('pause')
        if self.work_arrives:
            self.is_quiet = False
        return {'unix': 'kept'}

    async def resume_listeners(self, kept):
        self.calls.append(('resume', kept))

    async def hand_over_event_listeners(self, timeout):
        self.calls.append('hand over events')
        return [(7, frozenset({'lifecycle'}))]

    async def stop(self, keep_socket=False):
        self.calls.append(('stop', keep_socket))


@pytest.fixture
def rss(monkeypatch):
    value = {'now': 60 * MB}
    monkeypatch.setattr(memory, 'rss_bytes', lambda: value['now'])
    return value


@pytest.fixture
def execs(monkeypatch):
    done = []
    monkeypatch.setattr(recycle, '_exec', lambda kept, streams: done.append((kept, streams)))
    return done


def _serving(daemon, rss, growth_mb=16, grown_mb=0):
    """A recycler that began serving, and then the daemon grew by grown_mb."""
    recycler = recycle.Recycler(daemon, growth_mb=growth_mb)
    recycler.serving()
    rss['now'] += grown_mb * MB
    return recycler


def _settle(recycler):
    async def scenario():
        recycler.check()
        await asyncio.sleep(recycle.SETTLE * 3)
    asyncio.run(scenario())


def test_reexecutes_when_quiet_and_grown_beyond_the_threshold(rss, execs):
    daemon = _Daemon()
    recycler = _serving(daemon, rss, grown_mb=10)
    _settle(recycler)
    assert execs == [] and daemon.calls == []       # grown, but not by 16 MB
    rss['now'] += 10 * MB
    _settle(recycler)
    assert daemon.calls == ['pause', 'hand over events', ('stop', True)]
    # the paused sockets and the event listeners' streams go to the new image
    assert execs == [({'unix': 'kept'}, [(7, frozenset({'lifecycle'}))])]


def test_never_while_work_goes_on(rss, execs):
    daemon = _Daemon(quiet=False)
    recycler = _serving(daemon, rss, grown_mb=40)
    _settle(recycler)
    assert execs == [] and daemon.calls == []


def test_work_arriving_during_the_pause_resumes_serving(rss, execs):
    daemon = _Daemon(work_arrives=True)
    recycler = _serving(daemon, rss, grown_mb=40)
    _settle(recycler)
    assert execs == []
    assert daemon.calls == ['pause', ('resume', {'unix': 'kept'})]
    daemon.is_quiet, daemon.work_arrives = True, False   # the next quiet moment
    _settle(recycler)
    assert [kept for kept, _ in execs] == [{'unix': 'kept'}]


def test_growth_zero_never_but_sighup_always(rss, execs):
    daemon = _Daemon()
    recycler = _serving(daemon, rss, growth_mb=0, grown_mb=400)
    _settle(recycler)
    assert execs == []

    async def request():
        recycler.request()
        await asyncio.sleep(recycle.SETTLE * 3)
    asyncio.run(request())
    assert len(execs) == 1


def test_a_handed_over_unix_socket_is_the_same_listening_socket(tmp_path, monkeypatch):
    path = str(tmp_path / 'unix.socket')
    monkeypatch.setattr(listeners, '_inherited', None)
    first = listeners.unix(path, mode=0o600)
    first.listen()
    value = listeners.handover({'unix': (first, path)})
    first.close()                       # the old server's copy goes; the handed-over one stays
    monkeypatch.setenv(listeners.LISTEN_ENV, value)
    monkeypatch.setattr(listeners, '_inherited', None)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)            # waits in the backlog meanwhile
        second = listeners.unix(path, mode=0o600)
        assert listeners.LISTEN_ENV not in os.environ     # not passed on to children
        assert not second.get_inheritable()
        conn, _ = second.accept()
        client.sendall(b'x')
        assert conn.recv(1) == b'x'
        conn.close()
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
    second.close()


def test_a_handed_over_https_socket_for_another_address_is_closed(monkeypatch):
    monkeypatch.setattr(listeners, '_inherited', None)
    old = listeners.tcp('127.0.0.1:0')
    port = old.getsockname()[1]
    value = listeners.handover({'https': (old, '127.0.0.1:%d' % port)})
    old.close()
    monkeypatch.setenv(listeners.LISTEN_ENV, value)
    monkeypatch.setattr(listeners, '_inherited', None)
    assert listeners.inherited('https', '127.0.0.1:1') is None     # the config moved it
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(('127.0.0.1', port), timeout=2)


def test_event_listeners_are_told_of_the_restart():
    async def scenario():
        hub = events.EventHub()
        queue, _ = hub.subscribe(['lifecycle'])
        assert hub.listener_count() == 1
        hub.restarting()
        return await queue.get()
    assert asyncio.run(scenario()) is None
