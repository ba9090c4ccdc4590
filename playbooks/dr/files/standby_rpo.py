#!/usr/bin/env python3
"""What the warm standby holds of what the main cluster confirmed (docs/dr-standby.md).

Usage::

    standby_rpo.py DIR... [--json OUT]

Reads the traffic engine's full histories (``ops-*.jsonl``, ``record_ops: true``) found under
the given directories: the publishers' records (``"t": "pub"``, confirmed by the main cluster)
and the deliveries of a consumer or a ``--drain`` on the standby (``"t": "del"``). The drill
checker (warren_amqp.checker) gives the verdict and the counts; this adds the times:

* **lag**: for each confirmed message delivered on the standby, first delivery time minus the
  main cluster's confirm time (meaningful when a consumer ran on the standby during the run).
* **rpo**: the confirmed messages missing on the standby, and the window they span: from the
  confirm of the first missing one to the last confirm the main cluster gave. 0 when none is
  missing.

Every time is a Unix time in seconds, taken on the host that ran the engine.
"""

import argparse
import glob
import json
import os
import sys


def read_history(paths):
    """({(run, pub, seq): confirm time}, {(run, pub, seq): first delivery time})."""
    confirmed, delivered = {}, {}
    files = []
    for p in paths:
        files.extend(sorted(glob.glob(os.path.join(p, '**', 'ops-*.jsonl'), recursive=True))
                     if os.path.isdir(p) else [p])
    if not files:
        raise ValueError('no ops-*.jsonl under %s' % ', '.join(paths))
    for path in files:
        with open(path, encoding='utf-8') as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a torn last line of a killed process
                key = (rec.get('run'), rec.get('pub'), rec.get('seq'))
                if rec.get('t') == 'pub' and rec.get('outcome') == 'confirmed':
                    confirmed[key] = float(rec['confirmed'])
                elif rec.get('t') == 'del' and not rec.get('foreign'):
                    when = float(rec['delivered'])
                    delivered[key] = min(when, delivered.get(key, when))
    return confirmed, delivered


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def analyse(confirmed, delivered):
    lags = sorted(delivered[k] - t for k, t in confirmed.items() if k in delivered)
    missing = sorted(t for k, t in confirmed.items() if k not in delivered)
    last_confirm = max(confirmed.values()) if confirmed else None
    return {
        'confirmed': len(confirmed),
        'on_standby': len(confirmed) - len(missing),
        'missing': len(missing),
        'lag_seconds': {
            'p50': percentile(lags, 50), 'p99': percentile(lags, 99),
            'max': lags[-1] if lags else None, 'count': len(lags),
        },
        'rpo': {
            'last_confirm': last_confirm,
            'first_missing_confirm': missing[0] if missing else None,
            'window_seconds': (last_confirm - missing[0]) if missing else 0.0,
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('paths', nargs='+')
    parser.add_argument('--json', metavar='OUT')
    args = parser.parse_args(argv)
    try:
        result = analyse(*read_history(args.paths))
    except (OSError, ValueError, KeyError) as e:
        print('standby_rpo: %s' % e, file=sys.stderr)
        return 2
    lag, rpo = result['lag_seconds'], result['rpo']
    print('confirmed by main %d, on the standby %d, missing %d'
          % (result['confirmed'], result['on_standby'], result['missing']))
    if lag['count']:
        print('lag confirm -> standby delivery: p50 %.3f s, p99 %.3f s, max %.3f s (%d messages)'
              % (lag['p50'], lag['p99'], lag['max'], lag['count']))
    print('RPO window: %.3f s of confirmed messages missing on the standby' % rpo['window_seconds'])
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2, sort_keys=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
