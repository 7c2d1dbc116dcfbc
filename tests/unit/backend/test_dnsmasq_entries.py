"""Instance names reach DNS through lease-event; pinned addresses reach the DHCP dnsmasq.

The DHCP dnsmasq reads only pinned addresses at run time: each file it reads makes it match
every lease against every entry (benchmarks/README.md, Density pass 10). Names go to names.d/,
and the lease-event script dnsmasq runs on each lease writes the DNS dnsmasq's entry. The script
runs here as dnsmasq runs it (same arguments, real /bin/sh); a stand-in program plays the DHCP
dnsmasq to count the SIGHUPs the daemon sends. The real processes are covered by the network
and nic tests (tests/functional/backend/test_network.py, test_nic.py).
"""
import os
import subprocess
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
MAC = '00:16:3e:00:00:01'


@pytest.fixture
def server(tmp_path, monkeypatch):
    program, server = dnsmasq_stand_in.make(tmp_path, monkeypatch, STAND_IN)
    server.ensure(([str(program), '--pid-file=%s' % server.dhcp.pid_file], None))
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


def _event(server, *args):
    """What dnsmasq's script helper does on a lease event."""
    subprocess.run([server.event_script] + list(args), check=True, cwd='/')


def _dns_entry(server, mac=MAC):
    try:
        with open(os.path.join(server.dns_dir, mac)) as f:
            return f.read()
    except FileNotFoundError:
        return None


def test_a_lease_of_a_named_mac_gets_a_dns_entry_until_it_goes(server):
    assert server.set_name(MAC, 'c1', 'fd42::216:3eff:fe00:1')
    _event(server, 'add', MAC, '10.1.2.3', 'guest-sent-name')
    assert _dns_entry(server) == '10.1.2.3 c1\nfd42::216:3eff:fe00:1 c1\n'
    _event(server, 'old', MAC, '10.1.2.4')             # a new address for the same MAC
    assert _dns_entry(server) == '10.1.2.4 c1\nfd42::216:3eff:fe00:1 c1\n'
    _event(server, 'del', MAC, '10.1.2.3')             # an older lease's end: not this entry
    assert _dns_entry(server) is not None
    _event(server, 'del', MAC, '10.1.2.4')
    assert _dns_entry(server) is None
    assert server.hups() == 0                          # the DHCP dnsmasq read nothing


def test_leases_of_other_macs_and_dhcpv6_events_write_nothing(server):
    server.set_name(MAC, 'c1')
    _event(server, 'add', '00:16:3e:00:00:09', '10.1.2.9')
    _event(server, 'add', '1234', 'fd42::9', 'c1')     # DHCPv6: an IAID, an IPv6 address
    assert os.listdir(server.dns_dir) == []


def test_a_rename_rewrites_the_entry_of_a_mac_that_holds_a_lease(server):
    server.set_name(MAC, 'c1')
    _event(server, 'add', MAC, '10.1.2.3')
    assert server.set_name(MAC, 'renamed') is True
    assert _dns_entry(server) == '10.1.2.3 renamed\n'
    assert server.set_name(MAC, 'renamed') is False


def test_forgetting_a_mac_drops_its_name_and_entry_and_frees_a_pinned_address_at_once(server):
    server.set_name(MAC, 'c1')
    _event(server, 'add', MAC, '10.1.2.3')
    server.forget(MAC)
    assert server.name(MAC) == '' and _dns_entry(server) is None
    assert server.hups() == 0                          # a name alone: nothing for DHCP
    assert server.pin(MAC, '10.1.2.50') is True
    assert server.hups() == 0                          # a new file: dnsmasq reads it itself
    assert server.pin(MAC, '10.1.2.51') is True
    assert server.hups() == 1                          # a changed one takes a SIGHUP
    server.forget(MAC)
    assert server.hups() == 2 and server.reservations() == {}


def test_the_event_script_is_rewritten_when_it_is_not_this_version_s(server, tmp_path):
    with open(server.event_script, 'w') as f:
        f.write('#!/bin/sh\nexit 1\n')
    program = str(tmp_path / 'dnsmasq')
    server.ensure(([program, '--pid-file=%s' % server.dhcp.pid_file], None))
    with open(server.event_script) as f:
        assert f.read() == dnsmasq.EVENT_SCRIPT
    assert os.stat(server.event_script).st_mode & 0o777 == 0o755
