"""A short run of the benchmarks, so they never rot: the results must be valid, never fast.

It runs the real entry command (`python -m benchmarks --quick --cheap`): a private bundled backend,
a private LXD 5.0.2 (installed by tools/setup.sh from bindep.txt) and raw liblxc, with real
containers. It checks that every scenario measured something on each side and checked its result
while doing so, that the table was printed and that the JSON was written; not how fast anything is.
A second short run ramps density to 5 containers on each side and deletes them all.
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The cheap scenarios the smoke run covers.
SCENARIOS = ('image import', 'launch busybox', 'forced stop', 'exec round trip',
             'exec round trip (lxc)', 'snapshot (running)', 'GET instances recursion')
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


def _other_benchmarks():
    """Benchmark runs of other people on this machine (ours has ended)."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if b'-m' in argv and b'benchmarks' in argv:
            found.append(int(pid))
    return found


def _assert_nothing_left(run):
    # what the run says it made (its daemons' directories and bridges) must be gone
    for side, info in _document(run)['targets'].items():
        assert info['data_dir'] and not os.path.exists(info['data_dir']), (side, info)
        assert info['bridge'] and not os.path.exists('/sys/class/net/' + info['bridge'])
    # Other people's benchmark runs make directories and bridges of the same names: what
    # appeared meanwhile is ours only when no other run was going on.
    if not _other_benchmarks():
        assert run['left'] == set()


def test_nothing_is_left_behind(run):
    _assert_nothing_left(run)


DENSITY = 5     # one point of the curve (its step is 5 with --quick)


@pytest.fixture(scope='module')
def density(tmp_path_factory):
    output = tmp_path_factory.mktemp('bench-density')
    before = _mine()
    proc = subprocess.run(
        [sys.executable, '-m', 'benchmarks', '--quick', '--scenario', 'density',
         '--density-limit', str(DENSITY), '--output', str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    return {'proc': proc, 'output': output, 'left': _mine() - before}


def test_density_ramps_measures_and_deletes_everything(density):
    proc = density['proc']
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = _document(density)
    (entry,) = document['scenarios']
    assert entry['name'] == 'density'
    for side in ('nova-lxd', 'lxd'):
        result = entry['results'][side]
        assert result['status'] == 'ok', (side, result)
        samples = {metric: values[0] for metric, values in result['samples'].items()}
        assert samples['density: running'] == DENSITY, (side, samples)
        # what only the containers' own cgroups hold: real, whatever the neighbours do
        assert samples['density: cgroup MB/container'] > 0, (side, samples)
        assert samples['density: cgroup+monitor MB/container'] > \
            samples['density: cgroup MB/container'], (side, samples)
        # the host-wide figures move with the neighbours: present, whatever their sign
        assert isinstance(samples['density: accounted MB/container'], float), samples
        assert isinstance(samples['density: host MB/container'], float), samples
        assert samples['density: GET recursion=2 at peak'] > 0, (side, samples)
        assert samples['density: daemon MB after delete'] > 0, (side, samples)
        details = result['details']
        assert details['stopped_by'] == 'limit', (side, details)
        assert [point['running'] for point in details['curve']] == [DENSITY], details
        assert details['delete_all_s'] > 0 and details['ramp_s'] > 0, details
    # raw liblxc started beside nova-lxd's containers, on its bridge: the physical reference
    nova_curve = entry['results']['nova-lxd']['details']['curve']
    assert nova_curve[0]['raw_launch_median_s'] > 0, nova_curve
    assert 'raw_launch_median_s' not in entry['results']['lxd']['details']['curve'][0]
    assert 'density on nova-lxd: ramp ended by limit' in proc.stdout, proc.stdout
    assert 'the whole run took' in proc.stdout, proc.stdout
    _assert_nothing_left(density)
