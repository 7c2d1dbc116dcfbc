"""A clean restart in place with the image's reboot signal (image.reboot_signal).

liblxc sends lxc.signal.reboot to the container's init; the init shuts its services down and
calls reboot(2), which in a PID namespace ends the init, and liblxc's monitor starts the
container again with the same config (devices stay as they are). Images that do not say how
their init reboots are restarted by a clean stop and a start instead (LXD's way).
"""
import time

POLL = 0.05


def wanted(config):
    """Whether a clean restart of an instance with this expanded config reboots in place."""
    return bool(config.get('image.reboot_signal'))


def reboot_in_place(container, timeout):
    """Blocking: True once the container runs again with a new init within timeout.

    False when it did not (the init ignored the signal, or halted instead); the caller then
    stops and starts it.
    """
    if container.state != 'RUNNING':
        return False
    before = container.init_pid
    if not container.reboot():
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # between the two boots the monitor may briefly say STOPPED: only a new init counts
        pid = container.init_pid
        if pid > 0 and pid != before and container.state == 'RUNNING':
            return True
        time.sleep(POLL)
    return False
