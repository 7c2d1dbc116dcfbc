"""metadata.yaml generation, os-release parsing, the Glance convention and small helpers."""
import os
import signal

import pytest
import yaml

from nova_lxd.image import cli
from nova_lxd.image import debian
from nova_lxd.image import formats
from nova_lxd.image import metadata
from nova_lxd.image import sysutil


def test_parse_os_release():
    text = ('# comment\nNAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n'
            "PRETTY_NAME='Debian GNU/Linux 12 (bookworm)'\nVERSION_CODENAME=bookworm\n"
            'BROKEN="unterminated\n\nHOME_URL="https://www.debian.org/"\n')
    parsed = metadata.parse_os_release(text)
    assert parsed['NAME'] == 'Debian GNU/Linux'
    assert parsed['PRETTY_NAME'] == 'Debian GNU/Linux 12 (bookworm)'
    assert parsed['HOME_URL'] == 'https://www.debian.org/'
    assert 'BROKEN' not in parsed
    props = metadata.properties_from_os_release(parsed)
    assert props == {'os': 'Debian', 'release': 'bookworm', 'variant': 'default',
                     'description': 'Debian GNU/Linux 12 (bookworm)'}
    assert metadata.properties_from_os_release({'ID': 'fedora', 'VERSION_ID': '40'})[
        'release'] == '40'


def test_metadata_and_templates(tmp_path, monkeypatch):
    monkeypatch.setenv('SOURCE_DATE_EPOCH', '1234567890')
    meta = metadata.make_metadata('aarch64', {'os': 'X', 'release': '1', 'none': None})
    assert meta['creation_date'] == 1234567890
    assert meta['architecture'] == 'aarch64'
    assert meta['properties'] == {'os': 'X', 'release': '1'}
    metadata.write_metadata_dir(str(tmp_path), meta)
    with open(tmp_path / 'metadata.yaml') as f:
        assert yaml.safe_load(f) == meta
    for target, spec in meta['templates'].items():
        assert spec['when'] == ['create', 'copy']
        assert '{{ container.name }}' in (tmp_path / 'templates' / spec['template']).read_text()
    assert set(meta['templates']) == {'/etc/hostname', '/etc/hosts'}


def test_glance_convention():
    assert formats.is_unified('raw', {'lxd_image_format': 'unified'})
    assert not formats.is_unified('raw', {})
    assert not formats.is_unified('qcow2', {'lxd_image_format': 'unified'})
    assert formats.is_convertible_disk('qcow2', {})
    assert formats.is_convertible_disk('raw', None)
    assert not formats.is_convertible_disk('raw', {'lxd_image_format': 'unified'})
    assert not formats.is_convertible_disk('vmdk', {})
    assert formats.DPKG_TO_LXD_ARCH['amd64'] == 'x86_64'


def test_debian_image_names_are_deterministic():
    assert debian.image_name('bookworm', 'systemd', 'x86_64', [], 'gz') == \
        'debian-bookworm-systemd-x86_64.tar.gz'
    assert debian.image_name('bookworm', 'systemd', 'x86_64',
                             ['openssh-server', 'cloud-init'], 'xz') == \
        'debian-bookworm-systemd-x86_64-cloud-init+openssh-server.tar.xz'
    long = debian.image_name('trixie', 'systemd', 'aarch64', ['p%d' % i for i in range(30)], 'gz')
    assert long == debian.image_name('trixie', 'systemd', 'aarch64',
                                     ['p%d' % i for i in reversed(range(30))], 'gz')
    assert len(long) < 80


def test_deferred_signals_delay_an_interrupt_until_the_block_ends():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with sysutil.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append('inside')          # still running: SIGINT is held
    assert reached == ['inside']


def test_deferred_signals_in_a_worker_thread():
    """Python handles signals in the main thread only: elsewhere the block just runs."""
    import threading
    done = []

    def work():
        with sysutil.deferred_signals():
            done.append(True)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert done == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_mount_table_unescaping():
    assert sysutil._unescape(r'/tmp/a\040b\134c') == '/tmp/a b\\c'


def test_cli_rejects_malformed_properties(capsys):
    assert cli.main(['convert', 'a', 'b', '--property', 'novalue']) == 2
    assert 'KEY=VALUE' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(['build', 'debian', '--compression', 'zip'])
    assert 'halt_signal' in cli.make_parser().format_help()


def test_cli_reports_missing_files_without_a_traceback(tmp_path, capsys):
    assert cli.main(['convert', str(tmp_path / 'nope.img'), str(tmp_path / 'out.tar.gz')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('nova-lxd-image: ') and 'nope.img' in err
    assert os.listdir(tmp_path) == []


def test_cli_quiet_before_or_after_the_command():
    parser = cli.make_parser()
    before = parser.parse_args(['-q', 'build', 'busybox'])
    after = parser.parse_args(['build', 'busybox', '--quiet'])
    loud = parser.parse_args(['build', 'busybox'])
    assert not cli._progress(before, 'x').enabled
    assert not cli._progress(after, 'x').enabled
    assert cli._progress(loud, 'x').enabled
