"""The README's main job, step by step, with timings: a system container from nothing.

Starts a private bundled backend, builds a busybox image with nova-lxd-image, imports it, launches a
container, runs a command in it, shows its state, then stops and deletes everything it made.
"""
import contextlib
import os
import subprocess
import sys
import time

from nova_lxd.backend.local import LocalDaemon

VENV_BIN = os.path.dirname(sys.executable)


@contextlib.contextmanager
def step(title):
    print('==> %s' % title, flush=True)
    start = time.monotonic()
    yield
    print('    done in %.2f s' % (time.monotonic() - start), flush=True)


def main():
    # a fresh directory per run, removed at the end with everything in it
    daemon = LocalDaemon(prefix='nova-lxd-demo-')
    image_dir = os.path.join(daemon.data_dir, 'built-images')
    os.makedirs(image_dir)
    try:
        with step('Starting the bundled backend (nova-lxd-backend --data-dir %s)'
                  % daemon.data_dir):
            client = daemon.start()
            env = client.host_info['environment']
            print('    %s %s, liblxc %s, storage %s' % (env['server'], env['server_version'],
                                                        env['driver_version'], env['storage']))
        with step('Building a busybox image locally (nova-lxd-image build busybox)'):
            out = subprocess.run([os.path.join(VENV_BIN, 'nova-lxd-image'), '-q', 'build',
                                  'busybox', '-o', image_dir], check=True, text=True,
                                 capture_output=True).stdout.split()
            path = out[0]
            print('    %s' % ' '.join(out))
        with step('Importing it into the backend'):
            with open(path, 'rb') as f:
                image = client.images.create(f.read(), wait=True)
            image.add_alias('busybox', 'demo image')
            print('    fingerprint %s, %d bytes' % (image.fingerprint[:12], image.size))
        with step('Launching system container "demo" (unprivileged)'):
            instance = client.instances.create(
                {'name': 'demo', 'source': {'type': 'image', 'alias': 'busybox'},
                 'config': {'limits.memory': '128MiB', 'limits.cpu': '1'}}, wait=True)
            instance.start(wait=True)
        with step('Running a command inside it'):
            result = instance.execute(['sh', '-c', 'echo "hello from $(hostname)"; '
                                       'echo "PID 1 is $(cat /proc/1/comm)"; id; '
                                       'head -1 /proc/meminfo; nproc'])
            print('    exit code %s' % result.exit_code)
            for line in result.stdout.splitlines():
                print('    | %s' % line)
        with step('Its state'):
            state = instance.state()
            print('    status %s, init pid %s (on the host), %s processes, memory %d KiB'
                  % (state.status, state.pid, state.processes,
                     state.memory['usage'] // 1024))
            with open('/proc/%d/status' % state.pid) as f:
                uid = next(line.split()[1] for line in f if line.startswith('Uid:'))
            print('    its root is uid %s on the host (user namespace)' % uid)
        with step('Stopping and deleting it'):
            instance.stop(wait=True)
            instance.delete(wait=True)
            image.delete(wait=True)
    except Exception:
        print('The demo failed; the backend log says:\n%s' % daemon.log(), file=sys.stderr)
        raise
    finally:
        with step('Stopping the backend and removing %s' % daemon.data_dir):
            daemon.destroy()
    return 0


if __name__ == '__main__':
    sys.exit(main())
