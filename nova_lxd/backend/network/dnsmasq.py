"""One dnsmasq per managed network: DHCP and DNS on the bridge, started and stopped by PID.

Its files live in DATA/networks/<name>/: dnsmasq.pid, dnsmasq.leases, dnsmasq.hosts (static
reservations, one `hwaddr,ip[,name]` per line; SIGHUP re-reads it). dnsmasq outlives a daemon
stop, as in LXD, so containers keep their leases; the next start adopts it by its pid file when
its command line is still the one wanted, and restarts it otherwise.
"""
import ipaddress
import logging
import os
import signal
import subprocess
import threading
import time

LOG = logging.getLogger(__name__)
_HOSTS_LOCK = threading.Lock()   # guards every network's hosts file (tiny, rare writes)

# dnsmasq processes this daemon started (its children), by pid, so that stop() reaps them
_CHILDREN = {}


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
    def hosts_file(self):
        return self.path('dnsmasq.hosts')

    def command(self, ipv4=None, ipv6=None, dhcp_ranges=(), dhcp6=False, domain='',
                lease_time='1h', dns=True):
        """The full command line for a config; ipv4/ipv6 are ip_interface objects or None."""
        cmd = ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null',
               '--strict-order', '--bind-interfaces', '--except-interface=lo',
               '--pid-file=%s' % self.pid_file, '--no-ping', '--interface=%s' % self.bridge,
               '--dhcp-no-override', '--dhcp-authoritative', '--no-resolv',
               '--dhcp-leasefile=%s' % self.leases_file,
               '--dhcp-hostsfile=%s' % self.hosts_file]
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
        os.makedirs(self.directory, exist_ok=True)
        for name in (self.leases_file, self.hosts_file):
            if not os.path.exists(name):
                open(name, 'a').close()
        running = self.running_command()
        if running == cmd:
            return self.pid()
        self.stop()
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
        """Re-read the hosts file (reservations) without dropping leases."""
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

    # -- files --------------------------------------------------------------------------
    def leases(self):
        """[(expiry, hwaddr, ip, hostname)] from the leases file."""
        result = []
        try:
            with open(self.leases_file) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 4 and fields[0] != 'duid':
                        hostname = '' if fields[3] == '*' else fields[3]
                        result.append((int(fields[0]), fields[1].lower(), fields[2], hostname))
        except OSError:
            pass
        return result

    def reservations(self):
        """{hwaddr: (ip or '', name)} from the hosts file (`mac,ip,name` or `mac,name`)."""
        result = {}
        try:
            with open(self.hosts_file) as f:
                for line in f:
                    fields = line.strip().split(',')
                    if len(fields) < 2:
                        continue
                    if _is_ip(fields[1]):
                        result[fields[0].lower()] = (fields[1], ','.join(fields[2:]))
                    else:
                        result[fields[0].lower()] = ('', fields[1])
        except OSError:
            pass
        return result

    def set_host(self, hwaddr, ip=None, name=''):
        """Pin an address and/or a DNS name to a MAC; True if the file changed."""
        if ip:
            ipaddress.ip_address(ip)
        return self._write_hosts(hwaddr, (str(ip) if ip else '', name or ''))

    def remove_host(self, hwaddr):
        return self._write_hosts(hwaddr, None)

    def _write_hosts(self, hwaddr, entry):
        # read-modify-write: instances starting in parallel would lose each other's entries
        with _HOSTS_LOCK:
            current = self.reservations()
            wanted = dict(current)
            hwaddr = hwaddr.lower()
            if entry is None or entry == ('', ''):
                wanted.pop(hwaddr, None)
            else:
                wanted[hwaddr] = entry
            if wanted == current:
                return False
            os.makedirs(self.directory, exist_ok=True)
            tmp = self.hosts_file + '.tmp'
            with open(tmp, 'w') as f:
                for mac, (address, host) in sorted(wanted.items()):
                    f.write(','.join(filter(None, [mac, address, host])) + '\n')
            os.rename(tmp, self.hosts_file)
            self.reload()     # SIGHUP: dnsmasq re-reads the hosts file, leases stay
            return True


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
