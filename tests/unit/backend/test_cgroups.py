"""The daemon's cgroup2 favordynmods step, against mountinfo files of the three host layouts."""
import subprocess

from nova_lxd.backend import cgroups

HYBRID = ('31 1 0:27 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n'
          '33 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n'
          '41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,relatime - cgroup2 cgroup2 rw%s\n')
PURE_V1 = HYBRID.splitlines(True)[0] + HYBRID.splitlines(True)[1]


class Runner:
    """Records the commands; answers each with the exit code given for its program."""

    def __init__(self, codes=None):
        self.commands, self.codes = [], codes or {}

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        code = self.codes.get(command[0], 0)
        return subprocess.CompletedProcess(command, code, '', 'mount: bad option' if code else '')


def _mountinfo(tmp_path, text):
    path = tmp_path / 'mountinfo'
    path.write_text(text)
    return str(path)


def test_the_cgroup2_mount_and_its_superblock_options(tmp_path):
    info = _mountinfo(tmp_path, HYBRID % ',nsdelegate')
    assert cgroups.cgroup2_mount(info) == ('/sys/fs/cgroup/unified', ['rw', 'nsdelegate'])
    assert cgroups.cgroup2_mount(_mountinfo(tmp_path, PURE_V1)) is None


def test_an_option_already_on_is_left_alone(tmp_path):
    run = Runner()
    assert cgroups.favor_dynamic_changes(run, _mountinfo(tmp_path, HYBRID % ',favordynmods'))
    assert run.commands == []


def test_a_mounted_cgroup2_is_remounted_with_the_option(tmp_path):
    run = Runner()
    assert cgroups.favor_dynamic_changes(run, _mountinfo(tmp_path, HYBRID % ''))
    assert run.commands == [['mount', '-o', 'remount,favordynmods', '/sys/fs/cgroup/unified']]


def test_a_pure_v1_host_mounts_cgroup2_once_to_set_it(tmp_path):
    run = Runner()
    assert cgroups.favor_dynamic_changes(run, _mountinfo(tmp_path, PURE_V1))
    (mount, where), (umount, unmounted) = [(c[:-1], c[-1]) for c in run.commands]
    assert mount == ['mount', '-t', 'cgroup2', '-o', 'favordynmods', 'cgroup2']
    assert umount == ['umount'] and unmounted == where


def test_a_kernel_that_refuses_it_is_only_a_warning(tmp_path, caplog):
    run = Runner({'mount': 32})
    assert not cgroups.favor_dynamic_changes(run, _mountinfo(tmp_path, PURE_V1))
    assert len(run.commands) == 1          # nothing to unmount
    assert 'Cannot turn on cgroup2 favordynmods' in caplog.text
    assert 'mount: bad option' in caplog.text


def test_a_host_without_mount_8_is_only_a_warning(tmp_path, caplog):
    def missing(command, **kwargs):
        raise FileNotFoundError(2, 'No such file or directory', command[0])
    assert not cgroups.favor_dynamic_changes(missing, _mountinfo(tmp_path, HYBRID % ''))
    assert 'No such file or directory' in caplog.text
