"""The README's main job runs end to end and shows a real, limited, unprivileged container."""
import glob
import subprocess
import sys

from tests.backend_fixture import REPO


def test_main_job_runs_a_container_from_a_locally_built_image():
    before = set(glob.glob('/var/tmp/nova-lxd-demo-*'))
    out = subprocess.run([sys.executable, 'tools/demo.py'], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '| hello from demo' in out.stdout
    assert '| PID 1 is init' in out.stdout
    # limits.memory=128MiB and limits.cpu=1 as the container itself sees them (lxcfs)
    assert '| MemTotal:         131072 kB' in out.stdout
    assert '| 1\n' in out.stdout
    assert 'status Running' in out.stdout
    assert 'its root is uid 1000000 on the host' in out.stdout
    # it removes its directory, and with it everything it made
    assert set(glob.glob('/var/tmp/nova-lxd-demo-*')) == before
