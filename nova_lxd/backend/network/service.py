"""daemon.networks: managed bridges (persisted, reconciled at start) and the host's other links.

A managed network is a document in the db (kind 'network') and, on the host: a bridge named
after it with its gateway addresses, one VXLAN link per tunnel attached to the bridge, an nftables
table, and a dnsmasq. `_apply` makes the host match a document and is idempotent, so create,
update and daemon start all go through it.
"""
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import threading
import time

from pyroute2 import NetlinkError

from nova_lxd.backend.errors import ApiError, BadRequest, Conflict, NotFound
from nova_lxd.backend.network import dnsmasq, nat, netlink, subnet

LOG = logging.getLogger(__name__)

KIND = 'network'
DEFAULT_NETWORK = 'novalxdbr0'
NAME_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_.-]{0,14}$')
TRUE, FALSE = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off')
# our own plumbing (tunnel links, NIC ends between creation and the move into a container)
HIDDEN = ('nlxvx', 'nlxc', 'nlxm')
TUNNEL_KEYS = {'protocol', 'id', 'local', 'remote', 'group', 'port', 'interface', 'ttl'}


def _bool(value, default=False):
    if value is None or value == '':
        return default
    return str(value).lower() in TRUE


def _check_bool(key, value):
    if str(value).lower() not in TRUE + FALSE:
        raise BadRequest('Invalid value for %s: %r (expected true or false)' % (key, value))


def _check_int(key, value, low, high):
    if not str(value).isdigit() or not low <= int(value) <= high:
        raise BadRequest('Invalid value for %s: %r (expected %d-%d)' % (key, value, low, high))


def _check_ip(key, value, version=None):
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise BadRequest('Invalid value for %s: %r is not an IP address' % (key, value))
    if version and ip.version != version:
        raise BadRequest('Invalid value for %s: %r is not an IPv%d address' % (key, value, version))
    return ip


def parse_ranges(value, iface):
    """'a-b,c-d' -> [(a, b)], every address inside the subnet."""
    ranges = []
    for part in str(value).split(','):
        first, sep, last = part.strip().partition('-')
        try:
            a, b = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
        except ValueError:
            raise BadRequest('Invalid DHCP range %r (expected FIRST-LAST)' % part)
        if not sep or a > b or a not in iface.network or b not in iface.network:
            raise BadRequest('Invalid DHCP range %r: must be FIRST-LAST inside %s'
                             % (part, iface.network))
        ranges.append((str(a), str(b)))
    return ranges


def validate_config(config):
    """Check every key of a managed bridge's config; 'auto' addresses are allowed here."""
    if not isinstance(config, dict):
        raise BadRequest('config must be an object')
    for key, value in config.items():
        if not isinstance(value, str):
            raise BadRequest('Invalid value for %s: must be a string' % key)
    for key, value in config.items():
        if key.startswith('user.'):
            continue
        if key in ('ipv4.address', 'ipv6.address'):
            version = 4 if key.startswith('ipv4') else 6
            if value not in ('auto', 'none', ''):
                try:
                    subnet.parse_cidr_gateway(value, version)
                except ValueError as exc:
                    raise BadRequest('Invalid value for %s: %r: %s' % (key, value, exc))
        elif key in ('ipv4.nat', 'ipv6.nat', 'ipv4.dhcp', 'ipv6.dhcp', 'ipv6.dhcp.stateful'):
            _check_bool(key, value)
        elif key in ('ipv4.dhcp.ranges',):
            address = config.get('ipv4.address', '')
            if address in ('', 'none'):
                raise BadRequest('ipv4.dhcp.ranges needs an ipv4.address')
            if address != 'auto':
                parse_ranges(value, subnet.parse_cidr_gateway(address, 4))
        elif key == 'ipv4.dhcp.expiry':
            if not re.match(r'^(\d+[smhd]?|infinite)$', value):
                raise BadRequest('Invalid value for %s: %r (e.g. 1h)' % (key, value))
        elif key == 'dns.domain':
            if not re.match(r'^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$', value):
                raise BadRequest('Invalid value for dns.domain: %r' % value)
        elif key == 'dns.mode':
            if value not in ('managed', 'dynamic', 'none'):
                raise BadRequest('Invalid value for dns.mode: %r' % value)
        elif key == 'bridge.mtu':
            _check_int(key, value, 1280, 65520)
        elif key == 'bridge.hwaddr':
            if not re.match(r'^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$', value):
                raise BadRequest('Invalid value for bridge.hwaddr: %r' % value)
        elif key == 'bridge.driver':
            if value != 'native':
                raise BadRequest('Only the native bridge driver is supported, not %r' % value)
        elif key.startswith('tunnel.'):
            _validate_tunnel_key(key, value)
        else:
            raise BadRequest('Unknown network config key %r' % key)
    for tunnel, keys in tunnels(config).items():
        if keys.get('protocol') != 'vxlan':
            raise BadRequest('Tunnel %r: tunnel.%s.protocol must be vxlan (gre is not '
                             'supported)' % (tunnel, tunnel))
        if not keys.get('remote') and not keys.get('group'):
            raise BadRequest('Tunnel %r needs tunnel.%s.remote (or .group)' % (tunnel, tunnel))


