"""The one place that turns an instance (expanded config + devices) into an LXC config file."""
import signal

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.instances import idmap as idmaps
from nova_lxd.backend.instances import limits
from nova_lxd.backend.instances.config import is_true

SECCOMP = '/usr/share/lxc/config/common.seccomp'
CONSOLE_LOG_SIZE = 1024 * 1024
# /dev nodes every container gets (autodev populates them; the cgroup must allow them)
DEVICE_ALLOW = ['c *:* m', 'b *:* m', 'c 1:3 rwm', 'c 1:5 rwm', 'c 1:7 rwm', 'c 1:8 rwm',
                'c 1:9 rwm', 'c 5:0 rwm', 'c 5:1 rwm', 'c 5:2 rwm', 'c 136:* rwm',
                'c 10:229 rwm', 'c 10:200 rwm']
LXCFS_FILES = ['proc/cpuinfo', 'proc/diskstats', 'proc/loadavg', 'proc/meminfo', 'proc/stat',
               'proc/swaps', 'proc/uptime', 'proc/slabinfo', 'sys/devices/system/cpu/online']


def halt_signal(config, init_kind):
    """The signal that makes the image's init shut down cleanly."""
    if config.get('image.halt_signal'):
        return config['image.halt_signal']
    return {'busybox': 'SIGUSR1', 'systemd': 'SIGRTMIN+3'}.get(init_kind, 'SIGPWR')


def reboot_signal(config):
    """The signal that makes the image's init reboot cleanly, or None (liblxc's SIGINT)."""
    return config.get('image.reboot_signal') or None


def init_cmd(config):
    """The image's init command line, or None for liblxc's default (/sbin/init)."""
    return (config.get('image.init_cmd') or '').strip() or None


def _signal_number(name):
    """Number of a signal named like SIGTERM, TERM, SIGRTMIN+3 or 15."""
    name = str(name).strip().upper()
    if name.isdigit():
        number = int(name)
    else:
        if not name.startswith('SIG'):
            name = 'SIG' + name
        if name.startswith('SIGRTMIN+') and name[len('SIGRTMIN+'):].isdigit():
            number = int(signal.SIGRTMIN) + int(name[len('SIGRTMIN+'):])
        elif name.startswith('SIGRTMAX-') and name[len('SIGRTMAX-'):].isdigit():
            number = int(signal.SIGRTMAX) - int(name[len('SIGRTMAX-'):])
        elif isinstance(getattr(signal, name, None), signal.Signals):
            number = int(getattr(signal, name))
        else:
            raise ValueError('unknown signal %r' % name)
    if not 0 < number <= int(signal.SIGRTMAX):
        raise ValueError('signal %d out of range' % number)
    return number


def check(config):
    """The image.* keys that become LXC config, checked; returns [problem, ...]."""
    problems = []
    for key in ('image.halt_signal', 'image.reboot_signal'):
        if config.get(key):
            try:
                _signal_number(config[key])
            except ValueError as exc:
                problems.append('%s: %s' % (key, exc))
    cmd = init_cmd(config)
    if cmd and ('\n' in cmd or not cmd.startswith('/')):
        problems.append('image.init_cmd: an absolute path (with arguments) on one line, not %r'
                        % cmd)
    return problems


def build(name, rootfs, config, idmap, console_log, lxc_log, init_kind, lxcfs_dir,
          device_lines):
    """The LXC config of an instance as text. device_lines come from the device registry."""
    problems = check(config)
    if problems:
        raise BadRequest('Cannot start instance %s: %s' % (name, '; '.join(problems)))
    nesting = is_true(config.get('security.nesting', 'false'))
    lines = [
        ('lxc.uts.name', name),
        ('lxc.rootfs.path', rootfs),          # a plain path: a dir: prefix is lost in bindings
        ('lxc.arch', 'linux64'),
        ('lxc.autodev', '1'),
        ('lxc.pty.max', '1024'),
        ('lxc.tty.max', '0'),
        # nesting: a container manager inside needs writable proc/sys/cgroup (the user
        # namespace still confines an unprivileged one)
        ('lxc.mount.auto', 'proc:rw sys:rw cgroup:rw' if nesting
         else 'proc:mixed sys:mixed cgroup:mixed'),
        ('lxc.console.logfile', console_log),
        ('lxc.console.size', str(CONSOLE_LOG_SIZE)),
        ('lxc.console.rotate', '1'),
        ('lxc.log.file', lxc_log),
        ('lxc.log.level', 'warn'),
        ('lxc.signal.halt', str(_signal_number(halt_signal(config, init_kind)))),
        ('lxc.signal.reboot', str(_signal_number(reboot_signal(config) or 'SIGINT'))),
        ('lxc.cap.drop', 'sys_time sys_module sys_rawio mac_admin mac_override'),
        ('lxc.seccomp.profile', SECCOMP),
        ('lxc.cgroup.devices.deny', 'a'),
    ]
    lines += [('lxc.cgroup.devices.allow', rule) for rule in DEVICE_ALLOW]
    lines += [('lxc.mount.entry', '/dev/fuse dev/fuse none bind,create=file,optional 0 0'),
              ('lxc.mount.entry', '/dev/net/tun dev/net/tun none bind,create=file,optional 0 0')]
    if nesting:
        # what a nested LXC/LXD expects to find (as LXD sets up for security.nesting)
        lines += [('lxc.mount.entry', 'proc dev/.lxc/proc proc create=dir,optional 0 0'),
                  ('lxc.mount.entry', 'sys dev/.lxc/sys sysfs create=dir,optional 0 0'),
                  ('lxc.mount.entry', '/sys/fs/fuse/connections sys/fs/fuse/connections '
                   'none rbind,create=dir,optional 0 0')]
    if lxcfs_dir:
        lines += [('lxc.mount.entry', '%s/%s %s none bind,create=file,optional 0 0'
                   % (lxcfs_dir, path, path)) for path in LXCFS_FILES]
    if init_cmd(config):
        lines.append(('lxc.init.cmd', init_cmd(config)))
    lines += idmaps.lxc_lines(idmap)
    for key, value in sorted(config.items()):
        if key.startswith('environment.'):
            lines.append(('lxc.environment', '%s=%s' % (key[len('environment.'):], value)))
        elif key.startswith('limits.kernel.'):
            lines.append(('lxc.prlimit.' + key[len('limits.kernel.'):], value))
    lines += limits.start_config(config)
    lines += device_lines
    if not any(key.startswith('lxc.net.') for key, _ in device_lines):
        lines.append(('lxc.net.0.type', 'empty'))   # its own netns with only lo
    text = ''.join('%s = %s\n' % (key, value) for key, value in lines)
    if config.get('raw.lxc'):
        text += config['raw.lxc'].rstrip('\n') + '\n'
    return text
