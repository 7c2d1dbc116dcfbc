"""`none`: masks a device of the same name inherited from a profile (handled in config.expand)."""
from nova_lxd.backend.instances.devices import DeviceType, register


class NoneDevice(DeviceType):
    type = 'none'

    def hotplug(self, ctx, name, dev):
        pass

    def unplug(self, ctx, name, dev):
        pass


register(NoneDevice)
