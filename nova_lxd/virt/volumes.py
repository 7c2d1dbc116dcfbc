"""Cinder volumes through os-brick, passed into the container as block devices.

os-brick connects the volume on this host (iSCSI, RBD, NFS, FC, local, ...) and hands back a
host block device; the container gets it as a `unix-block` device at Nova's mountpoint
(/dev/vdb ...), hot-added to a running container. The backend must be on this host for that
path to mean anything (as with every LXD block device). os-brick runs its privileged steps
through privsep ([privsep_osbrick] helper_command).

Volumes given at boot (block_device_info) are connected the same way and become devices of the
container before it first starts; a root volume is refused: containers boot from images.

Live migration: the destination connects the volumes before the move (pre_live_migration, with
the connections Cinder made for it), the container starts there on the destination's host
devices, and the source disconnects its own after success (post_live_migration). When the move
fails, Nova has the destination detach each volume (detach_volume without a container there):
only its connection is removed, the instance keeps its volumes on the source.
"""
import hashlib
import os
import shutil

from os_brick.initiator import connector as brick_connector
from oslo_log import log as logging

from nova import exception
from nova.i18n import _
from nova import utils
from nova.virt import driver as virt_driver

from nova_lxd.virt import conf

CONF = conf.CONF
LOG = logging.getLogger(__name__)


def connector_properties():
    """os-brick's real description of this host (IP, initiator, NQN, multipath...)."""
    # storage traffic may have its own address, as for every Nova driver
    return brick_connector.get_connector_properties(
        utils.get_root_helper(), CONF.my_block_storage_ip, False, False, host=CONF.host)


def _brick(connection_info):
    protocol = connection_info['driver_volume_type'].upper()
    try:
        return brick_connector.InitiatorConnector.factory(
            protocol, utils.get_root_helper(), use_multipath=False, device_scan_attempts=3,
            # where os-brick mounts NFS shares (RemoteFsConnector refuses to start without)
            nfs_mount_point_base=os.path.join(CONF.instances_path, 'mnt'))
    except ValueError:
        raise exception.VolumeDriverNotFound(driver_type=protocol)


class RootVolumeNotSupported(exception.InvalidBDM, exception.InvalidInput):
    # an InvalidInput: the compute manager aborts the build rather than rescheduling it to a
    # host that would refuse it the same way
    msg_fmt = _('Volume %(volume)s at %(device)s is the root disk: containers boot from '
                'images, not root volumes; boot from an image and attach the volume as a '
                'data volume')


def _device_key(mountpoint):
    return 'volume-%s' % hashlib.sha256(mountpoint.encode()).hexdigest()[:12]


def _device(path, mountpoint):
    """The container's device (key and config) for the host device path at mountpoint."""
    return {_device_key(mountpoint): {'type': 'unix-block', 'source': path, 'path': mountpoint}}


def _device_of(container, mountpoint):
    for key, dev in container.devices.items():
        if dev.get('type') == 'unix-block' and dev.get('path') == mountpoint:
            return key
    return None


def connect(connection_info):
    """Connect through os-brick; records the host device in connection_info['data']."""
    info = _brick(connection_info).connect_volume(connection_info['data'])
    connection_info['data']['device_path'] = info['path']
    return info['path']


def disconnect(connection_info):
    _brick(connection_info).disconnect_volume(connection_info['data'], None)


def attach(container, connection_info, mountpoint):
    if _device_of(container, mountpoint):
        raise exception.InvalidInput(reason=_('%(container)s already has a volume at %(mp)s') %
                                     {'container': container.name, 'mp': mountpoint})
    path = connect(connection_info)
    try:
        container.devices = dict(container.devices, **_device(path, mountpoint))
        container.save(wait=True)
    except Exception:
        container.sync()
        disconnect(connection_info)
        raise


def detach(container, connection_info, mountpoint):
    """Remove the device (container None: there is none on this host) and disconnect."""
    key = _device_of(container, mountpoint) if container is not None else None
    if key:
        container.devices = {k: v for k, v in container.devices.items() if k != key}
        container.save(wait=True)
    disconnect(connection_info)


