"""What makes a container usable (issue 4): exec, files, snapshots, restore, publish, copy."""
import hashlib
import os

from benchmarks import images
from benchmarks.scenarios import OnInstance, register, stopwatch

MB = 1 << 20


class _OnRunning(OnInstance):
    """Scenarios that act on one running busybox container made in setup."""

    def make(self, target):
        return target.launch(images.busybox())


@register
class ExecRoundTrip(_OnRunning):
    name = 'exec round trip'
    description = 'run `echo` in a running container and collect its output and exit code'
    reps = (3, 20)
    cheap = True

    def measure(self, target, state):
        with stopwatch() as t:
            result = state['instance'].execute(['echo', 'round-trip'])
        target.check(result.exit_code == 0, '%s: exit code %r' % (target.name, result.exit_code))
        target.check(result.stdout == 'round-trip\n', '%s: stdout %r'
                     % (target.name, result.stdout))
        return {self.name: t.seconds}


@register
class ExecRoundTripLxc(_OnRunning):
    name = 'exec round trip (lxc)'
    description = ('the same through the stock lxc client: pylxd\'s websocket thread waits '
                   'out 0.1 s polls at the end of each exec, which hides the daemons\' own time')
    reps = (3, 20)
    cheap = True

    def measure(self, target, state):
        with stopwatch() as t:
            result = target.lxc('exec', state['instance'].name, '--', 'echo', 'round-trip')
        target.check(result.returncode == 0, '%s: lxc exec exit %r: %s'
                     % (target.name, result.returncode, result.stderr[-300:]))
        target.check(result.stdout == b'round-trip\n', '%s: stdout %r'
                     % (target.name, result.stdout))
        return {self.name: t.seconds}


@register
class FilePush(_OnRunning):
    name = 'file push 10 MB'
    description = 'push 10 MB into a running container; pulled back and compared (untimed)'
    reps = (2, 10)

    def setup(self, target):
        state = super().setup(target)
        state['data'] = os.urandom(10 * MB)
        return state

    def measure(self, target, state):
        instance, data = state['instance'], state['data']
        with stopwatch() as t:
            instance.files.put('/root/pushed.bin', data)
        pulled = instance.files.get('/root/pushed.bin')
        target.check(hashlib.sha256(pulled).digest() == hashlib.sha256(data).digest(),
                     '%s: pulled back %d bytes that differ from the %d pushed'
                     % (target.name, len(pulled), len(data)))
        return {self.name: t.seconds}


@register
class SnapshotRunning(_OnRunning):
    name = 'snapshot (running)'
    description = 'snapshot a running busybox container'
    reps = (2, 10)
    cheap = True

    def measure(self, target, state):
        instance = state['instance']
        name = target.unique('snap')
        with stopwatch() as t:
            instance.snapshots.create(name, wait=True)
        try:
            snapshot = instance.snapshots.get(name)
            target.check(snapshot.name == name, '%s: snapshot %s not found'
                         % (target.name, name))
            instance.sync()
            target.check(instance.status == 'Running',
                         '%s: container not running after its snapshot' % target.name)
        finally:
            try:
                instance.snapshots.get(name).delete(wait=True)
            except Exception:
                pass
        return {self.name: t.seconds}


@register
class Restore(OnInstance):
    name = 'restore'
    description = 'restore a snapshot of a stopped container; the overwritten file comes back'
    reps = (2, 10)
    MARKER = '/root/restore-marker'

    def make(self, target):
        instance = target.create(images.busybox())
        instance.files.put(self.MARKER, b'before\n')
        instance.snapshots.create('base', wait=True)
        return instance

    def measure(self, target, state):
        instance = state['instance']
        instance.files.put(self.MARKER, b'after\n')
        with stopwatch() as t:
            instance.restore_snapshot('base', wait=True)
        content = instance.files.get(self.MARKER)
        target.check(content == b'before\n', '%s: after restore the file holds %r'
                     % (target.name, content))
        return {self.name: t.seconds}


class _OnBig(OnInstance):
    """Scenarios that act on one stopped container made from the 200 MB image."""

    def make(self, target):
        return target.create(images.big())


@register
class Publish(_OnBig):
    name = 'publish 200 MB'
    description = 'publish a stopped container with 200 MB of incompressible data as an image'
    reps = (1, 2)   # 3 repetitions took 2 minutes of the 30 the full run may take

    def measure(self, target, state):
        with stopwatch() as t:
            image = state['instance'].publish(wait=True)
        try:
            target.check(image.size >= 200 * MB, '%s: the published image has %d bytes'
                         % (target.name, image.size))
        finally:
            image.delete(wait=True)
        return {self.name: t.seconds}


@register
class Copy(_OnBig):
    name = 'copy'
    description = 'copy a stopped 200 MB container (cheap clone where the pool allows)'
    reps = (1, 5)

    def measure(self, target, state):
        name = target.unique('copy')
        copy = None
        try:
            with stopwatch() as t:
                # profiles as `lxc copy` sends them: LXD 5.0 does not take the source's
                copy = target.client.instances.create(
                    {'name': name, 'profiles': state['instance'].profiles,
                     'source': {'type': 'copy', 'source': state['instance'].name}}, wait=True)
            marker = copy.files.get('/' + images.MARKER_PATH)
            target.check(marker == images.MARKER, '%s: the copy holds %r, not the marker'
                         % (target.name, marker[:80]))
        finally:
            if copy is not None:
                target.remove(copy)
        return {self.name: t.seconds}
