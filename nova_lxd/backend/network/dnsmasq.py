"""DHCP, router advertisements and DNS of one managed network: two dnsmasq, started by PID.

Why two: a dnsmasq that serves DHCP matches every lease it holds against every host entry it
holds each time it reads a file at run time (`--dhcp-hostsdir`, `--hostsdir`, through inotify),
so a name entry per instance cost it 27 ms of CPU per new instance with 900 running, on a host
of 2 cores (benchmarks/README.md, Density pass 10). A dnsmasq that only answers DNS reads a new
hosts file in well under a millisecond. So:

- the DHCP (and RA) dnsmasq, `--port=0`, reads only pinned addresses at run time
  (dnsmasq.hosts.d/, one `hwaddr,ip` file per MAC); it hands out the DNS dnsmasq's address and
  the domain, and runs `lease-event` (its --dhcp-script) on each new and deleted lease;
- the daemon writes each instance NIC's DNS name to names.d/<MAC> (`name`, and on a second line
  the SLAAC address to name too, if any), a file no dnsmasq watches;
- `lease-event` writes dns.d/<MAC> (`ip name`) for a new lease of a MAC that has a name, and
  removes it when that lease goes;
- the DNS dnsmasq answers from dns.d/ (--hostsdir, the domain added with --expand-hosts) and
  /etc/hosts; plain names and the domain are never forwarded, other names go to the servers of
  the daemon's dns_resolv_file (the host's /etc/resolv.conf by default, as LXD's bridges do),
  or nowhere when that is empty.

Both outlive a daemon stop, as in LXD, so containers keep their leases and names; the next
start adopts each by its pid file when its command line is still the one wanted, and restarts it
otherwise (a restarted DHCP dnsmasq runs `lease-event` for every lease it reads back).
"""
import ipaddress
import logging
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time

LOG = logging.getLogger(__name__)
_FILES_LOCK = threading.Lock()   # one read-compare-write of an entry file at a time

# dnsmasq processes this daemon started (its children), by pid, so that stop() reaps them
_CHILDREN = {}

# dnsmasq lists the host's links as it starts; a link deleted meanwhile (another container's
# veth going away) makes that fail with ENODEV. A race, not a fault: it is tried again.
_LINK_RACE = 'failed to find list of interfaces'
START_ATTEMPTS = 3

# dnsmasq's --dhcp-script. $1 add|old|del, $2 the MAC, $3 the IPv4 address (DHCPv6 events,
# with an IAID in $2, are not ours). Written without a temporary file: dnsmasq reads a hosts
# file when it is closed after writing, and runs one script at a time.
EVENT_SCRIPT = r'''#!/bin/sh
# Written by nova-lxd (nova_lxd/backend/network/dnsmasq.py): the DNS entry of each IPv4 lease.
dir=${0%/*}
umask 022
case "$3" in *.*.*.*) ;; *) exit 0 ;; esac
case "$1" in
add|old)
    [ -r "$dir/names.d/$2" ] || exit 0
    { read -r name; read -r ipv6; } < "$dir/names.d/$2"
    [ -n "$name" ] || exit 0
    { echo "$3 $name"; [ -z "$ipv6" ] || echo "$ipv6 $name"; } > "$dir/dns.d/$2"
    ;;
del)
    # only this address's entry: the MAC may hold a newer lease already
    [ -r "$dir/dns.d/$2" ] && read -r ip rest < "$dir/dns.d/$2" && [ "$ip" = "$3" ] &&
        rm -f "$dir/dns.d/$2"
    ;;
esac
exit 0
'''