def extend(connection_info):
    """The host device's new size in bytes (the container sees it at once: same device)."""
    return _brick(connection_info).extend_volume(connection_info['data'])


def swap(container, old_connection_info, new_connection_info, mountpoint, resize_to):
    """Copy old onto new, then the container's device at mountpoint points at new."""
    key = _device_of(container, mountpoint)
    if key is None:
        raise exception.VolumeNotFound(volume_id=mountpoint)
    new_path = connect(new_connection_info)
    try:
        with open(old_connection_info['data']['device_path'], 'rb') as src, \
                open(new_path, 'r+b') as dst:
            shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
        devices = dict(container.devices)
        devices[key] = dict(devices[key], source=new_path)
        container.devices = devices
        container.save(wait=True)
    except Exception:
        container.sync()
        disconnect(new_connection_info)
        raise
    disconnect(old_connection_info)


# -- volumes given at boot (block_device_info) ---------------------------------------------------

def refuse_root_volume(block_device_info):
    """Boot from volume is refused: the root disk of a container comes from an image."""
    root = virt_driver.block_device_info_get_root_device(block_device_info)
    for bdm in virt_driver.block_device_info_get_mapping(block_device_info):
        if bdm.get('boot_index') == 0 or (root and bdm.get('mount_device') == root):
            raise RootVolumeNotSupported(volume=bdm.get('volume_id') or
                                         (bdm.get('connection_info') or {}).get('serial'),
                                         device=bdm.get('mount_device'))


def connect_at_boot(block_device_info):
    """Connect every volume of block_device_info; their devices, for the container's definition.

    Each is connected and placed as attach() does it. The host device path is saved in the
    mapping's connection_info (as libvirt does), so that detach and swap find it later. If one
    fails, those already connected are disconnected.
    """
    refuse_root_volume(block_device_info)
    devices, connected = {}, []
    try:
        for bdm in virt_driver.block_device_info_get_mapping(block_device_info):
            mountpoint = bdm.get('mount_device')
            if not mountpoint or _device_key(mountpoint) in devices:
                raise exception.InvalidBDM(
                    _('volume %(volume)s: no device name, or one used twice (%(mp)s)') %
                    {'volume': bdm.get('volume_id'), 'mp': mountpoint})
            path = connect(bdm['connection_info'])
            connected.append(bdm)
            devices.update(_device(path, mountpoint))
            if hasattr(bdm, 'save'):   # a plain dict (not Nova's driver BDM) has nothing to save
                bdm.save()
    except Exception:
        disconnect_all({'block_device_mapping': connected})
        raise
    return devices


def connect_for_move(block_device_info):
    """pre_live_migration: connect the volumes on this (destination) host before the move.

    The host device paths are saved in the mappings; the container gets them as devices when
    it starts here (reconnect). If one fails, those already connected are disconnected.
    """
    connect_at_boot(block_device_info)


def disconnect_all(block_device_info):
    """Disconnect every volume of block_device_info from this host (the container is gone).

    A failure is logged and the others are still disconnected, as Nova's libvirt driver does
    when an instance is deleted: the delete must go on.
    """
    for bdm in virt_driver.block_device_info_get_mapping(block_device_info):
        try:
            disconnect(bdm['connection_info'])
        except Exception:
            LOG.exception('Disconnecting volume %s at %s failed', bdm.get('volume_id'),
                          bdm.get('mount_device'))


def reconnect(container, block_device_info):
    """Before a stopped container starts: the volumes Nova passes connected, as devices.

    Each device points at the host device os-brick gives now: a host reboot or a move to
    another host changes it (os-brick's connect of a connected volume only finds it).
    """
    devices = dict(container.devices)
    for bdm in virt_driver.block_device_info_get_mapping(block_device_info):
        mountpoint = bdm['mount_device']
        path = connect(bdm['connection_info'])
        devices.pop(_device_of(container, mountpoint), None)
        devices.update(_device(path, mountpoint))
        if hasattr(bdm, 'save'):
            bdm.save()
    if devices != container.devices:
        container.devices = devices
        container.save(wait=True)
