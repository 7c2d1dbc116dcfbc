"""Device role tags: instance.device_metadata, which the metadata service and the config drive
publish as the `devices` list of meta_data.json.

NICs: a user tags a port at boot (API microversion >= 2.42, `networks: [{"port": ..., "tag":
...}]`) or when attaching it (>= 2.49); Nova keeps the tag on the instance's VirtualInterface.
The guest finds its tagged NICs by MAC address.

Volumes: a user tags a volume at boot (`block_device_mapping_v2: [{..., "tag": ...}]`, >= 2.42)
or when attaching it (>= 2.49); Nova keeps the tag on the BlockDeviceMapping. A volume reaches
the container as a device node at the mapping's device name, so its entry carries the volume id
as serial and that device name as path: the guest finds it at the path.

Containers have no device bus, so no entry carries a bus: the metadata shows bus and address
`none`, which is Nova's own spelling for that.

Swapped volumes: Nova records a swap in the BDM only after the driver's swap_volume returns
(and which id it records is Cinder's answer), so the metadata is rebuilt from the BDMs right
after that (refresh_after_swap) rather than keep the old id until the next attach or detach.
"""
import threading

from oslo_log import log as logging

from nova import exception
from nova import objects
from nova import utils

LOG = logging.getLogger(__name__)


def _nics(context, instance, network_info, leaving_macs):
    macs = {vif['address'] for vif in network_info or []} - set(leaving_macs)
    if not macs:
        return []
    return [objects.NetworkInterfaceMetadata(mac=vif.address, tags=[vif.tag])
            for vif in objects.VirtualInterfaceList.get_by_instance_uuid(context, instance.uuid)
            if vif.address in macs and 'tag' in vif and vif.tag]


def _volumes(context, instance, leaving_paths):
    return [objects.DiskMetadata(serial=bdm.volume_id, path=bdm.device_name, tags=[bdm.tag])
            for bdm in objects.BlockDeviceMappingList.get_by_instance_uuid(context,
                                                                           instance.uuid)
            if bdm.is_volume and bdm.tag and bdm.volume_id and bdm.device_name
            and bdm.device_name not in leaving_paths]


def build(context, instance, network_info, leaving_macs=(), leaving_paths=()):
    """InstanceDeviceMetadata of the instance's tagged NICs and volumes (None when none are).

    leaving_macs: MAC addresses of VIFs being detached, leaving_paths: device names of volumes
    being detached (both still in Nova's records until it finishes).
    """
    devices = (_nics(context, instance, network_info, leaving_macs) +
               _volumes(context, instance, leaving_paths))
    return objects.InstanceDeviceMetadata(devices=devices) if devices else None


def refresh_after_swap(context, instance):
    """Rebuild the instance's device metadata once Nova has recorded a volume swap.

    Nova's compute manager holds the instance's lock (utils.synchronized(uuid)) through the
    whole swap and saves the BDM after the driver returns, so a thread that takes that same
    lock runs right after the save. The id the BDM then holds is the truth: a Cinder migration
    keeps the old one (Cinder renames the new volume to it), a plain swap the new one.
    """
    uuid = instance.uuid

    @utils.synchronized(uuid)
    def refresh():
        current = objects.Instance.get_by_uuid(context, uuid, expected_attrs=['info_cache'])
        current.device_metadata = build(context, current, current.get_network_info())
        current.save()

    def run():
        try:
            refresh()
        except exception.InstanceNotFound:
            pass   # deleted meanwhile: nothing to describe
        except Exception:   # a thread of its own: nobody else would see the error
            LOG.exception('Device metadata of %s not refreshed after a volume swap', uuid)
    threading.Thread(target=run, name='device-metadata-%s' % uuid, daemon=True).start()
