"""Removed name-only entries are dropped from dnsmasq's memory by a SIGHUP once enough gathered.

dnsmasq keeps an entry whose file left its --dhcp-hostsdir until its next SIGHUP, and each entry
it holds makes the next new one cost more (benchmarks/README.md, Density pass 4: 126 ms of its
CPU per new entry with 900 removed ones held, 13.5 ms without). What is tested here is when the
daemon sends the SIGHUP, so a stand-in program plays dnsmasq and counts the SIGHUPs it gets; the
real dnsmasq reading the directory is covered by the network tests
(tests/functional/backend/test_network.py).
"""
import os
import time

import pytest

from nova_lxd.backend.network import dnsmasq
from tests.unit.backend import dnsmasq_stand_in

STAND_IN = r'''#!/bin/bash
for arg in "$@"; do
    case "$arg" in --pid-file=*) echo $$ > "${arg#--pid-file=}";; esac
done
exec -a "$0" /usr/bin/python3 -c '
import os, signal, time
def hup(*_):
    with open(os.environ["STATE"] + "/hups", "a") as f:
        f.write("x")
signal.signal(signal.SIGHUP, hup)
open(os.environ["STATE"] + "/ready", "w").close()
time.sleep(60)
' "$@"
'''


@pytest.fixture
def server(tmp_path, monkeypatch):
    program, server = dnsmasq_stand_in.make(tmp_path, monkeypatch, STAND_IN)
    server.ensure([str(program), '--pid-file=%s' % server.pid_file])
    deadline = time.monotonic() + 10
    while not (tmp_path / 'ready').exists():      # its SIGHUP handler is in place
        assert time.monotonic() < deadline
        time.sleep(0.01)
    server.hups = lambda: _hups(tmp_path)
    yield server
    server.stop()


def _hups(tmp_path, settle=0.2):
    time.sleep(settle)           # a signal is delivered asynchronously
    try:
        return len((tmp_path / 'hups').read_text())
    except FileNotFoundError:
        return 0


def _mac(i):
    return '00:16:3e:00:%02x:%02x' % (i >> 8, i & 255)


def test_removed_name_entries_are_dropped_by_one_sighup_per_batch(server):
    batch = dnsmasq.STALE_RELOAD
    for i in range(2 * batch + 3):
        assert server.set_host(_mac(i), None, 'c%d' % i)
    assert server.hups() == 0                 # new entries: dnsmasq reads their files itself
    for i in range(batch - 1):
        assert server.remove_host(_mac(i))
    assert server.hups() == 0
    assert server.remove_host(_mac(batch - 1))
    assert server.hups() == 1                 # the batch is full: one SIGHUP
    for i in range(batch, 2 * batch):
        server.remove_host(_mac(i))
    assert server.hups() == 2
    assert sorted(os.listdir(server.hosts_dir)) == sorted(
        _mac(i).replace(':', '-') for i in range(2 * batch, 2 * batch + 3))


def test_a_removed_pinned_address_still_reloads_at_once_and_starts_a_new_batch(server):
    for i in range(dnsmasq.STALE_RELOAD - 1):
        server.set_host(_mac(i), None, 'c%d' % i)
        server.remove_host(_mac(i))
    server.set_host(_mac(500), '10.0.0.5', 'pinned')
    server.remove_host(_mac(500))
    assert server.hups() == 1
    server.set_host(_mac(501), None, 'named')
    server.remove_host(_mac(501))
    assert server.hups() == 1                 # the SIGHUP dropped the others: 1 of a new batch


def test_removing_an_entry_that_is_not_there_sends_nothing(server):
    for i in range(dnsmasq.STALE_RELOAD + 1):
        assert not server.remove_host(_mac(i))
    assert server.hups() == 0


def test_adopting_a_running_dnsmasq_drops_what_was_removed_while_no_daemon_counted(
        server, monkeypatch):
    """A daemon restart (or re-exec) lost the count of removed entries: adopting sends a SIGHUP."""
    pid = server.pid()
    cmd = server.running_command()
    # the stand-in's own command line is python's; the real one is matched in test_network.py
    monkeypatch.setattr(server, 'running_command', lambda: cmd)
    assert server.ensure(cmd) == pid          # adopted, not restarted
    assert server.hups() == 1
