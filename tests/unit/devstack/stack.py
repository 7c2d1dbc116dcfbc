"""A devstack host in a temporary directory, for running devstack/plugin.sh phase by phase.

devstack's own shell functions need a full devstack checkout, systemd and a running cloud;
stubs.sh stands in for them (see test_plugin.py).
"""
import configparser
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
DEVSTACK = REPO / 'devstack'
STUBS = pathlib.Path(__file__).resolve().parent


class Stack:
    """One devstack host in a temporary directory: its config files and the calls recorded."""

    def __init__(self, root, backend='bundled', services='n-cpu,g-api,tempest', image='busybox'):
        self.root = root
        self.env = {
            'PATH': '%s:%s' % (STUBS / 'bin', os.environ['PATH']),
            'PYTHON': sys.executable,
            'CALLS': str(root / 'calls'),
            'CALLS_DIR': str(root),
            'DEST': str(root / 'opt'),
            'DATA_DIR': str(root / 'data'),
            'STACK_USER': 'root',
            'ENABLE_DEBUG_LOG_LEVEL': 'True',
            'NOVA_CONF': str(root / 'nova.conf'),
            'GLANCE_API_CONF': str(root / 'glance-api.conf'),
            'TEMPEST_CONFIG': str(root / 'tempest.conf'),
            'ENABLED_SERVICES': services,
            'NOVA_LXD_BACKEND': backend,
            'NOVA_LXD_IMAGE': image,
            'NOVA_LXD_CONF_DIR': str(root / 'etc-nova-lxd'),
            'NOVA_LXD_SUBUID_FILE': str(root / 'subuid'),
            'NOVA_LXD_SUBGID_FILE': str(root / 'subgid'),
        }
        (root / 'data').mkdir()

    def run(self, *args):
        """Source the plugin as devstack does: override-defaults, settings, plugin.sh MODE PHASE."""
        script = ('set -o errexit; source %s; source %s; source %s; source %s %s'
                  % (STUBS / 'stubs.sh', DEVSTACK / 'override-defaults', DEVSTACK / 'settings',
                     DEVSTACK / 'plugin.sh', ' '.join(args)))
        result = subprocess.run(['bash', '-c', script], env=self.env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def calls(self, name=None):
        path = self.root / 'calls'
        lines = path.read_text().splitlines() if path.exists() else []
        calls = [line.split('|') for line in lines]
        return [c for c in calls if name is None or c[0] == name]

    def ini(self, name):
        parser = configparser.RawConfigParser()
        parser.optionxform = str
        parser.read(self.root / name)
        return parser
