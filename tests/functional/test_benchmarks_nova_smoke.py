"""A short run of the Nova benchmark scenarios (benchmarks/scenarios/nova.py), so they never rot.

They need Nova's in-process harness, 200 MB images and two compute hosts per side, so a run takes
minutes, not the seconds of the cheap smoke run (tests/functional/test_benchmarks_smoke.py): they
run here once, with the retired driver's snapshot they are compared with, one repetition each,
through the real entry command. It checks that each scenario measured on both sides (the bundled
backend and LXD 5.0.2) and checked its result while doing so, that the derived p95 is there, and
that nothing is left behind; never how fast anything is.
"""
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.functional.test_benchmarks_smoke import REPO, _mine, _other_benchmarks

# Out of the default run (`tools/test.sh -m slow` runs it): it takes about 5 minutes on this shared
# machine. A run that overruns anyway is interrupted, so that it still removes its daemons.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]
RUN_TIMEOUT = 1800

# scenario name -> its metrics (`--scenario` takes the name in lower case, dashes for spaces)
SCENARIOS = {
    'nova boot': {'nova boot p50', 'nova boot p95'},
    'nova 10 concurrent boots': {'nova 10 concurrent boots'},
    'nova snapshot 200 MB': {'nova snapshot 200 MB', 'nova snapshot pause'},
    'nova cold migration 200 MB': {'nova cold migration 200 MB'},
    'nova resize 200 MB': {'nova resize 200 MB'},
    'retired snapshot 200 MB': {'retired snapshot 200 MB', 'retired snapshot downtime'},
}
# metrics that may be 0: a freeze shorter than the watch's sampling period
MAY_BE_ZERO = {'nova snapshot pause'}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    output = tmp_path_factory.mktemp('bench-nova-results')
    before = _mine()
    command = [sys.executable, '-m', 'benchmarks', '--quick', '--reps', '1',
               '--output', str(output)]
    for name in SCENARIOS:
        command += ['--scenario', name.lower().replace(' ', '-')]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGINT: the command's clean-up, which abandons a wedged harness and removes the daemons
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
    proc = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    files = [f for f in os.listdir(output) if f.endswith('.json')]
    document = None
    if len(files) == 1:
        with open(os.path.join(output, files[0])) as f:
            document = json.load(f)
    return {'proc': proc, 'document': document, 'left': _mine() - before,
            'others': _other_benchmarks()}


def test_the_command_succeeds_and_writes_the_results(run):
    proc = run['proc']
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert run['document'] is not None, proc.stdout
    for metrics in SCENARIOS.values():
        for metric in metrics:
            assert any(line.startswith(metric) for line in proc.stdout.splitlines()), metric


def test_every_nova_scenario_measured_and_checked_on_both_sides(run):
    by_name = {entry['name']: entry for entry in run['document']['scenarios']}
    assert set(by_name) == set(SCENARIOS)
    for name, entry in by_name.items():
        assert set(entry['results']) == {'nova-lxd', 'lxd'}, entry['name']
        for side, result in entry['results'].items():
            assert result['status'] == 'ok', (name, side, result['error'])
            assert result['repetitions'] == 1, (name, side)
            # each repetition checks the server, its container and its data several times
            assert result['checks'] >= 3, (name, side, result['checks'])
            assert set(result['samples']) == SCENARIOS[name], (name, side)
            for metric, samples in result['samples'].items():
                assert len(samples) == 1, (name, side, metric)
                value = samples[0]
                assert isinstance(value, float), (metric, value)
                assert value >= 0 if metric in MAY_BE_ZERO else value > 0, (metric, value)


def test_nothing_is_left_behind(run):
    # the harness's own directory is named in the output: it must be gone whatever else runs
    work_dirs = re.findall(r'nova harness: work dir (\S+)', run['proc'].stderr)
    assert work_dirs, run['proc'].stderr[-2000:]
    assert not [d for d in work_dirs if os.path.exists(d)]
    # Other people's benchmark runs make directories and bridges of the same names: what
    # appeared meanwhile is ours only when no other run was going on.
    if not run['others']:
        assert run['left'] == set()
