"""The scenario registry and the contract every scenario follows.

A scenario is a class registered with @register. For each side (nova-lxd, LXD) the runner calls
setup(target) once (untimed), then measure(target, state) once per repetition, alternating the
sides so that drift of a shared machine hits both alike, then teardown(target, state).

measure() times only the operation under test (see `stopwatch`), checks its result with
target.check(...) (a wrong result raises CheckFailed and voids the scenario on that side), cleans
up what the repetition made (untimed), and returns {metric: value}. A scenario whose class sets
`raw = True` also implements measure_raw(raw, state) against raw liblxc, the physical reference.

Scenarios the Nova driver engineer adds (boot p50/p95, concurrent boots) go in their own module
listed in MODULES below; target.socket is the unix socket a driver's [lxd] section can point at.
"""
import importlib
import time

SCENARIOS = {}

# Modules that register scenarios, in table order. A module that does not exist yet is skipped
# (benchmarks.scenarios.nova is the hook for the Nova boot scenarios).
MODULES = ('lifecycle', 'data', 'scale', 'migration', 'nova')


def register(cls):
    SCENARIOS[cls.name] = cls
    return cls


def load():
    for module in MODULES:
        try:
            importlib.import_module('benchmarks.scenarios.' + module)
        except ModuleNotFoundError as e:
            if e.name != 'benchmarks.scenarios.' + module:
                raise
    return SCENARIOS


class stopwatch:
    """with stopwatch() as t: ...; t.seconds"""

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start


class Scenario:
    name = ''
    description = ''
    # repetitions (quick, full)
    reps = (2, 7)
    # unit of each metric; the scenario's own metric is called like the scenario
    units = {}
    raw = False
    # part of the smoke run in the test suite (cheap, a few seconds)
    cheap = False

    def __init__(self, quick):
        self.quick = quick

    @property
    def repetitions(self):
        return self.reps[0] if self.quick else self.reps[1]

    def unit(self, metric):
        return self.units.get(metric, 's')

    def setup(self, target):
        return {}

    def measure(self, target, state):
        raise NotImplementedError

    def teardown(self, target, state):
        pass

    def measure_raw(self, raw, state):
        raise NotImplementedError


class OnInstance(Scenario):
    """A scenario acting on one container that setup makes (untimed) and teardown removes."""

    def make(self, target):
        raise NotImplementedError

    def setup(self, target):
        return {'instance': self.make(target)}

    def teardown(self, target, state):
        target.remove(state['instance'])
