"""How a container image travels through Glance, and the image properties containers honour.

Imported by the Nova driver (nova_lxd.virt) and by the tooling; it must stay free of heavy imports.

Glance convention for images made by `nova-lxd-image`:
  container_format = 'bare', disk_format = 'raw', property lxd_image_format = 'unified'
  (an LXD unified tarball: rootfs/ + metadata.yaml + templates/, gzip or xz compressed).
A Glance image with disk_format 'raw' or 'qcow2' WITHOUT that property is a disk image; the driver
converts it with `nova_lxd.image.convert.disk_to_unified` (Linux root filesystem extracted).
"""

CONTAINER_FORMAT = 'bare'
DISK_FORMAT = 'raw'
# Glance property naming the image's LXD layout; its value is one of IMAGE_FORMATS.
PROP_IMAGE_FORMAT = 'lxd_image_format'
FORMAT_UNIFIED = 'unified'
IMAGE_FORMATS = (FORMAT_UNIFIED,)
# disk formats the driver can convert into a container image
CONVERTIBLE_DISK_FORMATS = ('raw', 'qcow2')

# Nova's HVType for containers; set on images so the scheduler sends them to LXD hosts.
HYPERVISOR_TYPE = 'lxc'

# metadata.yaml `properties` (and Glance image properties) that the backend honours when it starts
# and stops a container.  Values are strings:
#   halt_signal    signal sent to the container's init for a clean stop ("SIGUSR1" for busybox
#                  init, "SIGRTMIN+3" for systemd); liblxc's default (SIGPWR) when absent.
#   reboot_signal  signal for a clean reboot ("SIGTERM" for busybox init, "SIGINT" for systemd).
#   init_cmd       the init command line inside the rootfs (default "/sbin/init").
PROP_HALT_SIGNAL = 'halt_signal'
PROP_REBOOT_SIGNAL = 'reboot_signal'
PROP_INIT_CMD = 'init_cmd'
CONTAINER_PROPERTIES = (PROP_HALT_SIGNAL, PROP_REBOOT_SIGNAL, PROP_INIT_CMD)

# Debian (dpkg) architecture names -> LXD architecture names (also what Glance's
# `architecture` property uses).
DPKG_TO_LXD_ARCH = {
    'amd64': 'x86_64',
    'i386': 'i686',
    'arm64': 'aarch64',
    'armhf': 'armv7l',
    'armel': 'armv6l',
    'ppc64el': 'ppc64le',
    's390x': 's390x',
    'riscv64': 'riscv64',
    'mips64el': 'mips64',
}

# ELF e_machine (with ELF class/endianness where it matters) -> LXD architecture name; used to
# learn a disk image's architecture by reading, never running, its binaries.
ELF_MACHINE_TO_LXD_ARCH = {
    (0x3e, 64): 'x86_64',
    (0x03, 32): 'i686',
    (0xb7, 64): 'aarch64',
    (0x28, 32): 'armv7l',
    (0x15, 64): 'ppc64le',
    (0x16, 64): 's390x',
    (0xf3, 64): 'riscv64',
}


def is_unified(disk_format, properties):
    """True when a Glance image (disk_format, properties) is an LXD unified tarball."""
    return (disk_format == DISK_FORMAT
            and (properties or {}).get(PROP_IMAGE_FORMAT) == FORMAT_UNIFIED)


def is_convertible_disk(disk_format, properties):
    """True when a Glance image is a disk image the driver should convert."""
    return disk_format in CONVERTIBLE_DISK_FORMATS and not is_unified(disk_format, properties)
