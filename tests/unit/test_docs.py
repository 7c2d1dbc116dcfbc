"""The operator docs, the sample configs, the support matrix and the release notes.

The Sphinx builds run with -W (warnings are errors); the support matrix's claims are checked
against the test suite by collecting every test it names.
"""
import configparser
import os
import pathlib
import re
import subprocess
import sys

import pytest

from doc.ext import support_matrix
from nova_lxd.backend import config as backend_config
from nova_lxd.backend import daemon
from nova_lxd.image import formats

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
MATRIX = REPO / 'doc/source/support-matrix.ini'


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, '%s\n%s%s' % (' '.join(map(str, cmd)), result.stdout,
                                                 result.stderr)
    return result


def test_docs_build_without_warnings(tmp_path):
    _run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html',
          '-d', tmp_path / 'doctrees', 'doc/source', tmp_path / 'html'])
    from nova_lxd.virt import conf
    page = (tmp_path / 'html/configuration.html').read_text()
    undocumented = [opt.name for opt in conf.lxd_opts if 'lxd.%s' % opt.name not in page]
    assert not undocumented                # show-options anchors each [lxd] option
    assert 'support-matrix' in (tmp_path / 'html/index.html').read_text()


def test_list_opts_has_the_shape_the_generator_expects():
    """oslo.config.opts entry points return [(group, [opt, ...]), ...]."""
    from nova_lxd.virt import conf
    listed = conf.list_opts()
    assert isinstance(listed, (list, tuple)), \
        'nova_lxd.virt.conf.list_opts must return [(group, opts)], not %s' % type(listed).__name__
    groups = {getattr(group, 'name', group): opts for group, opts in listed}
    assert 'endpoint' in [opt.name for opt in groups['lxd']]


def test_config_sample_is_current(tmp_path):
    """oslo-config-generator, fed the file in etc/, writes what doc/ ships."""
    out = tmp_path / 'nova-lxd.conf.sample'
    _run([BIN / 'oslo-config-generator', '--config-file',
          'etc/oslo-config-generator/nova-lxd.conf', '--output-file', out])
    shipped = (REPO / 'doc/source/_static/nova-lxd.conf.sample').read_text()
    assert out.read_text() == shipped, \
        'sample is stale: run tox -e genconfig (or the command above) and commit it'
    assert '[lxd]' in shipped and '#endpoint = <None>' in shipped


def test_backend_conf_sample_states_the_true_defaults(tmp_path):
    """Uncommenting every key of the sample changes nothing: its values are the defaults."""
    sample = (REPO / 'etc/nova-lxd/backend.conf.sample').read_text()
    keys = re.findall(r'^#(\w+) =', sample, re.M)
    assert sorted(keys) == sorted(['data_dir', 'socket_group', 'socket_mode', 'log_file',
                                   'debug', 'storage_driver', 'bridge_subnet',
                                   'keepalive_timeout', 'recycle_growth_mb',
                                   'cgroup_favordynmods', 'dns_resolv_file'])
    conf = tmp_path / 'backend.conf'
    conf.write_text(re.sub(r'^#(\w+ =)', r'\1', sample, flags=re.M))
    loaded = vars(backend_config.DaemonConfig.load(str(conf)))
    assert loaded == vars(backend_config.DaemonConfig())


def test_systemd_unit_runs_the_daemon_with_its_config():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(REPO / 'etc/nova-lxd-backend.service')
    command = unit['Service']['ExecStart'].split()
    assert command[0] == '/usr/bin/nova-lxd-backend'
    args = daemon.parse_args(command[1:])
    assert args.config_file == backend_config.DEFAULT_CONFIG_FILE
    # containers outlive a daemon restart
    assert unit['Service']['KillMode'] == 'process'
    assert unit['Service']['Delegate'] == 'yes'
    # reload: the daemon's SIGHUP, a re-exec in place (tests/functional/backend/test_restart.py)
    assert unit['Service']['ExecReload'] == '/bin/kill -HUP $MAINPID'
    assert unit['Install']['WantedBy'] == 'multi-user.target'


def test_docs_name_the_flavor_specs_and_image_properties():
    from nova_lxd.virt import flavor
    page = (REPO / 'doc/source/flavors-and-images.rst').read_text()
    names = (list(flavor.LXD_EXTRA_SPECS) + list(formats.CONTAINER_PROPERTIES) +
             [formats.PROP_IMAGE_FORMAT, 'container_format=%s' % formats.CONTAINER_FORMAT,
              'disk_format=%s' % formats.DISK_FORMAT,
              '%s=%s' % (formats.PROP_IMAGE_FORMAT, formats.FORMAT_UNIFIED),
              'hypervisor_type=%s' % formats.HYPERVISOR_TYPE])
    names += [key for _, (b, _u), (i, _v) in flavor.DISK_QUOTAS for key in (b, i)]
    missing = [name for name in names if '``%s' % name not in page]
    assert not missing, 'flavors-and-images.rst does not document %s' % missing


def test_support_matrix_is_well_formed():
    drivers, operations = support_matrix.load(str(MATRIX))
    assert list(drivers) == ['lxd']
    assert len(operations) >= 30
    for op in operations:
        status = op['driver.lxd']
        tests = support_matrix.tests_of(op, 'lxd')
        if status in ('complete', 'partial'):
            assert tests, '%s is %s but names no test' % (op['key'], status)
        else:
            assert not tests, '%s is missing but names tests' % op['key']
        if status != 'complete':
            assert op.get('driver-notes.lxd'), \
                '%s is %s without saying why' % (op['key'], status)
        assert op['status'] in ('mandatory', 'optional') or op['status'].startswith('choice(')


def _collect(ids):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    # -m '': every test exists, whichever pass of tools/test.sh (main or isolated) runs it
    return subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q', '-n', '0',
                           '-p', 'no:cacheprovider', '-m', ''] + list(ids),
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def test_every_test_the_support_matrix_names_exists():
    _, operations = support_matrix.load(str(MATRIX))
    ids = sorted({t for op in operations for t in support_matrix.tests_of(op, 'lxd')})
    if not ids:
        pytest.fail('the support matrix names no test: nothing is complete or partial')
    result = _collect(ids)
    assert result.returncode == 0, result.stdout + result.stderr
    collected = set(result.stdout.split())
    absent = [i for i in ids if i not in collected]
    assert not absent, 'named in the support matrix but not collected: %s' % absent


def test_collecting_a_test_that_does_not_exist_fails():
    """The check above can fail: a made-up node id does not collect."""
    result = _collect(['tests/unit/test_docs.py::test_no_such_test'])
    assert result.returncode != 0


def test_release_notes(tmp_path):
    _run([BIN / 'reno', 'lint'])
    _run([sys.executable, '-m', 'sphinx', '-W', '-q', '-b', 'html', '-d', tmp_path / 'doctrees',
          'releasenotes/source', tmp_path / 'html'])
    page = (tmp_path / 'html/unreleased.html').read_text()
    assert 'nova-lxd-backend' in page and 'nova-lxd-image' in page
