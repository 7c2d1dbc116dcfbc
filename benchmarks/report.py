"""Statistics, the printed table and the JSON file of a run."""
import datetime
import json
import os
import statistics

SIDES = ('nova-lxd', 'lxd', 'liblxc')
# Metrics where more is better; for all others (time, memory, slowdown) less is better.
HIGHER_IS_BETTER = {'n'}


def summary(samples):
    """Median, min, max and spread.

    The spread is the interquartile range over the median (the min-max range below 4 samples):
    robust to the odd outlier a shared machine produces.
    """
    median = statistics.median(samples)
    if len(samples) >= 4:
        q1, _, q3 = statistics.quantiles(samples, n=4, method='inclusive')
    else:
        q1, q3 = min(samples), max(samples)
    spread = (q3 - q1) / median if median else 0.0
    return {'median': median, 'min': min(samples), 'max': max(samples), 'spread': spread,
            'n': len(samples)}


def ratio(unit, ours, theirs):
    """How many times better nova-lxd is than LXD (>1: nova-lxd better)."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None     # a noisy memory delta can come out negative: no ratio then
    return ours / theirs if unit in HIGHER_IS_BETTER else theirs / ours


def rows(scenario_results):
    """One row per metric: [{scenario, metric, unit, sides: {side: summary|status}, ratio}]."""
    table = []
    for entry in scenario_results:
        metrics = []
        for side in SIDES:
            for metric in entry['results'].get(side, {}).get('samples', {}):
                if metric not in metrics:
                    metrics.append(metric)
        if not metrics:
            metrics = [entry['name']]
        for metric in metrics:
            row = {'scenario': entry['name'], 'metric': metric,
                   'unit': entry['units'].get(metric, 's'), 'sides': {}}
            for side in SIDES:
                result = entry['results'].get(side)
                if result is None:
                    continue
                if result['status'] == 'ok' and metric in result['samples']:
                    row['sides'][side] = summary(result['samples'][metric])
                elif result['status'] != 'ok':
                    row['sides'][side] = {'status': result['status']}
                # else: this side does not measure that metric (liblxc: a launch, not its halves)
            medians = [row['sides'].get(s, {}).get('median') for s in ('nova-lxd', 'lxd')]
            row['ratio'] = ratio(row['unit'], *medians)
            table.append(row)
    return table


def _value(unit, value):
    if unit == 's':
        return '%.3f s' % value if value >= 0.01 else '%.1f ms' % (value * 1000)
    if unit == 'MB':
        return '%.1f MB' % value
    if unit == 'n':
        return '%d' % value
    return '%.2f%s' % (value, unit)


def _cell(unit, side):
    if side is None:
        return '-'
    if 'median' not in side:
        return side['status']
    return _value(unit, side['median'])


def format_table(table, header):
    columns = ['scenario', 'nova-lxd', 'LXD 5.0.2', 'ratio', 'liblxc', 'spread n/L', 'reps']
    lines = []
    for row in table:
        sides = row['sides']
        spread = '/'.join('±%d%%' % round(50 * sides[s]['spread'])
                          if s in sides and 'spread' in sides[s] else '-'
                          for s in ('nova-lxd', 'lxd'))
        reps = '/'.join(str(sides[s]['n']) if s in sides and 'n' in sides[s] else '-'
                        for s in ('nova-lxd', 'lxd'))
        lines.append([row['metric'], _cell(row['unit'], sides.get('nova-lxd')),
                      _cell(row['unit'], sides.get('lxd')),
                      '%.2fx' % row['ratio'] if row['ratio'] else '-',
                      _cell(row['unit'], sides.get('liblxc')), spread, reps])
    widths = [max(len(str(x)) for x in col) for col in zip(columns, *lines)]
    out = [header, '']
    fmt = lambda cells: '  '.join(  # noqa: E731
        (c.ljust(w) if i == 0 else c.rjust(w)) for i, (c, w) in enumerate(zip(cells, widths)))
    out.append(fmt(columns))
    out.append('  '.join('-' * w for w in widths))
    out.extend(fmt(cells) for cells in lines)
    out.append('')
    out.append('medians; ratio = how many times better nova-lxd is than LXD (>1: nova-lxd '
               'better);\nspread = half the interquartile range / median (min-max below 4 '
               'samples), nova-lxd/LXD; reps = nova-lxd/LXD')
    return '\n'.join(out)


def format_errors(scenario_results):
    out = []
    for entry in scenario_results:
        for side, result in entry['results'].items():
            if result['status'] != 'ok':
                out.append('%s on %s: %s: %s'
                           % (entry['name'], side, result['status'], result['error']))
    return '\n'.join(out)


def format_details(scenario_results):
    """How the ramps ended and went (density), and how long each scenario took."""
    out = []
    for entry in scenario_results:
        for side, result in entry['results'].items():
            details = result.get('details') or {}
            if 'stopped_by' not in details:
                continue
            out.append('%s on %s: ramp ended by %s after %.0f s of launches; deleting all took '
                       '%.1f s (%.3f s a container); host memory given back: %.1f MB a '
                       'container' % (entry['name'], side, details['stopped_by'],
                                      details.get('ramp_s', 0), details.get('delete_all_s', 0),
                                      details.get('delete_per_container_s', 0),
                                      details.get('host_mb_given_back_per_container', 0)))
            if details.get('recursion2_at_peak_s'):
                out.append('  GET recursion=2 at the peak, three in a row: %s'
                           % ', '.join('%.3f s' % v for v in details['recursion2_at_peak_s']))
            curve = details.get('curve') or []
            if curve:
                out.append('  running: launch median%s' % (
                    ' / GET recursion=2' if any('recursion2_s' in p for p in curve) else ''))
                for point in curve:
                    listing = (' / %.3f s' % point['recursion2_s']
                               if 'recursion2_s' in point else '')
                    out.append('  %7d: %.3f s%s'
                               % (point['running'], point['launch_median_s'], listing))
    timings = ['%s %.0f s' % (entry['name'], entry['elapsed_s'])
               for entry in scenario_results if 'elapsed_s' in entry]
    if timings:
        out.append('time per scenario: ' + ', '.join(timings))
    return '\n'.join(out)


def write_json(directory, document):
    os.makedirs(directory, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    path = os.path.join(directory, '%s.json' % stamp)
    with open(path + '.tmp', 'w') as f:
        json.dump(document, f, indent=1, sort_keys=True)
    os.replace(path + '.tmp', path)
    return path