def _validate_tunnel_key(key, value):
    parts = key.split('.')
    if len(parts) != 3 or not parts[1] or parts[2] not in TUNNEL_KEYS:
        raise BadRequest('Unknown network config key %r (tunnel.NAME.{%s})'
                         % (key, ','.join(sorted(TUNNEL_KEYS))))
    field = parts[2]
    if field == 'protocol' and value not in ('vxlan',):
        raise BadRequest('Invalid value for %s: %r (only vxlan is supported)' % (key, value))
    if field == 'id':
        _check_int(key, value, 0, 16777215)
    if field == 'port':
        _check_int(key, value, 1, 65535)
    if field == 'ttl':
        _check_int(key, value, 1, 255)
    if field in ('local', 'remote', 'group'):
        _check_ip(key, value)


def _slaac_address(config, hwaddr):
    """The address a NIC gives itself by SLAAC (EUI-64), if the network names those.

    That is with ipv6.dhcp.stateful on a /64 (what dnsmasq's ra-names answered); else None.
    """
    value = config.get('ipv6.address', 'none')
    if value in ('none', '', 'auto') or not _bool(config.get('ipv6.dhcp.stateful')):
        return None
    network = ipaddress.ip_interface(value).network
    if network.prefixlen != 64:
        return None
    mac = bytearray.fromhex(hwaddr.replace(':', ''))
    mac[0] ^= 0x02                     # the universal/local bit, inverted
    interface_id = int.from_bytes(bytes(mac[:3]) + b'\xff\xfe' + bytes(mac[3:]), 'big')
    return str(network.network_address + interface_id)


def tunnels(config):
    """{tunnel name: {field: value}} from tunnel.NAME.FIELD keys."""
    result = {}
    for key, value in config.items():
        parts = key.split('.')
        if len(parts) == 3 and parts[0] == 'tunnel':
            result.setdefault(parts[1], {})[parts[2]] = value
    return result


def tunnel_link_name(network, tunnel, fields):
    """A stable link name that changes whenever the tunnel's parameters do."""
    digest = hashlib.sha1(repr((network, tunnel, sorted(fields.items()))).encode()).hexdigest()
    return 'nlxvx' + digest[:10]


