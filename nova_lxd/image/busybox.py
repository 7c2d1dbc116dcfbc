"""`nova-lxd-image build busybox`: a tiny system-container image from Debian's busybox-static."""
import os
import re
import shutil
import subprocess
import tempfile

from nova_lxd.image import formats
from nova_lxd.image import metadata
from nova_lxd.image import pack

BUSYBOX = '/bin/busybox'      # Debian's busybox-static (bindep.txt)
PACKAGE = 'busybox-static'

# busybox init halts on SIGUSR1 and reboots on SIGTERM (LXC's SIGPWR default means nothing to it)
PROPERTIES = {
    formats.PROP_HALT_SIGNAL: 'SIGUSR1',
    formats.PROP_REBOOT_SIGNAL: 'SIGTERM',
    formats.PROP_INIT_CMD: '/sbin/init',
}

# No getty and no console shell: a container is reached by exec, and its init only has to start
# the network and wait for a halt or reboot signal.
INITTAB = """\
# nova-lxd busybox image: no getty, no console shell (reach it with exec).
# busybox init: SIGUSR1 halts, SIGTERM reboots.
::sysinit:/etc/init.d/rcS
::shutdown:/etc/init.d/rcK
"""

RCS = """\
#!/bin/sh
# Boot: mount what the container manager did not, set the hostname, DHCP on every NIC.
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/class ] || mount -t sysfs sysfs /sys
mkdir -p /run /var/run /tmp
[ -s /etc/hostname ] && hostname -F /etc/hostname
echo "busybox: booting $(hostname)"
ip link set lo up
for dev in /sys/class/net/*; do
    name=${dev##*/}
    [ "$name" = lo ] && continue
    ip link set "$name" up
    # -b: go to the background if no lease yet, and keep trying (and renewing)
    udhcpc -b -i "$name" -p "/run/udhcpc.$name.pid" \\
        -s /usr/share/udhcpc/default.script >/dev/null 2>&1
done
exit 0
"""

RCK = """\
#!/bin/sh
# Shutdown (run by init on its halt/reboot signal): release leases and flush buffers.
echo "busybox: shutting down"
for pid in /run/udhcpc.*.pid; do [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null; done
sync
exit 0
"""

UDHCPC_SCRIPT = """\
#!/bin/sh
# udhcpc event script: apply the lease to $interface, the default route and resolv.conf.
RESOLV=/etc/resolv.conf
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" \\
            ${broadcast:+broadcast "$broadcast"}
        if [ -n "$router" ]; then
            while ip route del default dev "$interface" 2>/dev/null; do :; done
            for gw in $router; do
                ip route add default via "$gw" dev "$interface" && break
            done
        fi
        if [ -n "$dns" ]; then
            : > "$RESOLV"
            [ -n "$domain" ] && echo "search $domain" >> "$RESOLV"
            for ns in $dns; do echo "nameserver $ns" >> "$RESOLV"; done
        fi
        ;;
esac
exit 0
"""

FILES = {
    # path: (mode, content)
    'etc/inittab': (0o644, INITTAB),
    'etc/init.d/rcS': (0o755, RCS),
    'etc/init.d/rcK': (0o755, RCK),
    'usr/share/udhcpc/default.script': (0o755, UDHCPC_SCRIPT),
    'etc/hostname': (0o644, 'busybox\n'),
    'etc/hosts': (0o644, '127.0.0.1\tlocalhost\n127.0.1.1\tbusybox\n::1\tlocalhost\n'),
    'etc/passwd': (0o644, 'root:x:0:0:root:/root:/bin/sh\n'
                          'nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n'),
    'etc/group': (0o644, 'root:x:0:\nnogroup:x:65534:\n'),
    # no password: root logs in only through exec
    'etc/shadow': (0o600, 'root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n'),
    'etc/shells': (0o644, '/bin/sh\n/bin/ash\n'),
    'etc/resolv.conf': (0o644, ''),
    'etc/os-release': (0o644, None),   # filled in with the version
}
DIRS = {'bin': 0o755, 'sbin': 0o755, 'usr/bin': 0o755, 'usr/sbin': 0o755, 'etc': 0o755,
        'dev': 0o755, 'proc': 0o555, 'sys': 0o555, 'run': 0o755, 'var/log': 0o755,
        'root': 0o700, 'home': 0o755, 'mnt': 0o755, 'tmp': 0o1777, 'var/tmp': 0o1777}


def busybox_version():
    """Upstream version of Debian's busybox-static, e.g. '1.35.0'."""
    out = subprocess.run(['dpkg-query', '-W', '-f', '${Version}', PACKAGE],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError('%s is not installed (apt-get install %s): %s'
                           % (PACKAGE, PACKAGE, out.stderr.strip()))
    match = re.match(r'(?:\d+:)?([0-9.]+)', out.stdout.strip())
    return match.group(1) if match else out.stdout.strip()


def build_rootfs(rootfs):
    """Populate the empty directory `rootfs` with a bootable busybox system."""
    version = busybox_version()
    for path, mode in DIRS.items():
        os.makedirs(os.path.join(rootfs, path), exist_ok=True)
        os.chmod(os.path.join(rootfs, path), mode)
    shutil.copy2(BUSYBOX, os.path.join(rootfs, 'bin/busybox'))
    applets = subprocess.run([BUSYBOX, '--list-full'], check=True, capture_output=True,
                             text=True).stdout.split()
    for applet in applets:
        link = os.path.join(rootfs, applet)
        if applet == 'bin/busybox' or os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink('/bin/busybox', link)
    os_release = ('NAME="BusyBox"\nID=busybox\nVERSION_ID="%s"\n'
                  'PRETTY_NAME="BusyBox %s (nova-lxd)"\n' % (version, version))
    for path, (mode, content) in FILES.items():
        target = os.path.join(rootfs, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'w') as f:
            f.write(os_release if content is None else content)
        os.chmod(target, mode)
    return version


def image_name(version, architecture, compression):
    return 'busybox-%s-%s%s' % (version, architecture, pack.suffix(compression))


def build(output_dir, compression='gz', progress=None):
    """Build the busybox image into output_dir; returns (path, fingerprint)."""
    pack.suffix(compression)
    architecture = pack.host_architecture()
    os.makedirs(output_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix='.nova-lxd-busybox-', dir=output_dir)
    try:
        rootfs = os.path.join(workdir, 'rootfs')
        os.mkdir(rootfs)
        os.chmod(rootfs, 0o755)
        if progress:
            progress.message('populating the busybox root filesystem')
        version = build_rootfs(rootfs)
        properties = {
            'os': 'BusyBox', 'release': version, 'variant': 'default',
            'description': 'BusyBox %s %s (nova-lxd)' % (version, architecture),
            'architecture': architecture,
        }
        properties.update(PROPERTIES)
        meta = metadata.make_metadata(architecture, properties)
        out_path = os.path.join(output_dir, image_name(version, architecture, compression))
        fingerprint = pack.pack_image(rootfs, meta, out_path, compression, progress)
        return out_path, fingerprint
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
