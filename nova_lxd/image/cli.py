"""nova-lxd-image: build, convert and upload container images (LXD unified tarballs).

Image properties the bundled backend honours (metadata.yaml `properties`, and the same names as
Glance image properties):
  halt_signal    signal that stops the container cleanly (busybox: SIGUSR1, systemd: SIGRTMIN+3)
  reboot_signal  signal that reboots it in place on a clean restart (busybox: SIGTERM,
                 systemd: SIGINT); without it a clean restart is a stop and a start
  init_cmd       init command line inside the rootfs (default /sbin/init), an absolute path
The Nova driver also takes them from the Glance properties of root-tar, squashfs and disk
images (a unified tarball brings its own metadata.yaml).
Glance convention (nova_lxd.image.formats): container_format=bare, disk_format=raw,
lxd_image_format=unified, hypervisor_type=lxc, architecture, os_distro.
"""
import argparse
import os
import signal
import sys

from nova_lxd.image.errors import ImageError
from nova_lxd.image import pack
from nova_lxd.image.progress import Progress


def _progress(args, label):
    return Progress(label, enabled=not (args.quiet or args.quiet_all))


def _report(path, fingerprint):
    print('%s' % path)
    print('fingerprint: %s' % fingerprint)


def cmd_build_busybox(args):
    from nova_lxd.image import busybox
    path, fingerprint = busybox.build(args.output_dir, args.compression,
                                      _progress(args, 'busybox'))
    _report(path, fingerprint)


def cmd_build_debian(args):
    from nova_lxd.image import debian
    packages = [p for item in args.packages for p in item.replace(',', ' ').split() if p]
    path, fingerprint = debian.build(
        args.output_dir, release=args.release, mirror=args.mirror, packages=packages,
        init=args.init, compression=args.compression, cache_dir=args.cache_dir,
        progress=_progress(args, 'debian'))
    _report(path, fingerprint)


def cmd_convert(args):
    from nova_lxd.image import convert
    properties = dict(p.split('=', 1) for p in args.property)
    fingerprint = convert.disk_to_unified(args.disk, args.out, properties=properties,
                                          compression=args.compression,
                                          progress=_progress(args, 'convert'))
    _report(args.out, fingerprint)


def cmd_upload(args):
    from nova_lxd.image import upload
    properties = dict(p.split('=', 1) for p in args.property)
    image = upload.upload(args.file, args.name, public=args.public, properties=properties,
                          cloud=args.os_cloud)
    print('uploaded %s as Glance image %s (%s)' % (args.file, image['id'], image['name']))


def _add_common(parser, compression=True):
    parser.add_argument('-q', '--quiet', action='store_true', help='no progress lines')
    if compression:
        parser.add_argument('--compression', choices=sorted(pack.COMPRESSORS), default='gz',
                            help='tarball compression (default gz)')


