"""The image's init keys (image.init_cmd, image.reboot_signal, image.halt_signal) -> LXC config."""
import signal

import pytest

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.instances import lxcconf


def _lines(config, init_kind='busybox'):
    return lxcconf.build('c1', '/pool/c1/rootfs', config, [], '/logs/console.log',
                         '/logs/lxc.log', init_kind, None, []).splitlines()


def test_init_cmd_and_reboot_signal_become_lxc_keys():
    lines = _lines({'image.init_cmd': '/sbin/my-init --verbose',
                    'image.reboot_signal': 'SIGUSR2'})
    assert 'lxc.init.cmd = /sbin/my-init --verbose' in lines
    assert 'lxc.signal.reboot = %d' % signal.SIGUSR2 in lines


def test_defaults_are_liblxcs():
    lines = _lines({})
    assert not any(line.startswith('lxc.init.cmd') for line in lines)   # /sbin/init
    assert 'lxc.signal.reboot = %d' % signal.SIGINT in lines


@pytest.mark.parametrize('name, number', [
    ('SIGTERM', signal.SIGTERM), ('TERM', signal.SIGTERM), ('sigusr1', signal.SIGUSR1),
    ('15', 15), ('SIGRTMIN+3', int(signal.SIGRTMIN) + 3),
    ('SIGRTMAX-1', int(signal.SIGRTMAX) - 1), ('SIGPWR', signal.SIGPWR),
])
def test_signal_names(name, number):
    assert 'lxc.signal.halt = %d' % number in _lines({'image.halt_signal': name})


@pytest.mark.parametrize('config, word', [
    ({'image.halt_signal': 'SIGNOPE'}, 'image.halt_signal'),
    ({'image.reboot_signal': '0'}, 'image.reboot_signal'),
    ({'image.reboot_signal': '999'}, 'image.reboot_signal'),
    ({'image.reboot_signal': 'SIG_DFL'}, 'image.reboot_signal'),
    ({'image.init_cmd': 'sbin/init'}, 'image.init_cmd'),
    ({'image.init_cmd': '/sbin/init\nlxc.rootfs.path = /'}, 'image.init_cmd'),
])
def test_bad_values_refuse_the_start_naming_the_key(config, word):
    with pytest.raises(BadRequest) as err:
        _lines(config)
    assert word in str(err.value)
