"""One dnsmasq per managed network: DHCP and DNS on the bridge, started and stopped by PID.

Its files live in DATA/networks/<name>/: dnsmasq.pid, dnsmasq.leases and dnsmasq.hosts.d/ (static
reservations and DNS names, one small `hwaddr,ip[,name]` or `hwaddr,name` file per MAC). dnsmasq
watches that directory (--dhcp-hostsdir, inotify) and reads a new file by itself, so an instance's
start adds its entry without rewriting every other instance's and without a SIGHUP that makes
dnsmasq re-read them all (that cost grew with the number of instances). dnsmasq only ever adds
from that directory: a changed entry, or a removed one that pinned an address, takes a SIGHUP; a
removed name-only entry stays in dnsmasq's memory until the next SIGHUP. Those are not free:
each new entry makes dnsmasq match every lease against every entry it holds, so with 900
entries and 900 removed ones it spent 126 ms of CPU per new entry against 13.5 ms with none
removed. A SIGHUP drops them once STALE_RELOAD have gathered. dnsmasq outlives a daemon stop,
as in LXD, so containers keep their leases; the next start adopts it by its pid file when its
command line is still the one wanted (with a SIGHUP: the count of removed entries did not survive
the stop), and restarts it otherwise.
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
_HOSTS_LOCK = threading.Lock()   # one read-compare-write of an entry file at a time

# dnsmasq processes this daemon started (its children), by pid, so that stop() reaps them
_CHILDREN = {}

# dnsmasq lists the host's links as it starts; a link deleted meanwhile (another container's
# veth going away) makes that fail with ENODEV. A race, not a fault: it is tried again.
_LINK_RACE = 'failed to find list of interfaces'
START_ATTEMPTS = 3

# name-only entries removed since dnsmasq last read its whole directory, by that directory
STALE_RELOAD = 100
_STALE = {}


class Dnsmasq:
    def __init__(self, directory, network, bridge):
        self.directory = directory
        self.network = network
        self.bridge = bridge

    def path(self, name):
        return os.path.join(self.directory, name)

    @property
    def pid_file(self):
        return self.path('dnsmasq.pid')

    @property
    def leases_file(self):
        return self.path('dnsmasq.leases')

    @property
    def hosts_dir(self):
        return self.path('dnsmasq.hosts.d')

    @property
    def old_hosts_file(self):
        """Where all reservations were kept in one file, before dnsmasq.hosts.d."""
        return self.path('dnsmasq.hosts')

    def _host_path(self, hwaddr):
        return os.path.join(self.hosts_dir, hwaddr.lower().replace(':', '-'))

    def command(self, ipv4=None, ipv6=None, dhcp_ranges=(), dhcp6=False, domain='',
                lease_time='1h', dns=True):
        """The full command line for a config; ipv4/ipv6 are ip_interface objects or None."""
        cmd = ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null',
               '--strict-order', '--bind-interfaces', '--except-interface=lo',
               '--pid-file=%s' % self.pid_file, '--no-ping', '--interface=%s' % self.bridge,
               '--dhcp-no-override', '--dhcp-authoritative', '--no-resolv',
               '--dhcp-leasefile=%s' % self.leases_file,
               '--dhcp-hostsdir=%s' % self.hosts_dir]
        if ipv4:
            cmd.append('--listen-address=%s' % ipv4.ip)
            for first, last in dhcp_ranges:
                cmd.append('--dhcp-range=%s,%s,%s' % (first, last, lease_time))
        if ipv6:
            cmd.append('--listen-address=%s' % ipv6.ip)
            if dhcp6:
                cmd.append('--dhcp-range=::,constructor:%s,ra-stateless,ra-names' % self.bridge)
            else:
                cmd.append('--dhcp-range=::,constructor:%s,ra-only' % self.bridge)
            cmd.append('--enable-ra')
        if not dns:
            cmd.append('--port=0')      # dns.mode=none: DHCP only
        # plain names (instances) and the domain are answered here, never forwarded
        cmd += ['--domain-needed', '--local=//']
        if domain:
            cmd += ['-s', domain, '--local=/%s/' % domain]
        return cmd

    # -- process ------------------------------------------------------------------------
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

    def ensure(self, cmd):
        """Adopt a dnsmasq running `cmd`, else (re)start it."""
        os.makedirs(self.hosts_dir, exist_ok=True)
        if not os.path.exists(self.leases_file):
            open(self.leases_file, 'a').close()
        self._migrate_hosts_file()
        running = self.running_command()
        if running == cmd:
            # entries removed while no daemon counted them (a restart) go now, not 100 later
            self.reload()
            return self.pid()
        self.stop()
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._spawn(cmd)
            except RuntimeError as exc:
                if _LINK_RACE not in str(exc) or attempt == START_ATTEMPTS:
                    raise
                LOG.info('Network %s: %s; starting dnsmasq again', self.network, exc)

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
                _STALE.pop(self.hosts_dir, None)     # a new dnsmasq read only what is there
                return pid
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        raise RuntimeError('dnsmasq did not write its pid file %s' % self.pid_file)

    def reload(self):
        """Re-read the entries (reservations, names) without dropping leases."""
        _STALE.pop(self.hosts_dir, None)
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
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _cmdline(pid):
            time.sleep(0.02)
        if _cmdline(pid):
            os.kill(pid, signal.SIGKILL)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait()
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass

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

    # -- files --------------------------------------------------------------------------
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

    def reservations(self):
        """{hwaddr: (ip or '', name)} from the hosts directory (`mac,ip,name` or `mac,name`)."""
        result = {}
        try:
            names = os.listdir(self.hosts_dir)
        except OSError:
            return result
        for name in names:
            if not name.startswith('.'):
                entry = self._read_host(os.path.join(self.hosts_dir, name))
                if entry:
                    result[entry[0]] = entry[1]
        return result

    @staticmethod
    def _read_host(path):
        """(hwaddr, (ip or '', name)) from one entry file, or None."""
        try:
            with open(path) as f:
                fields = f.read().strip().split(',')
        except OSError:
            return None
        if len(fields) < 2:
            return None
        if _is_ip(fields[1]):
            return fields[0].lower(), (fields[1], ','.join(fields[2:]))
        return fields[0].lower(), ('', fields[1])

    def set_host(self, hwaddr, ip=None, name=''):
        """Pin an address and/or a DNS name to a MAC; True if the entry changed."""
        if ip:
            ipaddress.ip_address(ip)
        hwaddr = hwaddr.lower()
        entry = (str(ip) if ip else '', name or '')
        if entry == ('', ''):
            return self.remove_host(hwaddr)
        path = self._host_path(hwaddr)
        with _HOSTS_LOCK:
            old = self._read_host(path)
            if old == (hwaddr, entry):
                return False
            os.makedirs(self.hosts_dir, exist_ok=True)
            # written aside, then renamed in: dnsmasq (inotify) never reads half a line;
            # dot files are ignored by it and by reservations()
            tmp = os.path.join(self.hosts_dir, '.%s.tmp' % os.path.basename(path))
            with open(tmp, 'w') as f:
                f.write(','.join(filter(None, (hwaddr,) + entry)) + '\n')
            os.rename(tmp, path)
            if old is not None:
                self.reload()    # dnsmasq only adds from the directory: drop the old entry
            return True

    def remove_host(self, hwaddr):
        """Forget a MAC's entry; True if there was one."""
        path = self._host_path(hwaddr)
        with _HOSTS_LOCK:
            old = self._read_host(path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            if old is not None and old[1][0]:
                self.reload()    # a pinned address must be free for another MAC at once
            else:
                _STALE[self.hosts_dir] = stale = _STALE.get(self.hosts_dir, 0) + 1
                if stale >= STALE_RELOAD:
                    self.reload()
            return True

    def _migrate_hosts_file(self):
        """Entries of the single hosts file of earlier versions become files of the directory."""
        try:
            with open(self.old_hosts_file) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            fields = line.strip().split(',')
            if len(fields) >= 2:
                if _is_ip(fields[1]):
                    self.set_host(fields[0], fields[1], ','.join(fields[2:]))
                else:
                    self.set_host(fields[0], None, fields[1])
        os.unlink(self.old_hosts_file)


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


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            raw = f.read()
    except (OSError, TypeError):
        return None
    if not raw:
        return None
    return raw.rstrip(b'\0').decode(errors='replace').split('\0')
