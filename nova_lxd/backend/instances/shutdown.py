"""A clean shutdown that leaves the daemon serving while the container takes its time.

liblxc's shutdown(timeout) waits for the container inside the C call, and the python bindings
keep the GIL there: every API request of the daemon stood still for up to the instance's
boot.host_shutdown_timeout (found by the driver's backend-restart test). shutdown(0) only sends
the halt signal; the waiting is done here, in Python, which lets the other threads run.
"""
import time

POLL_INTERVAL = 0.05


def clean_shutdown(container, timeout):
    """Send the halt signal; True if the container stopped within timeout seconds."""
    if not container.shutdown(0):
        return False
    deadline = time.monotonic() + timeout
    while container.running:
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True