def make_parser():
    parser = argparse.ArgumentParser(
        prog='nova-lxd-image', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # accepted before the command too (nova-lxd-image -q build busybox); a separate dest, as a
    # subcommand's own default would overwrite it
    parser.add_argument('-q', '--quiet', dest='quiet_all', action='store_true',
                        help='no progress lines')
    sub = parser.add_subparsers(dest='command', required=True)

    build = sub.add_parser('build', help='build an image from Debian packages')
    kinds = build.add_subparsers(dest='kind', required=True)
    bb = kinds.add_parser(
        'busybox', help='busybox-static system container (seconds)',
        description='A system container from Debian\'s busybox-static: busybox init with no '
                    'getty or console shell (halt_signal SIGUSR1), DHCP on every NIC by udhcpc. '
                    'Prints the tarball path, then its fingerprint.')
    bb.add_argument('--output-dir', '-o', default='.', help='where the tarball goes')
    _add_common(bb)
    bb.set_defaults(func=cmd_build_busybox)

    deb = kinds.add_parser(
        'debian', help='debootstrap --variant=minbase system container',
        description='debootstrap --variant=minbase, booting with systemd (halt_signal '
                    'SIGRTMIN+3); every NIC gets DHCP from systemd-networkd; /etc/machine-id is '
                    'left empty (made at first boot); --packages are installed with the new '
                    'system\'s apt, without recommends (openssh-server host keys are made at '
                    'first boot); apt caches and lists are removed. Needs root. Prints the '
                    'tarball path, then its fingerprint.')
    deb.add_argument('--output-dir', '-o', default='.', help='where the tarball goes')
    deb.add_argument('--release', default='bookworm', help='Debian suite (default bookworm)')
    deb.add_argument('--mirror', default=os.environ.get('NOVA_LXD_DEBIAN_MIRROR',
                                                        'http://deb.debian.org/debian'),
                     help='Debian mirror (default $NOVA_LXD_DEBIAN_MIRROR or '
                          'http://deb.debian.org/debian)')
    deb.add_argument('--packages', action='append', default=[],
                     help='extra packages, comma or space separated (repeatable), e.g. '
                          'cloud-init,openssh-server')
    deb.add_argument('--init', choices=['systemd'], default='systemd',
                     help='init system the container boots with (default systemd)')
    deb.add_argument('--cache-dir', help='keep downloaded .debs here between builds')
    _add_common(deb)
    deb.set_defaults(func=cmd_build_debian)

    conv = sub.add_parser(
        'convert', help='raw/qcow2 disk image -> unified tarball',
        description='Finds the Linux root filesystem (ext2/3/4, xfs or btrfs; /etc with /usr or '
                    '/bin, /etc/os-release preferred) of an MBR- or GPT-partitioned or bare raw '
                    'or qcow2 disk image and extracts it without running anything from it (a '
                    'read-only loop device, mounted ro,nosuid,nodev,noexec). metadata.yaml comes '
                    'from /etc/os-release and the binaries\' ELF headers; /etc/fstab is emptied '
                    '(the original is kept as /etc/fstab.disk-image). Refuses, with the reason, '
                    'encrypted (LUKS) or LVM disks, unknown partition tables, qcow2 backing '
                    'files. Needs root; leaves no loop device, mount or temporary file behind.')
    conv.add_argument('disk', help='raw or qcow2 disk image (partitioned or a bare filesystem)')
    conv.add_argument('out', help='output tarball path')
    conv.add_argument('--property', action='append', default=[], metavar='KEY=VALUE',
                      help='extra metadata.yaml property (repeatable)')
    _add_common(conv)
    conv.set_defaults(func=cmd_convert)

    up = sub.add_parser(
        'upload', help='upload a unified tarball to Glance (OS_* auth)',
        description='A unified tarball goes up as container_format=bare, disk_format=raw, '
                    'lxd_image_format=unified with hypervisor_type=lxc, architecture, os_distro, '
                    'os_version and its halt_signal/reboot_signal/init_cmd; a raw or qcow2 disk '
                    'image keeps its disk_format (the driver converts it at boot). Auth: '
                    'clouds.yaml (--os-cloud) or the OS_* variables.')
    up.add_argument('file')
    up.add_argument('--name', required=True)
    up.add_argument('--public', action='store_true', help='visibility=public')
    up.add_argument('--property', action='append', default=[], metavar='KEY=VALUE',
                    help='extra Glance property (repeatable)')
    up.add_argument('--os-cloud', default=os.environ.get('OS_CLOUD'),
                    help='clouds.yaml entry (default $OS_CLOUD; else OS_* variables)')
    up.set_defaults(func=cmd_upload, quiet=False)
    return parser


def _terminate(signum, frame):
    # SIGTERM unwinds like Ctrl-C, so every `finally` releases loop devices, mounts, temp files
    raise KeyboardInterrupt


def main(argv=None):
    args = make_parser().parse_args(argv)
    for pair in getattr(args, 'property', []):
        if '=' not in pair:
            print('nova-lxd-image: --property wants KEY=VALUE, got %r' % pair, file=sys.stderr)
            return 2
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print('nova-lxd-image: interrupted; cleaned up', file=sys.stderr)
        return 130
    except (ImageError, OSError) as exc:   # OSError: a missing file or directory, no space...
        print('nova-lxd-image: %s' % exc, file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == '__main__':
    sys.exit(main())
