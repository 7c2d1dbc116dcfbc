"""Progress lines for long steps, written to stderr (or a given stream); silent when disabled."""
import sys
import time


class Progress:
    """Reports `label: NN% (done/total MiB)` at most once a second and on each 10% step."""

    def __init__(self, label, total=None, stream=None, enabled=True):
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self._last_time = 0.0
        self._last_step = -1

    def message(self, text):
        if self.enabled:
            print('%s: %s' % (self.label, text), file=self.stream, flush=True)

    def reset(self, total=None):
        """Start reporting a new step."""
        self.total = total
        self._last_time = 0.0
        self._last_step = -1

    def percent(self, pct):
        """Report a tool's own percentage (for example qemu-img -p)."""
        if self.enabled and int(pct) // 10 != self._last_step:
            self._last_step = int(pct) // 10
            self.message('%d%%' % pct)

    def update(self, done):
        if not self.enabled:
            return
        now = time.monotonic()
        if self.total:
            pct = min(100, int(done * 100 / self.total))
            step = pct // 10
            if step == self._last_step and now - self._last_time < 1.0:
                return
            self._last_step = step
            # the total is an estimate: never claim more than it
            text = '%d%% (%d/%d MiB)' % (pct, min(done, self.total) >> 20, self.total >> 20)
        else:
            if now - self._last_time < 1.0:
                return
            text = '%d MiB' % (done >> 20)
        self._last_time = now
        self.message(text)


def silent(label=''):
    return Progress(label, enabled=False)
