"""tools/setup.sh is idempotent: after the run that set this host up, a second changes nothing."""
import subprocess

from tests.backend_fixture import REPO


def test_second_setup_run_installs_nothing():
    with open('/etc/subuid') as f:
        before = f.read()
    out = subprocess.run(['tools/setup.sh'], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'installing' not in out.stderr and 'adding' not in out.stderr, out.stderr
    with open('/etc/subuid') as f:
        assert f.read() == before
    assert 'root:1000000:1000000000' in before


def test_bindep_lists_what_the_issue_requires():
    with open('%s/bindep.txt' % REPO) as f:
        names = {line.split()[0] for line in f if line.strip() and not line.startswith('#')}
    assert {'lxc', 'lxc-dev', 'pkg-config', 'busybox-static', 'btrfs-progs', 'dnsmasq-base',
            'nftables', 'iproute2', 'uidmap', 'debootstrap'} <= names
