"""tests/images.py: concurrent pytest-xdist workers asking for one image build it once."""
import os
import subprocess
import sys

from tests import images

SNIPPET = r'''
import os, sys, time
sys.path.insert(0, %(repo)r)
from tests import images

def build(out):
    with open(os.path.join(out, 'builds.log'), 'a') as log:
        log.write('%%d\n' %% os.getpid())
    time.sleep(0.5)                      # a slow build: the other worker must wait for it
    path = os.path.join(out, 'thing.tar.gz')
    with open(path, 'w') as f:
        f.write('built by %%d' %% os.getpid())
    return path, None

print(images._cached('thing.tar.gz', build))
'''


def test_concurrent_requests_build_once(tmp_path):
    env = dict(os.environ, NOVA_LXD_TEST_IMAGE_DIR=str(tmp_path))
    code = SNIPPET % {'repo': images.REPO}
    procs = [subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs == [str(tmp_path / 'thing.tar.gz')] * 3
    with open(tmp_path / 'builds.log') as f:
        assert len(f.read().split()) == 1
