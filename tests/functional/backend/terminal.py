"""Shared by the backend tests: the stock `lxc` client on a real terminal, and polling."""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time


def wait_until(predicate, timeout=20):
    """True as soon as predicate() is; its last value after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


class Terminal:
    """The stock `lxc` client (exec, console) on a pseudo-terminal, as a user runs it."""

    def __init__(self, backend, *args, rows=33, cols=101):
        env = dict(os.environ, LXD_DIR=backend.data_dir, TERM='xterm')
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe('lxc', ['lxc'] + list(args), env)
        self.resize(rows, cols, notify=False)
        self.output = b''

    def resize(self, rows, cols, notify=True):
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))
        if notify:   # what a terminal emulator does; `lxc` sends a window-resize control message
            os.kill(self.pid, signal.SIGWINCH)

    def read_until(self, pattern, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.fd, 4096)
                except OSError:
                    break
        return re.search(pattern, self.output)

    def send(self, data):
        os.write(self.fd, data)

    def wait(self, timeout=20):
        """The client's exit code; a client that does not exit is killed and fails the test."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.read_until(rb'\0', timeout=0.2)   # keep draining its output
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    return os.waitstatus_to_exitcode(status)
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            raise AssertionError('the client did not exit; output: %r' % self.output[-500:])
        finally:
            os.close(self.fd)
