"""`nova-lxd-image build debian`: debootstrap --variant=minbase, booting with systemd."""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile

from nova_lxd.image import formats
from nova_lxd.image import metadata
from nova_lxd.image import pack
from nova_lxd.image import sysutil
from nova_lxd.image.errors import BuildError

DEFAULT_MIRROR = 'http://deb.debian.org/debian'
DEFAULT_RELEASE = 'bookworm'

INIT_SYSTEMS = {
    # packages that make /sbin/init, and how it wants to be stopped
    'systemd': {
        'packages': ['systemd', 'systemd-sysv'],
        # DNS servers from the DHCP lease reach /etc/resolv.conf; its postinst fails under
        # debootstrap, so apt installs it
        'apt_packages': ['systemd-resolved'],
        'properties': {formats.PROP_HALT_SIGNAL: 'SIGRTMIN+3',
                       formats.PROP_REBOOT_SIGNAL: 'SIGINT',
                       formats.PROP_INIT_CMD: '/sbin/init'},
    },
}

# Every NIC gets an address by DHCP through systemd-networkd (part of systemd). Numbered 90 so
# that a cloud-init generated file (10-cloud-init-*.network) takes precedence.
NETWORKD_DHCP = """\
[Match]
Name=eth* en*

[Network]
DHCP=yes
"""

# Host keys must differ between instances: none are shipped, this unit makes them at first boot
# unless cloud-init (which does the same) runs first.
SSH_KEYGEN_UNIT = """\
[Unit]
Description=Generate SSH host keys on first boot (nova-lxd image)
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""

_PHASES = (('Retrieving', 'downloading'), ('Extracting', 'extracting'), ('Unpacking', 'unpacking'),
           ('Configuring', 'configuring'))


def image_name(release, init, architecture, packages, compression):
    name = 'debian-%s-%s-%s' % (release, init, architecture)
    if packages:
        joined = '+'.join(sorted(set(packages)))
        if len(joined) > 48 or not re.fullmatch(r'[a-z0-9+.-]+', joined):
            joined = hashlib.sha256(joined.encode()).hexdigest()[:12]
        name += '-' + joined
    return name + pack.suffix(compression)


class _DebootstrapSummary:
    """Turns debootstrap's one-line-per-package chatter into a few progress lines."""

    def __init__(self, progress):
        self.progress = progress
        self.phase = None
        self.count = 0
        self.tail = []

    def feed(self, line):
        self.tail = (self.tail + [line])[-30:]
        if not line.startswith(('I: ', 'W: ', 'E: ')) or line.startswith('I: Validating '):
            return
        if line.startswith(('W: ', 'E: ')):
            self.progress.message(line)
            return
        for word, phase in _PHASES:
            if line.startswith('I: ' + word + ' '):
                if phase != self.phase:
                    self._flush()
                    self.phase, self.count = phase, 0
                self.count += 1
                if self.count % 50 == 0:
                    self.progress.message('%s: %d packages so far' % (self.phase, self.count))
                return
        self._flush()
        self.progress.message(line[3:])

    def _flush(self):
        if self.phase:
            self.progress.message('%s: %d packages' % (self.phase, self.count))
        self.phase, self.count = None, 0

    def close(self):
        self._flush()


def _debootstrap(target, release, mirror, packages, cache_dir, progress):
    cmd = ['debootstrap', '--variant=minbase', '--include=' + ','.join(packages)]
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        cmd.append('--cache-dir=' + os.path.abspath(cache_dir))
    cmd += [release, target, mirror]
    if shutil.which('debootstrap') is None:
        raise BuildError('debootstrap is not installed (apt-get install debootstrap)')
    progress.message('debootstrap %s from %s' % (release, mirror))
    summary = _DebootstrapSummary(progress)
    status = _run_summarised(cmd, summary, dict(os.environ, LC_ALL='C.UTF-8'))
    if status != 0:
        raise BuildError('debootstrap failed (status %d):\n%s'
                         % (status, '\n'.join(summary.tail)))


