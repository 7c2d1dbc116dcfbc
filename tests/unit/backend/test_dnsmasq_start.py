"""dnsmasq's start is tried again when it lost the race with a link that went away.

dnsmasq lists the host's links as it starts, and fails with ENODEV when one is deleted in that
instant (CI met it: another test's veth). That instant cannot be made to happen on demand, so a
stand-in program plays dnsmasq here: it fails the first time with dnsmasq's own message, then
runs and writes its pid file as dnsmasq does. The real dnsmasq's start is covered by the network
tests (tests/functional/backend/test_network.py).
"""
import os
import subprocess

import pytest

from tests.unit.backend import dnsmasq_stand_in

STAND_IN = r'''#!/bin/bash
if [ ! -e "$STATE/failed" ] || [ -n "$ALWAYS_FAIL" ]; then
    touch "$STATE/failed"
    echo "dnsmasq: $REASON" >&2
    exit 5
fi
for arg in "$@"; do
    case "$arg" in --pid-file=*) echo $$ > "${arg#--pid-file=}";; esac
done
exec -a "$0" /usr/bin/python3 -c 'import time; time.sleep(60)' "$@"
'''


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    program, server = dnsmasq_stand_in.make(tmp_path, monkeypatch, STAND_IN)
    yield program, server
    server.stop()


def _command(program, server):
    return [str(program), '--pid-file=%s' % server.dhcp.pid_file]


def test_a_start_that_raced_a_vanishing_link_is_tried_again(stand_in, monkeypatch):
    program, server = stand_in
    monkeypatch.setenv('REASON', 'failed to find list of interfaces: No such device')
    pid = server.ensure((_command(program, server), None))
    assert pid == server.dhcp.pid() and os.path.exists('/proc/%d' % pid)


def test_another_failure_is_reported_at_once(stand_in, monkeypatch):
    program, server = stand_in
    monkeypatch.setenv('REASON', 'failed to create listening socket: Address in use')
    with pytest.raises(RuntimeError, match='Address in use'):
        server.ensure((_command(program, server), None))


def test_a_race_that_keeps_failing_is_reported(stand_in, monkeypatch):
    program, server = stand_in
    monkeypatch.setenv('REASON', 'failed to find list of interfaces: No such device')
    monkeypatch.setenv('ALWAYS_FAIL', '1')
    with pytest.raises(RuntimeError, match='list of interfaces'):
        server.ensure((_command(program, server), None))
    assert server.dhcp.pid() is None
    assert subprocess.run(['pgrep', '-f', str(program)], capture_output=True).returncode == 1
