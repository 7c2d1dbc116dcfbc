"""Image import and the container lifecycle (issue 3): launch, clean stop, forced stop, delete."""
import hashlib

from benchmarks import host, images
from benchmarks.scenarios import Scenario, register, stopwatch
from benchmarks.targets import CheckFailed


@register
class ImageImport(Scenario):
    name = 'image import'
    description = 'upload the unified busybox tarball (about 1 MB) and wait for the image'
    reps = (2, 7)
    cheap = True

    def setup(self, target):
        image = images.busybox()
        return {'image': image, 'data': image.read()}

    def measure(self, target, state):
        data = state['data']
        expected = hashlib.sha256(data).hexdigest()
        # Untimed: the image may be there (from set-up or the last repetition); the import stays
        # for the scenarios that launch it.
        if target.client.images.exists(expected):
            target.client.images.get(expected).delete(wait=True)
        target.forget_image(state['image'])
        with stopwatch() as t:
            image = target.client.images.create(data, wait=True)
        target.check(image.fingerprint == expected, '%s: fingerprint %s, expected %s'
                     % (target.name, image.fingerprint, expected))
        target.check(target.client.images.exists(expected), '%s: image not listed'
                     % target.name)
        return {self.name: t.seconds}


class _Launch(Scenario):
    raw = True

    def image(self):
        return images.busybox()

    def setup(self, target):
        image = self.image()
        if image is None:
            raise CheckFailed('no image for this scenario on this machine')
        target.ensure_image(image)
        return {'image': image}

    def measure(self, target, state):
        name = target.unique('launch')
        fingerprint = target.ensure_image(state['image'])
        instance = None
        try:
            with stopwatch() as created:
                instance = target.client.instances.create(
                    {'name': name, 'source': {'type': 'image', 'fingerprint': fingerprint}},
                    wait=True)
            with stopwatch() as started:
                instance.start(wait=True)
            target.check_running(instance)
        finally:
            if instance is not None:
                target.remove(instance)
        # the launch, and its two halves on rows of their own (issue 3 asks for each)
        return {self.name: created.seconds + started.seconds,
                self.name.replace('launch', 'create'): created.seconds,
                self.name.replace('launch', 'start'): started.seconds}

    def measure_raw(self, raw, state):
        with stopwatch() as t:
            container = raw.define()
            raw.start(container)
        raw.discard(container)
        return {self.name: t.seconds}


@register
class LaunchBusybox(_Launch):
    name = 'launch busybox'
    description = 'create from a cached busybox image + start, until init runs'
    reps = (2, 10)
    cheap = True


@register
class LaunchDebian(_Launch):
    name = 'launch debian'
    description = 'create from a cached Debian+systemd image + start, until init runs'
    reps = (1, 5)
    raw = False

    def image(self):
        return images.debian()


class _Stop(Scenario):
    raw = True
    force = False

    def measure(self, target, state):
        instance = target.launch(images.busybox(), ready=True)
        try:
            pid = target.init_pid(instance)
            with stopwatch() as t:
                instance.stop(force=self.force, timeout=30, wait=True)
            target.check(host.process_gone(pid), '%s: init %d still runs after the stop'
                         % (target.name, pid))
            target.check_stopped(instance)
            # A clean stop that ran into its timeout was really a forced one.
            target.check(self.force or t.seconds < 29, '%s: clean stop hit its timeout'
                         % target.name)
        finally:
            target.remove(instance)
        return {self.name: t.seconds}

    def measure_raw(self, raw, state):
        container = raw.define()
        try:
            raw.start(container)
            raw.wait_ready(container)
            with stopwatch() as t:
                (raw.force_stop if self.force else raw.clean_stop)(container)
        finally:
            raw.discard(container)
        return {self.name: t.seconds}


@register
class CleanStop(_Stop):
    name = 'clean stop'
    description = 'stop a running busybox container by its halt signal (busybox init)'
    reps = (1, 5)


@register
class ForcedStop(_Stop):
    name = 'forced stop'
    description = 'kill a running busybox container'
    reps = (2, 10)
    force = True
    cheap = True


@register
class Delete(Scenario):
    name = 'delete'
    description = 'delete a stopped busybox container'
    reps = (2, 10)

    def measure(self, target, state):
        instance = target.create(images.busybox())
        with stopwatch() as t:
            instance.delete(wait=True)
        target.check(not target.client.instances.exists(instance.name),
                     '%s: %s still exists after delete' % (target.name, instance.name))
        return {self.name: t.seconds}


@register
class ForcedDelete(Scenario):
    name = 'forced delete'
    description = 'delete a running busybox container (forced stop + delete, as `lxc delete -f`)'
    reps = (2, 10)

    def measure(self, target, state):
        instance = target.launch(images.busybox())
        pid = target.init_pid(instance)
        try:
            with stopwatch() as t:
                instance.stop(force=True, wait=True)
                instance.delete(wait=True)
            target.check(host.process_gone(pid), '%s: init %d still runs after the delete'
                         % (target.name, pid))
            target.check(not target.client.instances.exists(instance.name),
                         '%s: %s still exists after delete' % (target.name, instance.name))
        finally:
            target.remove(instance)
        return {self.name: t.seconds}


@register
class LaunchMany(Scenario):
    name = 'launch 50 in a row'
    description = 'launch busybox containers one after another (5 with --quick); total time'
    reps = (1, 1)   # 50 launches are many samples already; two runs cost 5 minutes of the 30

    @property
    def count(self):
        return 5 if self.quick else 50

    def measure(self, target, state):
        fingerprint = target.ensure_image(images.busybox())
        launched = []
        try:
            with stopwatch() as t:
                for _ in range(self.count):
                    instance = target.client.instances.create(
                        {'name': target.unique('many'),
                         'source': {'type': 'image', 'fingerprint': fingerprint}},
                        wait=True)
                    launched.append(instance)
                    instance.start(wait=True)
            for instance in launched:
                target.check_running(instance)
            target.check(len(launched) == self.count, '%s: launched %d of %d'
                         % (target.name, len(launched), self.count))
        finally:
            for instance in launched:
                target.remove(instance)
        return {'launch %d in a row' % self.count: t.seconds}