class _AptSummary:
    """A progress line per phase of `apt-get install` (downloads, unpacking, setting up)."""

    PHASES = (('Get:', 'downloading'), ('Unpacking ', 'unpacking'), ('Setting up ', 'setting up'))

    def __init__(self, progress):
        self.progress = progress
        self.counts = {}
        self.tail = []

    def feed(self, line):
        self.tail = (self.tail + [line])[-30:]
        for prefix, phase in self.PHASES:
            if line.startswith(prefix):
                if phase not in self.counts:
                    self.progress.message('apt: %s' % phase)
                self.counts[phase] = self.counts.get(phase, 0) + 1
                return
        if line.startswith(('E: ', 'W: ')):
            self.progress.message('apt: ' + line)

    def close(self):
        if self.counts:
            self.progress.message('apt: ' + ', '.join('%s %d' % item
                                                      for item in self.counts.items()))


def _run_summarised(cmd, summary, env=None):
    """Run cmd, feeding its output lines to summary; returns the status.

    In its own session: Ctrl-C reaches us, and we decide when it stops (see the finally).
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env, errors='replace')
    try:
        for line in proc.stdout:
            summary.feed(line.rstrip('\n'))
        proc.wait()
        summary.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        proc.stdout.close()
    return proc.returncode


def _apt_install(rootfs, packages, progress):
    """Install the extra packages with the new system's own apt, in a chroot.

    debootstrap's --include cannot resolve virtual packages (cloud-init's python3-cryptography
    needs python3-cffi-backend-api-*), apt can. This runs programs from the image being built
    (never from an image someone gave us); no service starts (policy-rc.d says 101).
    """
    policy = os.path.join(rootfs, 'usr/sbin/policy-rc.d')
    _write(rootfs, '/usr/sbin/policy-rc.d', '#!/bin/sh\nexit 101\n', 0o755)
    proc_dir = os.path.join(rootfs, 'proc')
    resolv = os.path.join(rootfs, 'etc/resolv.conf')
    # resolved's stub link dangles in a chroot: lend apt the host's resolvers meanwhile
    resolv_link = os.readlink(resolv) if os.path.islink(resolv) else None
    if resolv_link is not None:
        os.unlink(resolv)
        shutil.copyfile('/etc/resolv.conf', resolv)
    try:
        with sysutil.deferred_signals():
            subprocess.run(['mount', '-t', 'proc', 'proc', proc_dir], check=True)
        progress.message('apt-get install %s' % ' '.join(packages))
        env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL': 'C.UTF-8',
               'DEBIAN_FRONTEND': 'noninteractive', 'HOME': '/root'}
        summary = _AptSummary(progress)
        status = _run_summarised(['chroot', rootfs, 'apt-get', 'install', '-y', '-q',
                                  '-o', 'Dpkg::Use-Pty=0', '--no-install-recommends']
                                 + list(packages), summary, env)
        if status != 0:
            raise BuildError('apt-get install %s failed (status %d):\n%s'
                             % (' '.join(packages), status, '\n'.join(summary.tail)))
        subprocess.run(['chroot', rootfs, 'apt-get', 'clean'], env=env, check=False)
    finally:
        with sysutil.deferred_signals():
            sysutil.unmount_under(proc_dir)
        if os.path.lexists(policy):
            os.unlink(policy)
        if resolv_link is not None:
            if os.path.lexists(resolv):
                os.unlink(resolv)
            os.symlink(resolv_link, resolv)


def _write(rootfs, path, content, mode=0o644):
    target = os.path.join(rootfs, path.lstrip('/'))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        os.unlink(target)
    with open(target, 'w') as f:
        f.write(content)
    os.chmod(target, mode)


def _symlink(rootfs, link, target):
    path = os.path.join(rootfs, link.lstrip('/'))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


def _clean_tree(rootfs, *patterns):
    import glob
    for pattern in patterns:
        for path in glob.glob(os.path.join(rootfs, pattern.lstrip('/'))):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)


def configure_rootfs(rootfs, packages):
    """Make the debootstrapped tree a good container image, without running anything in it."""
    _write(rootfs, '/etc/hostname', 'debian\n')
    _write(rootfs, '/etc/hosts', '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n'
                                 '::1\tlocalhost ip6-localhost ip6-loopback\n')
    # each container gets its own machine id at first boot, and DNS from its DHCP lease
    _write(rootfs, '/etc/machine-id', '', 0o444)
    _clean_tree(rootfs, '/var/lib/dbus/machine-id')
    if not os.path.islink(os.path.join(rootfs, 'etc/resolv.conf')):
        _write(rootfs, '/etc/resolv.conf', '')   # no resolved: never ship the build host's
    _write(rootfs, '/etc/systemd/network/90-nova-lxd-dhcp.network', NETWORKD_DHCP)
    _symlink(rootfs, '/etc/systemd/system/multi-user.target.wants/systemd-networkd.service',
             '/lib/systemd/system/systemd-networkd.service')
    _symlink(rootfs, '/etc/systemd/system/sockets.target.wants/systemd-networkd.socket',
             '/lib/systemd/system/systemd-networkd.socket')
    if 'cloud-init' in packages:
        # cloud-init's locale module regenerates (with locale-gen from the absent `locales`
        # package) any locale but the one already configured, and fails the whole boot's
        # status: configure C.UTF-8, which glibc ships built in
        _write(rootfs, '/etc/default/locale', 'LANG=C.UTF-8\n')
    if 'openssh-server' in packages:
        _clean_tree(rootfs, '/etc/ssh/ssh_host_*')
        _write(rootfs, '/etc/systemd/system/nova-lxd-ssh-keygen.service', SSH_KEYGEN_UNIT)
        _symlink(rootfs,
                 '/etc/systemd/system/multi-user.target.wants/nova-lxd-ssh-keygen.service',
                 '/etc/systemd/system/nova-lxd-ssh-keygen.service')
    # apt caches and lists: large, and stale the day after
    _clean_tree(rootfs, '/var/cache/apt/archives/*.deb', '/var/cache/apt/*.bin',
                '/var/lib/apt/lists/*_Packages', '/var/lib/apt/lists/*_Release*',
                '/var/lib/apt/lists/*_InRelease', '/var/log/bootstrap.log',
                '/var/cache/debconf/*-old')


def build(output_dir, release=DEFAULT_RELEASE, mirror=DEFAULT_MIRROR, packages=(),
          init='systemd', compression='gz', cache_dir=None, progress=None):
    """Build a Debian image into output_dir; returns (path, fingerprint)."""
    from nova_lxd.image.progress import silent
    progress = progress or silent()
    if init not in INIT_SYSTEMS:
        raise BuildError('unknown init %r (choose from %s)' % (init, ', '.join(INIT_SYSTEMS)))
    packages = sorted(set(packages))
    for name in packages:
        if not re.fullmatch(r'[a-z0-9][a-z0-9+.-]+', name):
            raise BuildError('not a Debian package name: %r' % name)
    pack.suffix(compression)
    architecture = pack.host_architecture()
    os.makedirs(output_dir, exist_ok=True)
    out_path = os.path.join(output_dir,
                            image_name(release, init, architecture, packages, compression))
    workdir = tempfile.mkdtemp(prefix='.nova-lxd-debian-', dir=output_dir)
    try:
        rootfs = os.path.join(workdir, 'rootfs')
        _debootstrap(rootfs, release, mirror, INIT_SYSTEMS[init]['packages'], cache_dir,
                     progress)
        _apt_install(rootfs, INIT_SYSTEMS[init].get('apt_packages', []) + packages, progress)
        configure_rootfs(rootfs, packages)
        variant = 'cloud' if 'cloud-init' in packages else 'default'
        properties = {
            'os': 'Debian', 'release': release, 'variant': variant,
            'architecture': architecture,
            'description': 'Debian %s %s (%s, nova-lxd)' % (release, architecture, init),
        }
        if packages:
            properties['packages'] = ','.join(packages)
        properties.update(INIT_SYSTEMS[init]['properties'])
        meta = metadata.make_metadata(architecture, properties)
        progress.message('packing')
        fingerprint = pack.pack_image(rootfs, meta, out_path, compression, progress)
        return out_path, fingerprint
    finally:
        sysutil.remove_tree(workdir)     # with debootstrap's /proc if it was interrupted
