"""Interfaces attached to and detached from a running container (LXD hotplugs nic devices).

An attached VIF gets the first free `ethN` (device key and name inside the container alike);
detach finds its nic by the VIF's MAC address, so the numbering of the others never matters.
"""
import itertools

from nova_lxd.virt import vif as lxd_vif


def _free_name(devices):
    taken = set(devices) | {d.get('name') for d in devices.values() if d.get('type') == 'nic'}
    return next('eth%d' % i for i in itertools.count() if 'eth%d' % i not in taken)


def attach(container, instance, vif):
    name = _free_name(container.devices)
    nic = lxd_vif.nic_device(vif, int(name[3:]))
    lxd_vif.plug(instance, vif)
    try:
        container.devices = dict(container.devices, **{name: nic})
        container.save(wait=True)
    except Exception:
        container.sync()
        lxd_vif.unplug(instance, vif)
        raise
    return name


def detach(container, instance, vif):
    """Remove the VIF's nic (if the container still has it) and unplug the VIF."""
    names = [key for key, dev in container.devices.items()
             if dev.get('type') == 'nic' and dev.get('hwaddr') == vif['address']]
    if names:
        container.devices = {k: v for k, v in container.devices.items() if k not in names}
        container.save(wait=True)
    lxd_vif.unplug(instance, vif)
