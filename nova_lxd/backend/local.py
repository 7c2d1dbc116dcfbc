"""Run a private nova-lxd-backend as a child process: for the demo, the tests and the benchmarks.

Everything the daemon owns lives under its data directory, so several can run side by side.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pylxd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class LocalDaemon:
    """One private daemon; `config`: keys of its config file's [backend] section.

    Its managed networks forward no DNS query off this host: they read the servers of a resolv
    file of the daemon's own (`resolv_file`, empty unless the caller writes one), never the
    host's. So the config file is always the one written here: a --config-file of the caller's
    would lose that.
    """

    def __init__(self, data_dir=None, extra_args=(), prefix='nova-lxd-', env=None, config=None):
        if '--config-file' in extra_args:
            raise ValueError('pass the config file\'s keys as config={...}')
        self.owns_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix=prefix, dir='/var/tmp')
        os.makedirs(self.data_dir, exist_ok=True)
        # containers' mapped root must be able to traverse to their rootfs
        os.chmod(self.data_dir, 0o711)
        self.extra_args = list(extra_args)
        self.env = dict(env or {})   # set in the daemon's environment at every start
        self.config = dict({'dns_resolv_file': self.resolv_file}, **(config or {}))
        self.process = None

    @property
    def socket(self):
        return os.path.join(self.data_dir, 'unix.socket')

    @property
    def log_file(self):
        return os.path.join(self.data_dir, 'daemon.log')

    @property
    def config_file(self):
        return os.path.join(self.data_dir, 'backend.conf')

    @property
    def resolv_file(self):
        return os.path.join(self.data_dir, 'dns-upstream.conf')

    def _write_config(self):
        if not os.path.exists(self.resolv_file):
            open(self.resolv_file, 'a').close()
        with open(self.config_file, 'w') as f:
            f.write('[backend]\n' + ''.join('%s = %s\n' % item for item in self.config.items()))

    def start(self, timeout=30):
        """Start the daemon and return a pylxd client once it answers."""
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
                   **self.env)
        self._write_config()
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'nova_lxd.backend.daemon', '--config-file', self.config_file,
             '--data-dir', self.data_dir, '--log-file', self.log_file, '--debug']
            + self.extra_args, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError('backend exited with %s; log:\n%s'
                                   % (self.process.returncode, self.log()))
            if os.path.exists(self.socket):
                try:
                    return pylxd.Client(endpoint=self.socket)
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError('backend did not answer within %ss; log:\n%s' % (timeout, self.log()))

    def client(self):
        return pylxd.Client(endpoint=self.socket)

    def log(self):
        try:
            with open(self.log_file) as f:
                return f.read()[-20000:]
        except OSError:
            return ''

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout)
        self.process = None

    def delete_all(self):
        """Stop and delete every instance and image, through the API."""
        client = self.client()
        for instance in client.instances.all():
            if instance.status != 'Stopped':
                instance.stop(force=True, wait=True)
            instance.delete(wait=True)
        for image in client.images.all():
            image.delete(wait=True)

    def destroy(self):
        """Stop the daemon and remove everything it owns."""
        if self.process and self.process.poll() is None:
            try:
                self.delete_all()
            except Exception:
                pass
        self.stop()
        from nova_lxd.backend import lxcfs   # the daemon leaves it running for its containers
        lxcfs.stop(self.data_dir)
        if self.owns_dir:
            # pools (btrfs on loop files) are mounted below the data dir; this frees their loops
            from nova_lxd.backend.storage.system import unmount_tree
            unmount_tree(self.data_dir)
            shutil.rmtree(self.data_dir, ignore_errors=True)
