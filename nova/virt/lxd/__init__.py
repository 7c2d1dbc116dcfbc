# nova loads compute_driver = lxd.LXDDriver from nova.virt.lxd: the only file shipped under nova/.
from nova_lxd.virt.driver import LXDDriver  # noqa: F401
