"""Runs scenarios on every side, alternating the sides each repetition, and collects results."""
import sys
import traceback

from benchmarks.targets import CheckFailed


class SideResult:
    """What one scenario gave on one side: samples per metric, or why it has none."""

    def __init__(self):
        self.status = 'ok'
        self.error = None
        self.metrics = {}
        self.checks = 0
        self.repetitions = 0
        self.details = {}

    def add(self, values):
        for metric, value in values.items():
            self.metrics.setdefault(metric, []).append(value)
        self.repetitions += 1

    def fail(self, side, exc, alive=True):
        # The reference and raw liblxc must work: an error there is a failure. The bundled
        # backend is being built: what it cannot do yet is 'unsupported', unless it answered
        # with a wrong result, which is never a success.
        if not alive:
            self.status = 'daemon died'
        elif isinstance(exc, CheckFailed):
            self.status = 'wrong result'
        elif side == 'nova-lxd':
            self.status = 'unsupported'
        else:
            self.status = 'failed'
        self.error = '%s: %s%s' % (type(exc).__name__, str(exc).strip()[:500] or repr(exc),
                                   _request_of(exc))
        self.metrics = {}

    def to_dict(self):
        return {'status': self.status, 'error': self.error, 'checks': self.checks,
                'repetitions': self.repetitions, 'samples': self.metrics,
                'details': self.details}


def _request_of(exc):
    """' (POST /1.0/images -> 404)' for an API error, so 'not found' says what was not."""
    response = getattr(exc, 'response', None)
    request = getattr(response, 'request', None)
    if request is None:
        return ''
    path = request.path_url if hasattr(request, 'path_url') else request.url
    return ' (%s %s -> %s)' % (request.method, path, response.status_code)


def _alive(side):
    process = getattr(getattr(side, 'daemon', None), 'process', None)
    return process is None or process.poll() is None


def _log(message):
    print(message, file=sys.stderr, flush=True)


def run_scenario(scenario, targets, raw=None, verbose=False):
    """Returns {side: SideResult}; never raises for a scenario's own errors."""
    results = {target.name: SideResult() for target in targets}
    states = {}

    def attempt(side, checker, action):
        before = checker.checks
        try:
            values = action()
        except Exception as exc:
            if verbose:
                traceback.print_exc()
            results[side].fail(side, exc, _alive(checker))
            return
        results[side].checks += checker.checks - before
        if checker.checks == before:
            results[side].fail(side, CheckFailed('measured without checking its result'))
        else:
            results[side].add(values)

    for target in targets:
        try:
            states[target.name] = scenario.setup(target)
        except Exception as exc:
            if verbose:
                traceback.print_exc()
            results[target.name].fail(target.name, exc, _alive(target))
    if raw is not None and scenario.raw:
        results[raw.name] = SideResult()
    for rep in range(scenario.repetitions):
        # ABBA order: neither side always goes first (caches, a neighbour's burst of load)
        for target in (targets if rep % 2 == 0 else targets[::-1]):
            if results[target.name].status == 'ok':
                attempt(target.name, target,
                        lambda: scenario.measure(target, states[target.name]))
        if raw is not None and scenario.raw and results[raw.name].status == 'ok':
            attempt(raw.name, raw, lambda: scenario.measure_raw(raw, {}))
    for target in targets:
        if target.name in states:
            state = states[target.name]
            try:
                scenario.teardown(target, state)
            except Exception as exc:
                _log('  teardown of %r on %s failed: %s' % (scenario.name, target.name, exc))
            if isinstance(state, dict):
                results[target.name].details = state.get('details', {})
    # Metrics computed from all of a side's samples (a p95 beside the median), when asked.
    derive = getattr(scenario, 'derive', None)
    for result in results.values():
        if derive is not None and result.status == 'ok' and result.metrics:
            result.metrics.update(derive(result.metrics))
    for side, result in results.items():
        _log('  %-9s %s%s'
             % (side, result.status, (' (%s)' % result.error) if result.error else ''))
    return results