class Process:
    """One dnsmasq, known by its pid file."""

    def __init__(self, pid_file):
        self.pid_file = pid_file

    def pid(self):
        """The PID of our running dnsmasq, or None (a stale pid file is not trusted)."""
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        cmdline = _cmdline(pid)
        if cmdline and cmdline[0].endswith('dnsmasq') and \
                '--pid-file=%s' % self.pid_file in cmdline:
            return pid
        return None

    def running_command(self):
        pid = self.pid()
        return _cmdline(pid) if pid else None

    def ensure(self, cmd, name):
        """Adopt a dnsmasq running `cmd`, else (re)start it; its PID."""
        if self.running_command() == cmd:
            return self.pid()
        self.stop()
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._spawn(cmd)
            except RuntimeError as exc:
                if _LINK_RACE not in str(exc) or attempt == START_ATTEMPTS:
                    raise
                LOG.info('Network %s: %s; starting dnsmasq again', name, exc)

    def _spawn(self, cmd):
        # In the foreground (our child, in its own session): we can reap it, and a host
        # without a real init (no reaper for orphans) gets no zombies from dnsmasq's forks.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError('dnsmasq failed to start: %s'
                                   % proc.stderr.read().decode(errors='replace').strip())
            pid = self.pid()
            if pid == proc.pid:
                proc.stderr.close()
                _CHILDREN[pid] = proc
                return pid
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        raise RuntimeError('dnsmasq did not write its pid file %s' % self.pid_file)

    def reload(self):
        """Make it read its files again (SIGHUP; leases are kept)."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGHUP)

    def stop(self):
        pid = self.pid()
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not _wait_exit(pid, 5):
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, 5)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait()
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass


class Dnsmasq:
    """The dnsmasq processes and files of one managed network (see the module's docstring)."""

    def __init__(self, directory, network, bridge):
        self.directory = directory
        self.network = network
        self.bridge = bridge

        def path(name):
            return os.path.join(directory, name)
        self.leases_file = path('dnsmasq.leases')
        self.hosts_dir = path('dnsmasq.hosts.d')     # pinned addresses: the DHCP dnsmasq's
        self.names_dir = path('names.d')             # the daemon's: each MAC's name
        self.dns_dir = path('dns.d')                 # lease-event's: the DNS dnsmasq's entries
        self.event_script = path('lease-event')
        self.old_hosts_file = path('dnsmasq.hosts')  # all entries in one file, before hosts.d
        self.dhcp = Process(path('dnsmasq.pid'))
        self.dns = Process(path('dns.pid'))

    def commands(self, ipv4=None, ipv6=None, dhcp_ranges=(), dhcp6=False, domain='',
                 lease_time='1h', dns=True, resolv_file=''):
        """(the DHCP/RA dnsmasq's command line, the DNS one's or None).

        ipv4/ipv6 are ip_interface objects or None; resolv_file: where the DNS one finds the
        servers it forwards other names to ('' forwards nothing).
        """
        base = ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--strict-order',
                '--bind-interfaces', '--except-interface=lo', '--interface=%s' % self.bridge]
        listen = ['--listen-address=%s' % iface.ip for iface in (ipv4, ipv6) if iface]
        dhcp = base + ['--pid-file=%s' % self.dhcp.pid_file, '--port=0', '--no-ping',
                       '--dhcp-no-override', '--dhcp-authoritative',
                       '--dhcp-leasefile=%s' % self.leases_file,
                       '--dhcp-hostsdir=%s' % self.hosts_dir,
                       '--dhcp-script=%s' % self.event_script] + listen
        if ipv4:
            for first, last in dhcp_ranges:
                dhcp.append('--dhcp-range=%s,%s,%s' % (first, last, lease_time))
        if ipv6:
            dhcp += ['--dhcp-range=::,constructor:%s,%s'
                     % (self.bridge, 'ra-stateless' if dhcp6 else 'ra-only'), '--enable-ra']
        if domain:
            dhcp.append('--domain=%s' % domain)
        if not dns:                     # dns.mode=none: DHCP only
            return dhcp, None
        # --port=0 offers no DNS server of its own: the other dnsmasq's, at the same address
        if ipv4:
            dhcp.append('--dhcp-option=option:dns-server,0.0.0.0')
        if ipv6:
            dhcp.append('--dhcp-option=option6:dns-server,[::]')
        # plain names (instances) and the domain are answered here, never forwarded; other
        # names go to the resolv file's servers (dnsmasq polls it for changes), or with none
        # nowhere: then the command is the one of versions that never forwarded, adopted as is
        resolver = base + ['--pid-file=%s' % self.dns.pid_file,
                           '--resolv-file=%s' % resolv_file if resolv_file else '--no-resolv',
                           '--hostsdir=%s' % self.dns_dir, '--domain-needed']
        resolver += ([] if resolv_file else ['--local=//']) + listen
        if domain:
            resolver += ['--domain=%s' % domain, '--expand-hosts', '--local=/%s/' % domain]
        return dhcp, resolver

    # -- processes --------------------------------------------------------------------------
    def ensure(self, commands):
        """Adopt or (re)start the processes for (dhcp, dns) command lines (dns None: none)."""
        dhcp, resolver = commands
        for directory in (self.hosts_dir, self.names_dir, self.dns_dir):
            os.makedirs(directory, exist_ok=True)
        if not os.path.exists(self.leases_file):
            open(self.leases_file, 'a').close()
        if _read(self.event_script) != EVENT_SCRIPT:
            _write(self.event_script, EVENT_SCRIPT, mode=0o755)
        self._migrate()
        # DHCP first: an earlier version's single dnsmasq (this pid file) also held port 53.
        # Started, it runs lease-event for each lease it reads back; the DNS one then reads
        # those entries as it starts, or through inotify if it runs already.
        pid = self.dhcp.ensure(dhcp, self.network)
        if resolver:
            self.dns.ensure(resolver, self.network)
        else:
            self.dns.stop()
        return pid

    def stop(self):
        self.dhcp.stop()
        self.dns.stop()

    def release_leases(self, hwaddr, server):
        """Give back the IPv4 leases of a MAC whose NIC is gone; how many there were.

        dnsmasq keeps a lease until it expires (an hour by default), and with it the address,
        so on a small network that sees many instances come and go new ones would find none
        free. The host sends the DHCPRELEASE the container no longer can, to dnsmasq's address
        `server` (as LXD does); dnsmasq drops the lease.
        """
        hwaddr = hwaddr.lower()
        addresses = [ip for _, mac, ip, _ in self.leases() if mac == hwaddr and ':' not in ip]
        if addresses:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for ip in addresses:
                    sock.sendto(_dhcp_release(hwaddr, ip, server), (server, 67))
        return len(addresses)

    # -- files ------------------------------------------------------------------------------
    def leases(self):
        """(expiry, hwaddr, ip, hostname) of each lease in the file, read as they are iterated.

        Each delete looks for its MAC among them: with a thousand leases, a list of them all
        per delete was tens of thousands of small objects at once in a burst of deletes.
        """
        try:
            f = open(self.leases_file)
        except OSError:
            return
        with f:
            for line in f:
                fields = line.split()
                if len(fields) >= 4 and fields[0] != 'duid':
                    yield (int(fields[0]), fields[1].lower(), fields[2],
                           '' if fields[3] == '*' else fields[3])

    def _pin_path(self, hwaddr):
        return os.path.join(self.hosts_dir, hwaddr.replace(':', '-'))

    def _name_path(self, hwaddr):
        return os.path.join(self.names_dir, hwaddr.lower())

    def _dns_path(self, hwaddr):
        return os.path.join(self.dns_dir, hwaddr.lower())

    def reservations(self):
        """{hwaddr: pinned IPv4 address}."""
        result = {}
        try:
            files = os.listdir(self.hosts_dir)
        except OSError:
            return result
        for name in files:
            fields = (_read(os.path.join(self.hosts_dir, name)) or '').strip().split(',')
            if not name.startswith('.') and len(fields) >= 2 and _is_ip(fields[1]):
                result[fields[0].lower()] = fields[1]
        return result

    def pin(self, hwaddr, ip):
        """Give IPv4 address `ip` to `hwaddr` (a NIC's ipv4.address); True if that changed."""
        ipaddress.ip_address(ip)
        hwaddr = hwaddr.lower()
        line = '%s,%s\n' % (hwaddr, ip)
        path = self._pin_path(hwaddr)
        with _FILES_LOCK:
            old = _read(path)
            if old == line:
                return False
            _write(path, line)
        if old is not None:
            self.dhcp.reload()    # dnsmasq only adds from the directory: drop the old one
        return True

    def name(self, hwaddr):
        """The DNS name registered for a MAC ('' if none)."""
        return (_read(self._name_path(hwaddr)) or '\n').split('\n')[0]

    def set_name(self, hwaddr, name, ipv6=None):
        """Answer `name` for a MAC's IPv4 lease (and for `ipv6`); True if that changed."""
        hwaddr = hwaddr.lower()
        content = '%s\n%s\n' % (name, ipv6 or '')
        with _FILES_LOCK:
            if _read(self._name_path(hwaddr)) == content:
                return False
            _write(self._name_path(hwaddr), content)
        # a MAC that holds a lease already (a renamed instance): its entry follows now
        entry = (_read(self._dns_path(hwaddr)) or '').split()
        if entry:
            subprocess.run([self.event_script, 'old', hwaddr, entry[0]], check=False)
        return True

    def forget(self, hwaddr):
        """Drop all of a MAC whose NIC is gone: its name, DNS entry and pinned address."""
        hwaddr = hwaddr.lower()
        with _FILES_LOCK:
            for path in (self._name_path(hwaddr), self._dns_path(hwaddr)):
                _unlink(path)
            pinned = _unlink(self._pin_path(hwaddr))
        if pinned:
            self.dhcp.reload()    # the address must be free for another MAC at once

    def _migrate(self):
        """Entries of earlier versions become names and pinned addresses.

        They were `hwaddr,[ip,]name`: all in one file, later one file per MAC in the DHCP
        dnsmasq's directory.
        """
        entries = []
        old = _read(self.old_hosts_file)
        if old is not None:
            entries += old.splitlines()
        for file_name in os.listdir(self.hosts_dir):
            path = os.path.join(self.hosts_dir, file_name)
            fields = (_read(path) or '').strip().split(',')
            if file_name.startswith('.'):       # a write that a crash cut short
                _unlink(path)
            elif len(fields) > 2 or not _is_ip(fields[-1]):
                entries.append(','.join(fields))
                _unlink(path)
        for line in entries:
            fields = line.strip().split(',')
            if len(fields) < 2:
                continue
            if _is_ip(fields[1]):
                self.pin(fields[0], fields[1])
                fields = fields[:1] + fields[2:]
            if len(fields) > 1 and fields[1]:
                self.set_name(fields[0], fields[1])
        _unlink(self.old_hosts_file)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path, content, mode=0o644):
    """Written aside and renamed in: dnsmasq (inotify) never reads half a file."""
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, '.%s.tmp' % name)
    with open(tmp, 'w') as f:
        f.write(content)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def _unlink(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _dhcp_release(hwaddr, ip, server):
    """A DHCPRELEASE (RFC 2131) of `ip`, leased to `hwaddr`, sent to the server `server`."""
    chaddr = bytes.fromhex(hwaddr.replace(':', '')).ljust(16, b'\0')
    header = struct.pack('!BBBB4sHH4s4s4s4s16s64s128s', 1, 1, 6, 0, secrets.token_bytes(4), 0, 0,
                         socket.inet_aton(ip), bytes(4), bytes(4), bytes(4), chaddr, b'', b'')
    # magic cookie; message type 7 (release); server identifier; end
    options = b'\x63\x82\x53\x63' + bytes([53, 1, 7, 54, 4]) + socket.inet_aton(server) + b'\xff'
    return header + options


def _is_ip(value):
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _wait_exit(pid, timeout):
    deadline = time.monotonic() + timeout
    while not _exited(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _exited(pid):
    """Whether a process is gone or a zombie: then its sockets are closed, its ports free.

    Not "its command line reads empty": the kernel drops that (the memory) before the open
    files, and a dnsmasq started again at once could still find its port 53 in use.
    """
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(b')') + 2:][:1] in (b'Z', b'X')


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            raw = f.read()
    except (OSError, TypeError):
        return None
    if not raw:
        return None
    return raw.rstrip(b'\0').decode(errors='replace').split('\0')
