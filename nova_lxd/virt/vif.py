"""Plugging Neutron ports with os-vif and describing them as LXD nic devices.

- `bridge` (Linux bridge): the bridge is ensured here (os-vif 5 no longer ships its Linux
  bridge plugin); the container gets a `bridged` nic on it, named after the port's tap device.
- `ovs` with hybrid plugging: os-vif builds the qbr bridge and its qvb/qvo pair into OVS; the
  container gets a `bridged` nic on the qbr bridge.
- `ovs` without hybrid plugging: a veth pair is made here, os-vif plugs its host end into the
  integration bridge (create_port) and the container gets the other end as a `physical` nic.
- `tap` (routed backends such as Calico): a veth pair is made here; its host end (the port's
  tap device) is left to the Neutron agent, the container gets the other end as a `physical` nic.
In every case the nic carries the port's MAC address and the network's MTU.
"""
import time

import os_vif
from oslo_log import log as logging
from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool
from pyroute2.netlink.exceptions import NetlinkError

from nova import exception
from nova.i18n import _
from nova.network import model as network_model
from nova.network import os_vif_util

LOG = logging.getLogger(__name__)
_initialized = False


def _init():
    global _initialized
    if not _initialized:
        os_vif.initialize()
        _initialized = True


def _peer_name(devname):
    """The container end of a veth pair whose host end is devname (tapXXX -> tinXXX)."""
    return 'tin' + devname[3:]


def _devname(vif):
    return vif.get('devname') or ('tap' + vif['id'])[:network_model.NIC_NAME_LEN]


def _mtu(vif):
    mtu = vif['network'].get_meta('mtu') if vif.get('network') else None
    return int(mtu) if mtu else None


def _link_exists(ipr, name):
    return bool(ipr.link_lookup(ifname=name))


def _ensure_bridge(name, mtu):
    with IPRoute() as ipr:
        if not _link_exists(ipr, name):
            LOG.info('Creating Linux bridge %s', name)
            try:
                ipr.link('add', ifname=name, kind='bridge')
            except NetlinkError as exc:
                if exc.code != 17:   # EEXIST: created meanwhile
                    raise
        index = ipr.link_lookup(ifname=name)[0]
        if mtu:
            ipr.link('set', index=index, mtu=mtu)
        ipr.link('set', index=index, state='up')


def _create_veth(host_end, peer, mtu):
    with IPRoute() as ipr:
        if _link_exists(ipr, host_end):
            ipr.link('del', ifname=host_end)
        ipr.link('add', ifname=host_end, kind='veth', peer=peer)
        for name in (host_end, peer):
            index = ipr.link_lookup(ifname=name)[0]
            if mtu:
                ipr.link('set', index=index, mtu=mtu)
            ipr.link('set', index=index, state='up')


def _disable_tx_checksum(*names):
    """Have the kernel fill in checksums itself.

    OVS's userspace (netdev) datapath forwards a veth's partially checksummed packets
    unfinished, and receivers drop them (DHCP, TCP).
    """
    ethtool = Ethtool()
    try:
        for name in names:
            features = ethtool.get_features(name)
            features.features['tx-checksum-ip-generic'].enable = False
            ethtool.set_features(name, features)
    finally:
        ethtool.close()


def _delete_link(name):
    with IPRoute() as ipr:
        if _link_exists(ipr, name):
            ipr.link('del', ifname=name)


def _osvif(vif):
    osv_vif = os_vif_util.nova_to_osvif_vif(vif)
    if osv_vif is None:
        raise exception.VirtualInterfacePlugException(
            _('VIF type %s is not supported by nova-lxd (supported: bridge, ovs)') % vif['type'])
    return osv_vif


def _kind(vif):
    if vif['type'] == network_model.VIF_TYPE_BRIDGE:
        return 'linux_bridge'
    if vif['type'] == network_model.VIF_TYPE_OVS:
        return 'ovs_hybrid' if vif.is_hybrid_plug_enabled() else 'ovs'
    if vif['type'] == network_model.VIF_TYPE_TAP:
        return 'tap'
    raise exception.VirtualInterfacePlugException(
        _('VIF type %s is not supported by nova-lxd (supported: bridge, ovs, tap)') % vif['type'])


def plug(instance, vif):
    kind = _kind(vif)
    mtu = _mtu(vif)
    if kind == 'linux_bridge':
        _ensure_bridge(vif['network']['bridge'], mtu)
        return
    if kind == 'tap':
        devname = _devname(vif)
        _create_veth(devname, _peer_name(devname), mtu)
        return
    _init()
    osv_vif = _osvif(vif)
    info = os_vif_util.nova_to_osvif_instance(instance)
    if kind == 'ovs':
        devname = _devname(vif)
        _create_veth(devname, _peer_name(devname), mtu)
        if getattr(osv_vif.port_profile, 'datapath_type', None) == 'netdev':
            _disable_tx_checksum(devname, _peer_name(devname))
        osv_vif.port_profile.create_port = True
    os_vif.plug(osv_vif, info)


def unplug(instance, vif):
    """Undo plug; a VIF already gone is not an error."""
    kind = _kind(vif)
    if kind == 'linux_bridge':
        return   # the bridge is shared by the network; LXD removes the nic's veth itself
    if kind == 'tap':
        _delete_link(_devname(vif))
        return
    _init()
    try:
        os_vif.unplug(_osvif(vif), os_vif_util.nova_to_osvif_instance(instance))
    except Exception:
        LOG.exception('os-vif could not unplug VIF %s', vif['id'], instance=instance)
    if kind == 'ovs':
        _delete_link(_devname(vif))


def wait_for_stale_host_ends(network_info, timeout=10):
    """Before a restart: let the host ends of a stopped container's bridged nics vanish.

    The kernel removes a veth pair when the container's network namespace dies, which can
    trail the stop a little; starting meanwhile would collide on the nic's host_name.
    """
    names = [_devname(vif) for vif in network_info or []
             if _kind(vif) in ('linux_bridge', 'ovs_hybrid')]
    deadline = time.monotonic() + timeout
    with IPRoute() as ipr:
        while names and time.monotonic() < deadline:
            names = [n for n in names if _link_exists(ipr, n)]
            if names:
                time.sleep(0.1)
    if names:
        LOG.warning('Host interfaces %s of a stopped container are still present', names)


def nic_device(vif, index):
    """The LXD nic device for a plugged VIF."""
    kind = _kind(vif)
    devname = _devname(vif)
    nic = {'type': 'nic', 'name': 'eth%d' % index, 'hwaddr': vif['address']}
    mtu = _mtu(vif)
    if mtu:
        nic['mtu'] = str(mtu)
    if kind in ('ovs', 'tap'):
        nic.update(nictype='physical', parent=_peer_name(devname))
    else:
        bridge = (vif['network']['bridge'] if kind == 'linux_bridge'
                  else 'qbr' + vif['id'][:network_model.NIC_NAME_LEN - 3])
        nic.update(nictype='bridged', parent=bridge, host_name=devname)
    return nic


def nic_devices(network_info):
    return {'eth%d' % i: nic_device(vif, i) for i, vif in enumerate(network_info or [])}


def plugged_events(network_info):
    """Neutron events to wait for before start: ports Neutron has not yet reported active."""
    return [('network-vif-plugged', vif['id']) for vif in network_info or []
            if vif.get('active', True) is False]
