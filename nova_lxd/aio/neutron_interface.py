"""A Neutron interface driver for Open vSwitch's userspace (netdev) datapath.

On the userspace datapath, packets a veth end sends with a partial checksum (the kernel's
transmit checksum offload) leave OVS with that checksum never filled in: ARP works, DHCP replies
and TCP are dropped by the receiver. This driver is Neutron's OVSInterfaceDriver with
`ovs_use_veth` (the DHCP namespace joined by a veth pair) plus transmit checksumming turned off
on both ends, so the kernel computes checksums itself. Used by the all-in-one cloud's DHCP agent:

    [DEFAULT]
    interface_driver = nova_lxd.aio.neutron_interface.OVSNetdevInterfaceDriver
    ovs_use_veth = True
"""
from neutron.agent.linux import interface
from neutron.agent.linux import ip_lib


def disable_tx_offload(device, namespace=None):
    ip_lib.IPWrapper(namespace=namespace).netns.execute(
        ['ethtool', '-K', device, 'tx', 'off'], run_as_root=True)


class OVSNetdevInterfaceDriver(interface.OVSInterfaceDriver):
    def plug_new(self, network_id, port_id, device_name, mac_address,
                 bridge=None, namespace=None, prefix=None, mtu=None):
        super().plug_new(network_id, port_id, device_name, mac_address,
                         bridge=bridge, namespace=namespace, prefix=prefix, mtu=mtu)
        if self.conf.ovs_use_veth:
            disable_tx_offload(self._get_tap_name(device_name, prefix))
        disable_tx_offload(device_name, namespace)
