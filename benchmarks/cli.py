"""python -m benchmarks: nova-lxd's bundled backend beside LXD 5.0.2, in one run, one table.

Starts a private bundled backend and a private LXD 5.0.2 (own directories, LXD on a storage pool of
the bundled backend's default kind), runs each scenario on both with the same busybox images and the
same client (pylxd), prints the table and writes benchmarks/results/<UTC timestamp>.json.
"""
import argparse
import datetime
import os
import re
import sys
import time
import warnings

from benchmarks import host, report, runner, scenarios, targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO, 'benchmarks', 'results')
# The LXD pool driver that matches the bundled backend's default pool driver.
LXD_POOL = {'btrfs': 'btrfs', 'dir': 'dir'}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='benchmarks/run', description=__doc__)
    parser.add_argument('--scenario', action='append', metavar='NAME',
                        help='run only this scenario (repeatable); see --list')
    parser.add_argument('--quick', action='store_true',
                        help='a few repetitions each and small counts (a smoke run)')
    parser.add_argument('--cheap', action='store_true',
                        help='only the cheap scenarios (those of the test suite smoke run)')
    parser.add_argument('--reps', type=int, help='override every scenario\'s repetitions')
    parser.add_argument('--density-limit', type=int,
                        help='stop density at this many running containers (default 1000, '
                        '20 with --quick)')
    parser.add_argument('--list-count', type=int,
                        help='instances for the listing latency (default 500, 10 with --quick)')
    parser.add_argument('--no-raw', action='store_true', help='skip the raw liblxc reference')
    parser.add_argument('--side', choices=('nova-lxd', 'lxd'), action='append',
                        help='run only one side (for debugging; no ratio then)')
    parser.add_argument('--output', default=DEFAULT_OUTPUT,
                        help='directory of the JSON results (default: %(default)s)')
    parser.add_argument('--list', action='store_true', help='list the scenarios and exit')
    parser.add_argument('--verbose', action='store_true', help='tracebacks of failures')
    return parser.parse_args(argv)


def slug(name):
    """'launch busybox' -> 'launch-busybox': the name to type after --scenario."""
    return re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')


def select(args):
    available = scenarios.load()
    if args.list:
        for name, cls in available.items():
            print('%-26s %s%s' % (slug(name), cls.description, '  [cheap]' if cls.cheap else ''))
        return None
    by_slug = {slug(name): cls for name, cls in available.items()}
    names = [slug(n) for n in args.scenario] if args.scenario else list(by_slug)
    unknown = [n for n in names if n not in by_slug]
    if unknown:
        raise SystemExit('unknown scenario(s): %s (see --list)' % ', '.join(unknown))
    chosen = [by_slug[n](quick=args.quick) for n in names]
    if args.cheap:
        chosen = [s for s in chosen if s.cheap]
    for scenario in chosen:
        if args.reps:
            scenario.reps = (args.reps, args.reps)
        if args.density_limit and hasattr(scenario, 'limit'):
            scenario.limit = args.density_limit
        if args.no_raw and hasattr(scenario, 'raw_reference'):
            scenario.raw_reference = False
        if args.list_count and hasattr(scenario, 'count') and scenario.name.startswith('GET'):
            scenario.count = args.list_count
    return chosen


def start_sides(wanted):
    """Start the daemons; the bundled one first, since LXD's pool follows its default."""
    sides = []
    try:
        bundled = targets.BundledTarget.start()
        sides.append(bundled)
        driver = bundled.storage_driver()
        pool = LXD_POOL.get(driver, 'btrfs')
        if 'lxd' in wanted:
            sides.append(targets.LXDTarget.start(pool_driver=pool))
    except BaseException:
        for side in sides:
            side.close()
        raise
    if 'nova-lxd' not in wanted:
        sides.pop(0).close()
    return sides, driver, pool


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # pylxd warns about every field of a newer API it has no attribute for.
    warnings.filterwarnings('ignore', category=UserWarning, module='pylxd')
    chosen = select(args)
    if chosen is None:
        return 0
    wanted = args.side or ['nova-lxd', 'lxd']
    started = datetime.datetime.now(datetime.timezone.utc)
    began = time.monotonic()
    machine = host.machine()
    sides, bundled_pool, lxd_pool = start_sides(wanted)
    raw = None
    results = []
    try:
        if not args.no_raw and any(s.raw for s in chosen):
            from benchmarks import rawlxc
            raw = rawlxc.RawLXC()
        described = {side.name: side.describe() for side in sides}
        for scenario in chosen:
            print('%s (%d reps)' % (scenario.name, scenario.repetitions), file=sys.stderr,
                  flush=True)
            t0 = time.monotonic()
            side_results = runner.run_scenario(scenario, sides, raw, verbose=args.verbose)
            results.append({'name': scenario.name, 'description': scenario.description,
                            'units': scenario.units, 'repetitions': scenario.repetitions,
                            'elapsed_s': time.monotonic() - t0,
                            'results': {k: v.to_dict() for k, v in side_results.items()}})
    finally:
        # State some scenarios share across the run (Nova's harness) goes before the daemons.
        for close_shared in {getattr(type(s), 'close_shared', None) for s in chosen} - {None}:
            close_shared()
        if raw is not None:
            raw.close()
        for side in sides:
            side.close()
        targets.remove_client_certificate()
    elapsed = time.monotonic() - began
    table = report.rows(results)
    header = ('nova-lxd bundled backend vs LXD 5.0.2 - %s - %s, %d cpus, %.0f GiB, load %.1f '
              'at start - pools: nova-lxd %s, LXD %s%s'
              % (started.strftime('%Y-%m-%d %H:%M UTC'), machine['cpu_model'] or 'cpu',
                 machine['cpus'], machine['memory_gib'], machine['load_average_at_start'][0],
                 bundled_pool, lxd_pool, ' - QUICK (smoke) run' if args.quick else ''))
    print(report.format_table(table, header))
    limits = targets.limits_report(table)
    if limits:
        print('\n' + limits)
    details = report.format_details(results)
    if details:
        print('\n' + details)
    errors = report.format_errors(results)
    if errors:
        print('\nnot measured:\n' + errors)
    print('\nthe whole run took %.1f min (load average now %.1f)'
          % (elapsed / 60, os.getloadavg()[0]))
    profiles = {name: d.get('default_profile_devices') for name, d in described.items()}
    if len({str(v) for v in profiles.values()}) > 1:
        print('\nnote: the default profiles differ (%s): launches are not like for like'
              % '; '.join('%s %s' % kv for kv in profiles.items()))
    path = report.write_json(args.output, {
        'started': started.isoformat(), 'finished':
            datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'quick': args.quick, 'elapsed_s': elapsed, 'load_average_at_end': os.getloadavg(),
        'machine': machine, 'targets': described,
        'pools': {'nova-lxd': bundled_pool, 'lxd': lxd_pool},
        'scenarios': results, 'table': table})
    print('\nresults: %s' % path)
    return 0
