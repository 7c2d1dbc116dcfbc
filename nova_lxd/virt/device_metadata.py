"""Device role tags: instance.device_metadata, which the metadata service and the config drive
publish as the `devices` list of meta_data.json.

A user tags a port at boot (API microversion >= 2.42, `networks: [{"port": ..., "tag": ...}]`)
or when attaching it (>= 2.49); Nova keeps the tag on the instance's VirtualInterface. The guest
finds its tagged NICs by MAC address. Containers have no device bus, so the entries carry no
bus: the metadata shows bus and address `none`, which is Nova's own spelling for that.

Volumes are not listed yet (their tags are not passed on: supports_tagged_attach_volume is
false); a volume reaches a container as a device node, not on a bus with an address.
"""
from nova import objects


def build(context, instance, network_info, leaving=()):
    """InstanceDeviceMetadata of the tagged NICs in network_info (None when there are none).

    leaving: MAC addresses of VIFs being detached (still in Nova's records until it finishes).
    """
    macs = {vif['address'] for vif in network_info or []} - set(leaving)
    if not macs:
        return None
    devices = [objects.NetworkInterfaceMetadata(mac=vif.address, tags=[vif.tag])
               for vif in objects.VirtualInterfaceList.get_by_instance_uuid(context,
                                                                            instance.uuid)
               if vif.address in macs and 'tag' in vif and vif.tag]
    return objects.InstanceDeviceMetadata(devices=devices) if devices else None
