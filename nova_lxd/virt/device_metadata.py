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
"""
from nova import objects


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