class NetworkService:
    def __init__(self, daemon):
        self.daemon = daemon
        self.db = daemon.db
        self._lock = threading.RLock()

    # -- helpers ------------------------------------------------------------------------
    def directory(self, name):
        return self.daemon.config.path('networks', name)

    def dnsmasq(self, name):
        return dnsmasq.Dnsmasq(self.directory(name), name, name)

    def _doc(self, name):
        doc = self.db.get(KIND, name)
        if doc is None:
            raise NotFound('Network %r not found' % name)
        return doc

    def is_managed(self, name):
        return self.db.get(KIND, name) is not None

    def bridge_for(self, name):
        """The host bridge a NIC with `network: name` joins (NotFound if not a managed bridge)."""
        self._doc(name)
        return name

    def ipv4(self, name):
        """The managed network's gateway interface (ip_interface) or None."""
        address = self._doc(name)['config'].get('ipv4.address', 'none')
        return None if address in ('none', '') else ipaddress.ip_interface(address)

    def used_subnets(self, exclude=None):
        used = subnet.used_networks(netlink.addresses(), netlink.routes(),
                                    ignore_interface=exclude)
        for doc in self.db.list(KIND):
            if doc['name'] == exclude:
                continue
            for key in ('ipv4.address', 'ipv6.address'):
                value = doc['config'].get(key, 'none')
                if value not in ('none', 'auto', ''):
                    used.append(ipaddress.ip_interface(value).network)
        return used

    def _resolve_auto(self, name, config):
        config = dict(config)
        if config.get('ipv4.address') == 'auto':
            config['ipv4.address'] = subnet.choose_ipv4(self.used_subnets(exclude=name))
        if config.get('ipv6.address') == 'auto':
            config['ipv6.address'] = subnet.choose_ipv6(self.used_subnets(exclude=name))
        for key in ('ipv4.address', 'ipv6.address'):
            value = config.get(key, 'none')
            if value in ('none', ''):
                continue
            network = ipaddress.ip_interface(value).network
            for other in self.used_subnets(exclude=name):
                if other.version == network.version and other.overlaps(network):
                    raise BadRequest('%s %s overlaps %s, already used on this host'
                                     % (key, value, other))
        return config

    # -- API objects --------------------------------------------------------------------
    def names(self):
        managed = self.db.names(KIND)
        host = [link['name'] for link in netlink.all_links()
                if link['name'] not in managed and not link['name'].startswith(HIDDEN)]
        return sorted(set(managed) | set(host))

    def get(self, name):
        doc = self.db.get(KIND, name)
        if doc is not None:
            status = 'Created' if netlink.exists(name) else 'Errored'
            return {'name': name, 'description': doc.get('description', ''),
                    'type': doc.get('type', 'bridge'), 'managed': True, 'status': status,
                    'config': dict(doc['config']), 'used_by': self.used_by(name),
                    'locations': ['none']}
        link = netlink.link_info(name)
        if link is None or name.startswith(HIDDEN):
            raise NotFound('Network %r not found' % name)
        return {'name': name, 'description': '', 'type': _link_type(link), 'managed': False,
                'status': '', 'config': {}, 'used_by': self.used_by(name), 'locations': []}

    def list(self):
        networks = []
        for name in self.names():
            try:
                networks.append(self.get(name))
            except NotFound:   # a host link (a stopped container's veth) gone meanwhile
                pass
        return networks

    def used_by(self, name):
        """Profiles and instances with a NIC on this network (by `network` or `parent`).

        An instance counts through its profiles too, as in LXD.
        """
        def uses(devices):
            return any(dev.get('type') == 'nic' and name in (dev.get('network'),
                                                             dev.get('parent'))
                       for dev in (devices or {}).values())
        profiles = {doc['name']: doc for doc in self.db.list('profile')}
        urls = ['/1.0/profiles/%s' % p for p, doc in profiles.items() if uses(doc.get('devices'))]
        for doc in self.db.list('instance'):
            devices = {}
            for profile in doc.get('profiles') or []:
                devices.update((profiles.get(profile) or {}).get('devices') or {})
            devices.update(doc.get('devices') or {})
            if uses(devices):
                urls.append('/1.0/instances/%s' % doc['name'])
        return urls

    # -- create / update / rename / delete ------------------------------------------------
    def create(self, name, config=None, description='', net_type='bridge'):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BadRequest('Invalid network name %r (1-15 letters, digits, "-", "_", "."; '
                             'starting with a letter)' % (name,))
        if net_type not in ('bridge', '', None):
            raise BadRequest('Network type %r is not supported (only bridge)' % net_type)
        config = dict(config or {})
        config.setdefault('ipv4.address', 'auto')
        config.setdefault('ipv6.address', 'none')
        validate_config(config)
        with self._lock:
            if self.db.get(KIND, name) is not None:
                raise Conflict('Network %r already exists' % name)
            if netlink.exists(name):
                raise Conflict('A host interface named %r already exists' % name)
            config = self._resolve_auto(name, config)
            if config.get('ipv4.address', 'none') != 'none':
                config.setdefault('ipv4.nat', 'true')
            doc = {'name': name, 'description': description or '', 'type': 'bridge',
                   'config': config}
            try:
                self._apply(doc)
            except BaseException:
                self._teardown(name)
                raise
            self.db.insert(KIND, name, doc)
        self.daemon.events.lifecycle('network-created', '/1.0/networks/%s' % name)
        return self.get(name)

    def update(self, name, config, description=None, merge=False):
        with self._lock:
            doc = self._doc(name)
            new_config = dict(doc['config']) if merge else {}
            for key, value in (config or {}).items():
                if value in (None, ''):
                    new_config.pop(key, None)
                else:
                    new_config[key] = value
            if not merge:
                # a PUT keeps the chosen subnets unless it names others (as LXD does)
                for key in ('ipv4.address', 'ipv6.address'):
                    if key not in new_config:
                        new_config[key] = 'none' if key == 'ipv6.address' else \
                            doc['config'].get(key, 'none')
            validate_config(new_config)
            new_config = self._resolve_auto(name, new_config)
            new = dict(doc, config=new_config)
            if description is not None:
                new['description'] = description
            try:
                self._apply(new)
            except BaseException:
                LOG.exception('Applying the new config of network %s failed; restoring', name)
                self._apply(doc)
                raise
            self.db.put(KIND, name, new)
        self.daemon.events.lifecycle('network-updated', '/1.0/networks/%s' % name)
        return self.get(name)

    def rename(self, old, new):
        if not isinstance(new, str) or not NAME_RE.match(new):
            raise BadRequest('Invalid network name %r' % (new,))
        with self._lock:
            doc = self._doc(old)
            if self.used_by(old):
                raise BadRequest('Network %r is in use and cannot be renamed' % old)
            if self.db.get(KIND, new) is not None or netlink.exists(new):
                raise Conflict('Network %r already exists' % new)
            self._teardown(old)
            renamed = dict(doc, name=new)
            if os.path.isdir(self.directory(old)):
                os.rename(self.directory(old), self.directory(new))
            try:
                self._apply(renamed)
            except BaseException:
                self._teardown(new)
                if os.path.isdir(self.directory(new)):
                    os.rename(self.directory(new), self.directory(old))
                self._apply(doc)
                raise
            self.db.rename(KIND, old, new)
            self.db.put(KIND, new, renamed)
        self.daemon.events.lifecycle('network-renamed', '/1.0/networks/%s' % new,
                                     old_name=old)

    def delete(self, name):
        with self._lock:
            self._doc(name)
            users = self.used_by(name)
            if users:
                raise BadRequest('Network %r is in use by %s' % (name, ', '.join(users)))
            self._teardown(name)
            shutil.rmtree(self.directory(name), ignore_errors=True)
            self.db.delete(KIND, name)
        self.daemon.events.lifecycle('network-deleted', '/1.0/networks/%s' % name)

    # -- host side ------------------------------------------------------------------------
    def _apply(self, doc):
        try:
            self._apply_host(doc)
        except (RuntimeError, NetlinkError, OSError) as exc:
            raise ApiError('Failed to set up network %s: %s' % (doc['name'], exc))

    def _apply_host(self, doc):
        name, config = doc['name'], doc['config']
        ipv4 = self._iface(config, 'ipv4.address')
        ipv6 = self._iface(config, 'ipv6.address')
        if not netlink.exists(name):
            netlink.create_bridge(name, hwaddr=config.get('bridge.hwaddr'),
                                  mtu=config.get('bridge.mtu'))
        elif config.get('bridge.mtu'):
            netlink.set_mtu(name, config['bridge.mtu'])
        self._set_addresses(name, [a for a in (ipv4, ipv6) if a])
        netlink.set_up(name)
        self._apply_tunnels(name, config)
        if ipv4 or ipv6:
            nat.enable_forwarding(ipv6=bool(ipv6))
        nat.apply(name, name, ipv4_subnet=ipv4 and str(ipv4.network),
                  ipv6_subnet=ipv6 and str(ipv6.network),
                  nat4=_bool(config.get('ipv4.nat')), nat6=_bool(config.get('ipv6.nat')))
        self._apply_dnsmasq(name, config, ipv4, ipv6)

    @staticmethod
    def _iface(config, key):
        value = config.get(key, 'none')
        return None if value in ('none', '', 'auto') else ipaddress.ip_interface(value)

    @staticmethod
    def _set_addresses(name, wanted):
        current = {ipaddress.ip_interface('%s/%d' % (address, prefixlen))
                   for _, family, address, prefixlen, scope in netlink.addresses(name)
                   if not (family == 10 and scope == 253)}
        if current != set(wanted):
            netlink.flush_addresses(name)
            for iface in wanted:
                netlink.add_address(name, str(iface.ip), iface.network.prefixlen)

    def _apply_tunnels(self, name, config):
        wanted = {tunnel_link_name(name, tunnel, fields): fields
                  for tunnel, fields in tunnels(config).items()}
        bridge = netlink.link_info(name)
        for link in netlink.all_links():
            if link['kind'] == 'vxlan' and link['master'] == bridge['index'] and \
                    link['name'] not in wanted:
                netlink.delete(link['name'])
        for link_name, fields in wanted.items():
            if netlink.exists(link_name):
                continue
            try:
                netlink.create_vxlan(link_name, fields.get('id', '1'), local=fields.get('local'),
                                     remote=fields.get('remote'), group=fields.get('group'),
                                     port=fields.get('port'), dev=fields.get('interface'),
                                     ttl=fields.get('ttl'), master=name)
            except ValueError as exc:
                raise BadRequest('Tunnel on %s: %s' % (name, exc))

    def _apply_dnsmasq(self, name, config, ipv4, ipv6):
        server = self.dnsmasq(name)
        dhcp4 = ipv4 is not None and _bool(config.get('ipv4.dhcp'), True)
        if not (dhcp4 or ipv6):
            server.stop()
            return
        ranges = []
        if dhcp4:
            ranges = parse_ranges(config.get('ipv4.dhcp.ranges') or
                                  subnet.default_dhcp_range(ipv4), ipv4)
        commands = server.commands(ipv4=ipv4 if dhcp4 else None, ipv6=ipv6, dhcp_ranges=ranges,
                                   dhcp6=_bool(config.get('ipv6.dhcp.stateful')),
                                   domain=config.get('dns.domain', ''),
                                   dns=config.get('dns.mode', 'managed') != 'none',
                                   lease_time=config.get('ipv4.dhcp.expiry', '1h'),
                                   resolv_file=self.daemon.config.dns_resolv_file)
        try:
            server.ensure(commands)
        except RuntimeError as exc:
            raise BadRequest('Network %s: %s' % (name, exc))

    def _teardown(self, name):
        """Remove everything of one network from the host; safe on a half-made one."""
        self.dnsmasq(name).stop()
        try:
            nat.remove(name)
        except RuntimeError:
            LOG.debug('no nftables table for %s', name)
        bridge = netlink.link_info(name)
        if bridge:
            for link in netlink.all_links():
                if link['kind'] == 'vxlan' and link['master'] == bridge['index']:
                    netlink.delete(link['name'])
            netlink.delete(name)

    # -- daemon life --------------------------------------------------------------------
    def start(self):
        """Re-create what is missing after a reboot; adopt what a previous run left up."""
        for doc in self.db.list(KIND):
            try:
                with self._lock:
                    self._apply(doc)
            except Exception:
                LOG.exception('Could not bring up network %s', doc['name'])
        subnet_wanted = self.daemon.config.bridge_subnet
        if subnet_wanted and self.db.get(KIND, DEFAULT_NETWORK) is None:
            iface = ipaddress.ip_interface(subnet_wanted)
            if iface.ip == iface.network.network_address:   # '10.0.3.0/24': gateway .1
                subnet_wanted = '%s/%d' % (iface.network[1], iface.network.prefixlen)
            self.create(DEFAULT_NETWORK, {'ipv4.address': subnet_wanted, 'ipv4.nat': 'true'})
            self._default_created = True

    def attach_default_network(self):
        """After profiles exist: give `default` an eth0 on the default network just made.

        Only then: an operator who later removes it is not overruled at every start.
        """
        if not getattr(self, '_default_created', False):
            return
        profile = self.db.get('profile', 'default')
        if profile is None:
            return
        devices = profile.setdefault('devices', {})
        if 'eth0' not in devices:
            devices['eth0'] = {'type': 'nic', 'name': 'eth0', 'network': DEFAULT_NETWORK}
            self.db.put('profile', 'default', profile)
        self._default_created = False

    # -- DHCP data ------------------------------------------------------------------------
    def leases(self, name):
        self._doc(name)
        server = self.dnsmasq(name)
        now = time.time()
        result = []
        for expiry, hwaddr, address, hostname in server.leases():
            if expiry and expiry < now:
                continue
            result.append({'hostname': server.name(hwaddr) or hostname, 'hwaddr': hwaddr,
                           'address': address, 'type': 'dynamic', 'location': 'none',
                           'project': 'default'})
        for hwaddr, address in server.reservations().items():
            result.append({'hostname': server.name(hwaddr), 'hwaddr': hwaddr,
                           'address': address, 'type': 'static', 'location': 'none',
                           'project': 'default'})
        return result

    def reserve(self, name, hwaddr, address, hostname=''):
        """Pin `address` (a NIC's ipv4.address) and the DNS name to `hwaddr` in the DHCP."""
        iface = self.ipv4(name)
        if iface is None:
            raise BadRequest('Network %r has no IPv4 subnet for a reservation' % name)
        ip = _check_ip('ipv4.address', address, 4)
        if ip not in iface.network or ip == iface.ip:
            raise BadRequest('ipv4.address %s is not a free address of %s'
                             % (address, iface.network))
        for mac, other in self.dnsmasq(name).reservations().items():
            if other == str(ip) and mac != hwaddr.lower():
                raise Conflict('ipv4.address %s is already reserved on %s' % (address, name))
        self.dnsmasq(name).pin(hwaddr, str(ip))
        self.register(name, hwaddr, hostname)

    def register(self, name, hwaddr, hostname):
        """Let the network's DNS answer for `hostname` (the instance) once it has a lease.

        With ipv6.dhcp.stateful, for its SLAAC address too (what dnsmasq's ra-names answered).
        """
        doc = self.db.get(KIND, name)
        if doc is not None and re.match(r'^[A-Za-z0-9-]{1,63}$', hostname):
            self.dnsmasq(name).set_name(hwaddr, hostname, _slaac_address(doc['config'], hwaddr))

    def release(self, name, hwaddr):
        if self.db.get(KIND, name) is not None:
            self.dnsmasq(name).forget(hwaddr)

    def release_lease(self, name, hwaddr):
        """Free the IPv4 address `hwaddr` holds on network `name`: its NIC is gone for good."""
        if self.db.get(KIND, name) is None:
            return
        iface = self.ipv4(name)
        if iface is None:
            return
        try:
            self.dnsmasq(name).release_leases(hwaddr, str(iface.ip))
        except OSError as exc:      # the lease then expires by itself; the delete goes on
            LOG.warning('Network %s: releasing the lease of %s: %s', name, hwaddr, exc)

    def state(self, name):
        link = netlink.link_info(name)
        if link is None:
            raise NotFound('Network %r not found' % name)
        addresses = []
        for _, family, address, prefixlen, scope in netlink.addresses(name):
            addresses.append({'family': 'inet' if family == 2 else 'inet6', 'address': address,
                              'netmask': str(prefixlen),
                              'scope': {0: 'global', 253: 'link', 254: 'local'}.get(scope,
                                                                                    'global')})
        stats = link['stats']
        state = {
            'addresses': addresses,
            'counters': {'bytes_received': stats['rx_bytes'], 'bytes_sent': stats['tx_bytes'],
                         'packets_received': stats['rx_packets'],
                         'packets_sent': stats['tx_packets']},
            'hwaddr': link['hwaddr'], 'mtu': link['mtu'],
            'state': 'up' if link['up'] else 'down',
            'type': 'loopback' if link['loopback'] else 'broadcast',
            'bond': None, 'bridge': None, 'vlan': None,
        }
        if link['kind'] == 'bridge':
            state['bridge'] = {
                'id': '8000.' + link['hwaddr'].replace(':', ''), 'stp': False,
                'forward_delay': 0, 'vlan_default': 1, 'vlan_filtering': False,
                'upper_devices': sorted(other['name'] for other in netlink.all_links()
                                        if other['master'] == link['index'])}
        return state


def _link_type(link):
    if link['loopback']:
        return 'loopback'
    return {'bridge': 'bridge', None: 'physical', 'veth': 'physical'}.get(link['kind'],
                                                                          link['kind'])
