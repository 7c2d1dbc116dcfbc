"""Host networking for the backend: managed bridges, VXLAN overlays, NAT, DHCP/DNS.

netlink.py  links, addresses, veth, vxlan, tc (pyroute2 only; never parses `ip` output)
subnet.py   choosing a free private subnet from the host's own addresses and routes
nat.py      one nftables table per network (NAT and the DHCP/DNS holes)
dnsmasq.py  a DHCP/RA and a DNS dnsmasq per network, started and stopped by PID
service.py  NetworkService (daemon.networks): the API objects, persistence, reconciliation
"""
import logging

import pyroute2  # noqa: F401  (first: importing it resets its logger's level to NOTSET)

# pyroute2 logs every netlink message at DEBUG (formatting each costs more than the call): far
# too much for the daemon's --debug log
logging.getLogger('pyroute2').setLevel(logging.INFO)
