"""The distribution ships nova_lxd and the one-line shim under nova, and nothing else of nova's."""
import os
import subprocess
import sys
import zipfile

import pytest

from tests.backend_fixture import REPO


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('wheel')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                    '-w', str(out), REPO], check=True, capture_output=True)
    (path,) = out.glob('nova_lxd-*.whl')
    with zipfile.ZipFile(path) as zf:
        yield path, zf.namelist()


def test_wheel_ships_shim_but_not_nova(wheel):
    _, names = wheel
    under_nova = [n for n in names if n.startswith('nova/')]
    assert under_nova == ['nova/virt/lxd/__init__.py']
    assert 'nova_lxd/virt/driver.py' in names
    assert 'nova_lxd/backend/daemon.py' in names


def test_wheel_declares_console_scripts(wheel):
    path, names = wheel
    with zipfile.ZipFile(path) as zf:
        entry = next(n for n in names if n.endswith('entry_points.txt'))
        text = zf.read(entry).decode()
    assert 'nova-lxd-backend = nova_lxd.backend.daemon:main' in text
    assert 'nova_lxd = nova_lxd.virt.conf:list_opts' in text


def test_installed_wheel_loads_the_driver_as_nova_does(wheel, tmp_path):
    """`pip install .` next to nova makes nova.virt.lxd.LXDDriver importable, with no source tree.

    nova and the wheel go into one fresh directory (the wheel's files merge into nova's package as
    pip does in a venv); the interpreter runs without site (-S) so the development venv's editable
    hooks cannot help; the venv's site-packages only supplies the other dependencies.
    """
    path, _ = wheel
    site = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                    str(site), 'nova==34.0.0'], check=True, capture_output=True)
    with zipfile.ZipFile(path) as zf:
        zf.extractall(site)
    deps = next(p for p in sys.path if p.endswith('site-packages'))
    code = ('import nova.virt.lxd, nova_lxd, nova; '
            'assert nova_lxd.__file__.startswith(%r), nova_lxd.__file__; '
            'assert nova.__file__.startswith(%r), nova.__file__; '
            'print(nova.virt.lxd.LXDDriver.__module__)' % (str(site), str(site)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), deps]))
    out = subprocess.run([sys.executable, '-S', '-W', 'ignore', '-c', code], cwd=str(tmp_path),
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith('nova_lxd.virt.driver')


def test_nova_loads_compute_driver_lxd():
    """nova's own loader resolves compute_driver = lxd.LXDDriver to our driver class."""
    code = ('from nova.virt import driver; from oslo_utils import importutils; '
            'cls = importutils.import_class("nova.virt." + "lxd.LXDDriver"); '
            'assert issubclass(cls, driver.ComputeDriver); print(cls)')
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True,
                         text=True, cwd='/')
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'nova_lxd.virt.driver.LXDDriver' in out.stdout
