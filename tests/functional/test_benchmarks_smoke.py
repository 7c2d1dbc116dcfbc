"""A short run of the benchmarks, so they never rot: the results must be valid, never fast.

It runs the real entry command (`python -m benchmarks --quick --cheap`): a private bundled backend,
a private LXD 5.0.2 (installed by tools/setup.sh from bindep.txt) and raw liblxc, with real
containers. It checks that every scenario measured something on each side and checked its result
while doing so, that the table was printed and that the JSON was written; not how fast anything is.
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The cheap scenarios the smoke run covers.
SCENARIOS = ('image import', 'launch busybox', 'forced stop', 'exec round trip',
             'snapshot (running)', 'GET instances recursion')
# What the bundled backend already does: these must measure on it too ('unsupported' would be a
# regression). A scenario left out may say 'unsupported', with the error that says why.
BUNDLED_SUPPORTS = set(SCENARIOS)
# Scenarios with a raw liblxc reference.
RAW = {'launch busybox', 'forced stop'}
REPS = 2


def _mine():
    """What only the benchmarks create: their temp dirs and their bridges."""
    links = os.listdir('/sys/class/net')
    return ({name for name in os.listdir('/var/tmp') if name.startswith('nova-lxd-bench-')}
            | {name for name in links if name.startswith(('nlbbr', 'nlbench'))})


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    output = tmp_path_factory.mktemp('bench-results')
    before = _mine()
    proc = subprocess.run(
        [sys.executable, '-m', 'benchmarks', '--quick', '--cheap', '--reps', str(REPS),
         '--output', str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    return {'proc': proc, 'output': output, 'left': _mine() - before}


def _document(run):
    files = [f for f in os.listdir(run['output']) if f.endswith('.json')]
    assert len(files) == 1, files
    with open(os.path.join(run['output'], files[0])) as f:
        return json.load(f)


def test_the_command_succeeds_and_prints_the_table(run):
    proc = run['proc']
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith('scenario'))
    for column in ('nova-lxd', 'LXD 5.0.2', 'ratio', 'liblxc', 'spread', 'reps'):
        assert column in lines[header]
    rows = lines[header + 2:]
    for metric in ('image import', 'launch busybox', 'forced stop', 'exec round trip',
                   'snapshot (running)', 'GET instances?recursion=1 (10)',
                   'GET instances?recursion=2 (10)'):
        assert any(row.startswith(metric) for row in rows), (metric, proc.stdout)
    assert 'results: ' in proc.stdout


def test_the_json_has_every_scenario_with_checked_results(run):
    document = _document(run)
    assert document['quick'] is True
    # LXD's instances really go on a pool of the bundled default's kind (btrfs for any
    # copy-on-write one)
    drivers = {side: info['root_pool'].rsplit('(', 1)[1].rstrip(')')
               for side, info in document['targets'].items()}
    assert drivers['nova-lxd'] == document['pools']['nova-lxd'], document['targets']
    assert drivers['lxd'] == {'dir': 'dir'}.get(drivers['nova-lxd'], 'btrfs'), drivers
    by_name = {entry['name']: entry for entry in document['scenarios']}
    assert set(by_name) == set(SCENARIOS)
    for name, entry in by_name.items():
        sides = entry['results']
        expected_sides = {'nova-lxd', 'lxd'} | ({'liblxc'} if name in RAW else set())
        assert set(sides) == expected_sides, (name, sides.keys())
        for side, result in sides.items():
            must_work = side != 'nova-lxd' or name in BUNDLED_SUPPORTS
            if result['status'] != 'ok':
                assert not must_work, (name, side, result)
                assert result['status'] == 'unsupported' and result['error'], (name, result)
                continue
            # every repetition measured every metric, and checked its result at least once
            assert result['repetitions'] == REPS, (name, side, result)
            assert result['checks'] >= REPS, (name, side, result)
            assert result['samples'], (name, side)
            for metric, samples in result['samples'].items():
                assert len(samples) == REPS, (name, side, metric)
                assert all(isinstance(v, float) and v > 0 for v in samples), (name, metric)


def test_the_table_in_the_json_matches_the_samples(run):
    document = _document(run)
    for row in document['table']:
        ours, theirs = row['sides'].get('nova-lxd', {}), row['sides']['lxd']
        assert theirs['min'] <= theirs['median'] <= theirs['max'], row
        if 'median' in ours:
            assert row['ratio'] == pytest.approx(theirs['median'] / ours['median'])
        else:
            assert row['ratio'] is None


def test_nothing_is_left_behind(run):
    assert run['left'] == set()
