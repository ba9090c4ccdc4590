"""Jepsen-style total-queue checker for warren's workload histories.

Usage::

    python3 -m warren_amqp.checker DIR_OR_FILE... [--json OUT] [--expect 'PATH OP NUMBER']...

It reads every ``ops-*.jsonl`` (full history, written when the engine runs with
``record_ops: true``) and ``seqs-*.json`` (compact per-sequence accounting, written when
``record_ops`` is false) found in the given directories (recursively) or named directly, and
judges the whole history with total-queue semantics:

* **lost**: confirmed by the broker, never consumed. Must be 0.
* **unexpected**: consumed, never published by this history (a run id the history knows, but a
  publisher or sequence number it never sent). Must be 0.
* **duplicates**: deliveries beyond the first of a message. Delivery is at-least-once, and a
  publisher that fails over republishes what was not confirmed, so they are reported, not
  failed.
* **indeterminate**: sent but never confirmed (deadline passed, connection lost, or nacked).
  They may or may not arrive; those that arrived are counted as ``recovered``.
* **unsent**: due by the open-loop schedule but never sent (the publisher was stalled: window
  full, no connection). Not attempted, so they must never be consumed either.
* **foreign**: deliveries of messages from another run (or without warren headers): a queue that
  was not empty when the run started. Reported, not failed (add an expectation to fail on them).
* **unavailability** (full histories only), inside the workload window (first to last intended
  send time): the longest time without any successful confirm, the same per publisher (the
  worst client's view), and the longest time without a delivery.
* **latency** (full histories only): confirm latency from the *intended* send time (open loop:
  a stalled client cannot hide its stall) and from the actual first send; end-to-end latency
  from the intended send time to the first delivery. Exact percentiles from the raw records.

Verdict: PASS only when lost == 0, unexpected == 0 and every ``--expect`` holds. Expectations
name a number in the result by its dotted path, for example
``--expect 'unavailability.confirm_worst_publisher.longest_s<=5'`` or
``--expect 'counts.indeterminate<=10'``. Exit code: 0 PASS, 1 FAIL, 2 bad input.

Record formats (one JSON object a line in ops-*.jsonl; every time is Unix epoch seconds):

``{"t": "meta", "run": R, "process": P, "publish_start": T, "publish_end": T}``
    the workload window of one process (optional; else taken from the intended times).
``{"t": "pub", "run": R, "pub": ID, "seq": N, "queue": Q, "intended": T, "sent": T|null,
"confirmed": T|null, "outcome": "confirmed"|"nacked"|"indeterminate"|"unsent", "node": "host:port",
"attempts": N}``
    one line per message, written when its fate is final. ``sent`` is the first send.
``{"t": "del", "run": R, "pub": ID, "seq": N, "queue": Q, "delivered": T, "node": "host:port",
"redelivered": bool, "consumer": ID, "intended": T}``
    one line per delivery; ``"foreign": true`` (and no pub/seq) for a message of another run.

seqs-*.json (compact, same counting, no timings)::

    {"format": "warren-seqs/1", "publishers": [{"run": R, "pub": ID, "outcomes": RLE}],
     "deliveries": [{"run": R, "pub": ID, "counts": RLE}], "foreign": N, "unexpected": N}

where RLE is a list of ``[value, run_length]`` pairs covering sequence numbers from 0 up.
Outcome values: 0 not published, 1 confirmed, 2 nacked, 3 indeterminate, 4 unsent.
"""

import argparse
import glob
import json
import math
import operator
import os
import re
import sys

NONE, CONFIRMED, NACKED, INDETERMINATE, UNSENT = 0, 1, 2, 3, 4
OUTCOME_CODES = {'confirmed': CONFIRMED, 'nacked': NACKED, 'indeterminate': INDETERMINATE,
                 'unsent': UNSENT}
OUTCOME_NAMES = {v: k for k, v in OUTCOME_CODES.items()}
# Guard against a corrupt sequence number allocating gigabytes.
MAX_SEQ = 50_000_000
SAMPLE = 20
PERCENTILES = (50, 90, 99, 99.9, 100)


class HistoryError(Exception):
    """The input cannot be judged (no files, unreadable or malformed records)."""


def rle_encode(values):
    """[value, count] pairs for a sequence of small ints (bytearray, list)."""
    out = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def rle_decode(pairs):
    out = bytearray()
    for value, count in pairs:
        out.extend(bytes([min(int(value), 255)]) * int(count))
    return out


def _grow(arr, seq):
    if len(arr) <= seq:
        arr.extend(bytes(seq + 1 - len(arr)))


def percentiles(values, points=PERCENTILES):
    """Exact nearest-rank percentiles of a list of numbers; None values when it is empty."""
    data = sorted(values)
    out = {'count': len(data)}
    for p in points:
        key = 'max' if p == 100 else 'p%s' % (('%g' % p).replace('.', '_'))
        if not data:
            out[key] = None
            continue
        rank = max(1, math.ceil(round(p * len(data) / 100.0, 9)))
        out[key] = data[rank - 1]
    return out


def longest_gap(times, start, end):
    """Longest interval inside [start, end] with no event, and where it is."""
    if start is None or end is None or end < start:
        return {'longest_s': None, 'from': None, 'to': None}
    points = [start] + sorted(t for t in times if start <= t <= end) + [end]
    best = (0.0, start, start)
    for a, b in zip(points, points[1:]):
        if b - a > best[0]:
            best = (b - a, a, b)
    return {'longest_s': round(best[0], 6), 'from': best[1], 'to': best[2]}


class History:
    """Everything the checker knows about one or more runs, fed record by record."""

    def __init__(self):
        self.outcomes = {}      # (run, pub) -> bytearray of outcome codes indexed by seq
        self.deliveries = {}    # (run, pub) -> bytearray of delivery counts (saturating)
        self.unknown = {}       # (run, pub) -> {seq: count} deliveries of never-seen publishers
        self.runs = set()
        self.foreign = 0
        self.unexpected_extra = 0
        self.redelivered = 0
        self.windows = []       # (start, end) from meta records
        self.intended = []      # intended times of every published record (for the window)
        self.confirm_times = []  # (time, pub key)
        self.delivery_times = []
        self.lat_intended = []
        self.lat_sent = []
        self.first_delivery = {}  # (run, pub, seq) -> (delivered, intended in the message)
        self.intended_of = {}     # (run, pub, seq) -> intended, from the publish record
        self.timed = False
        self.files = []
        self.torn_lines = 0
        self.nodes = {}

    # -- feeding ------------------------------------------------------------------------------
    def add_publish(self, rec):
        key = (str(rec['run']), str(rec['pub']))
        seq = int(rec['seq'])
        if seq < 0 or seq > MAX_SEQ:
            raise HistoryError('publish record with sequence number %r out of range' % seq)
        code = OUTCOME_CODES.get(rec.get('outcome'))
        if code is None:
            raise HistoryError('publish record with unknown outcome %r' % rec.get('outcome'))
        self.runs.add(key[0])
        arr = self.outcomes.setdefault(key, bytearray())
        _grow(arr, seq)
        arr[seq] = code
        intended = rec.get('intended')
        if intended is not None:
            self.timed = True
            self.intended.append(intended)
            self.intended_of[key + (seq,)] = intended
        if code == CONFIRMED and rec.get('confirmed') is not None:
            self.confirm_times.append((rec['confirmed'], key))
            if intended is not None:
                self.lat_intended.append(rec['confirmed'] - intended)
            if rec.get('sent') is not None:
                self.lat_sent.append(rec['confirmed'] - rec['sent'])
            node = rec.get('node')
            if node:
                self.nodes[node] = self.nodes.get(node, 0) + 1

    def add_delivery(self, rec):
        if rec.get('foreign'):
            self.foreign += 1
            return
        key = (str(rec['run']), str(rec['pub']))
        seq = int(rec['seq'])
        if rec.get('redelivered'):
            self.redelivered += 1
        when = rec.get('delivered')
        if when is not None:
            self.timed = True
            self.delivery_times.append(when)
            mkey = key + (seq,)
            if mkey not in self.first_delivery or when < self.first_delivery[mkey][0]:
                self.first_delivery[mkey] = (when, rec.get('intended'))
        self._count_delivery(key, seq, 1)

    def _count_delivery(self, key, seq, n):
        if seq < 0 or seq > MAX_SEQ:
            self.unexpected_extra += n
            return
        arr = self.deliveries.setdefault(key, bytearray())
        _grow(arr, seq)
        arr[seq] = min(255, arr[seq] + n)

    def add_meta(self, rec):
        self.runs.add(str(rec['run']))
        if rec.get('publish_start') is not None and rec.get('publish_end') is not None:
            self.windows.append((rec['publish_start'], rec['publish_end']))

    def add_seqs(self, doc):
        if doc.get('format') != 'warren-seqs/1':
            raise HistoryError('not a warren-seqs/1 document')
        for p in doc.get('publishers', []):
            key = (str(p['run']), str(p['pub']))
            self.runs.add(key[0])
            arr = self.outcomes.setdefault(key, bytearray())
            new = rle_decode(p['outcomes'])
            _grow(arr, len(new) - 1)
            for i, code in enumerate(new):
                if code:
                    arr[i] = code
        for d in doc.get('deliveries', []):
            key = (str(d['run']), str(d['pub']))
            for i, count in enumerate(rle_decode(d['counts'])):
                if count:
                    self._count_delivery(key, i, count)
        self.foreign += int(doc.get('foreign', 0))
        self.unexpected_extra += int(doc.get('unexpected', 0))
        self.redelivered += int(doc.get('redelivered', 0))

    def load_file(self, path):
        self.files.append(path)
        if path.endswith('.json'):
            with open(path, encoding='utf-8') as f:
                try:
                    self.add_seqs(json.load(f))
                except (ValueError, KeyError, TypeError) as e:
                    raise HistoryError('%s: %s' % (path, e)) from e
            return
        torn = None
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, 1):
                if torn is not None:
                    raise torn
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    # A process killed mid-write leaves a torn LAST line: skipped (and counted).
                    # A bad line with more after it is corruption.
                    torn = HistoryError('%s:%d: %s' % (path, lineno, e))
                    continue
                try:
                    kind = rec.get('t')
                    if kind == 'pub':
                        self.add_publish(rec)
                    elif kind == 'del':
                        self.add_delivery(rec)
                    elif kind == 'meta':
                        self.add_meta(rec)
                except (KeyError, TypeError, ValueError) as e:
                    raise HistoryError('%s:%d: missing or bad field %s' % (path, lineno, e)) from e
        if torn is not None:
            self.torn_lines += 1

    # -- judging ------------------------------------------------------------------------------
    def analyse(self):
        counts = dict.fromkeys(('published', 'attempted', 'confirmed', 'nacked', 'indeterminate',
                                'unsent', 'delivered', 'delivered_messages', 'lost',
                                'unexpected', 'duplicates', 'duplicate_messages', 'recovered'),
                               0)
        lost, unexpected = [], []
        foreign = self.foreign
        keys = set(self.outcomes) | set(self.deliveries)
        for key in sorted(keys):
            outs = self.outcomes.get(key, bytearray())
            dels = self.deliveries.get(key, bytearray())
            known_run = key[0] in self.runs
            for seq in range(max(len(outs), len(dels))):
                code = outs[seq] if seq < len(outs) else NONE
                n = dels[seq] if seq < len(dels) else 0
                if code != NONE:
                    counts['published'] += 1
                    counts[OUTCOME_NAMES[code]] += 1
                    if code != UNSENT:
                        counts['attempted'] += 1
                if n:
                    counts['delivered'] += n
                    counts['delivered_messages'] += 1
                    if n > 1:
                        counts['duplicates'] += n - 1
                        counts['duplicate_messages'] += 1
                if code == CONFIRMED and n == 0:
                    counts['lost'] += 1
                    if len(lost) < SAMPLE:
                        lost.append({'run': key[0], 'pub': key[1], 'seq': seq})
                elif n and (code in (NONE, UNSENT)):
                    if not known_run:
                        foreign += n
                        continue
                    counts['unexpected'] += 1
                    if len(unexpected) < SAMPLE:
                        unexpected.append({'run': key[0], 'pub': key[1], 'seq': seq,
                                           'outcome': OUTCOME_NAMES.get(code, 'never published')})
                elif n and code in (NACKED, INDETERMINATE):
                    counts['recovered'] += 1
        counts['unexpected'] += self.unexpected_extra
        counts['foreign'] = foreign
        counts['redelivered_flag'] = self.redelivered

        result = {'counts': counts, 'lost_sample': lost, 'unexpected_sample': unexpected,
                  'runs': sorted(self.runs), 'files': len(self.files),
                  'torn_last_lines': self.torn_lines,
                  'timed': self.timed}
        if self.timed:
            result.update(self._timings())
        return result

    def _timings(self):
        if self.windows:
            start = min(w[0] for w in self.windows)
            end = max(w[1] for w in self.windows)
        elif self.intended:
            start, end = min(self.intended), max(self.intended)
        else:
            start = end = None
        worst = {'longest_s': None, 'from': None, 'to': None, 'publisher': None}
        per_pub = {}
        for t, key in self.confirm_times:
            per_pub.setdefault(key, []).append(t)
        for key in self.outcomes:
            gap = longest_gap(per_pub.get(key, []), start, end)
            if gap['longest_s'] is not None and (worst['longest_s'] is None
                                                 or gap['longest_s'] > worst['longest_s']):
                worst = dict(gap, publisher='%s/%s' % key)
        e2e = []
        for mkey, (when, carried) in self.first_delivery.items():
            intended = self.intended_of.get(mkey, carried)
            if intended is not None:
                e2e.append(when - intended)
        ms = 1000.0
        return {
            'window': {'start': start, 'end': end,
                       'seconds': None if start is None else round(end - start, 3)},
            'unavailability': {
                'confirm': longest_gap([t for t, _ in self.confirm_times], start, end),
                'confirm_worst_publisher': worst,
                'delivery': longest_gap(self.delivery_times, start, end),
            },
            'latency_ms': {
                'confirm_from_intended': _scaled(percentiles(self.lat_intended), ms),
                'confirm_from_sent': _scaled(percentiles(self.lat_sent), ms),
                'end_to_end_from_intended': _scaled(percentiles(e2e), ms),
            },
            'confirms_by_node': dict(sorted(self.nodes.items())),
        }


def _scaled(stats, factor):
    return {k: (v if k == 'count' or v is None else round(v * factor, 3))
            for k, v in stats.items()}


_EXPECT = re.compile(r'^\s*([A-Za-z0-9_.]+)\s*(<=|>=|==|!=|<|>)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$')
_OPS = {'<=': operator.le, '>=': operator.ge, '==': operator.eq, '!=': operator.ne,
        '<': operator.lt, '>': operator.gt}


def parse_expectation(text):
    """'counts.duplicates<=10' -> (path, op, number); ValueError with a clear message."""
    m = _EXPECT.match(text)
    if not m:
        raise ValueError('expectation %r is not PATH OP NUMBER (for example '
                         '"unavailability.confirm.longest_s<=5")' % text)
    return m.group(1), m.group(2), float(m.group(3))


def lookup(result, path):
    node = result
    for part in path.split('.'):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def judge(result, expectations=()):
    """Add the verdict to a result: PASS only with lost == 0, unexpected == 0, expectations met."""
    checks = [
        {'check': 'counts.lost == 0', 'value': result['counts']['lost'],
         'ok': result['counts']['lost'] == 0},
        {'check': 'counts.unexpected == 0', 'value': result['counts']['unexpected'],
         'ok': result['counts']['unexpected'] == 0},
    ]
    for text in expectations:
        path, op, number = parse_expectation(text) if isinstance(text, str) else text
        try:
            value = lookup(result, path)
        except KeyError:
            checks.append({'check': '%s %s %g' % (path, op, number), 'value': None, 'ok': False,
                           'why': 'no such number in the result'})
            continue
        ok = value is not None and _OPS[op](value, number)
        checks.append({'check': '%s %s %g' % (path, op, number), 'value': value, 'ok': ok})
    result['checks'] = checks
    result['verdict'] = 'PASS' if all(c['ok'] for c in checks) else 'FAIL'
    return result


def find_files(paths):
    found = []
    for p in paths:
        if os.path.isdir(p):
            for pattern in ('ops-*.jsonl', 'seqs-*.json'):
                found.extend(glob.glob(os.path.join(p, '**', pattern), recursive=True))
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise HistoryError('%s: no such file or directory' % p)
    if not found:
        raise HistoryError('no ops-*.jsonl or seqs-*.json under %s' % ', '.join(paths))
    return sorted(set(found))


def check(paths, expectations=()):
    """Read every history file under ``paths`` and return the judged result dict."""
    history = History()
    for path in find_files(paths):
        history.load_file(path)
    if not history.outcomes:
        raise HistoryError('no publish records in %s: pass the publishers\' files too'
                           % ', '.join(paths))
    return judge(history.analyse(), expectations)


def _fmt(v, unit=''):
    return '-' if v is None else ('%s%s' % (v, unit))


def render(result):
    c = result['counts']
    lines = [
        'warren history check: %d file(s), run(s) %s' % (result['files'],
                                                       ', '.join(result['runs']) or '-'),
        '  published  %d (attempted %d: confirmed %d, nacked %d, indeterminate %d; unsent %d)'
        % (c['published'], c['attempted'], c['confirmed'], c['nacked'], c['indeterminate'],
           c['unsent']),
        '  delivered  %d deliveries of %d messages; duplicates %d (of %d messages); '
        'recovered %d; foreign %d'
        % (c['delivered'], c['delivered_messages'], c['duplicates'], c['duplicate_messages'],
           c['recovered'], c['foreign']),
        '  LOST       %d   (confirmed, never consumed; must be 0)' % c['lost'],
        '  UNEXPECTED %d   (consumed, never published; must be 0)' % c['unexpected'],
    ]
    for s in result['lost_sample'][:5]:
        lines.append('    lost: %s/%s seq %s' % (s['run'], s['pub'], s['seq']))
    for s in result['unexpected_sample'][:5]:
        lines.append('    unexpected: %s/%s seq %s (%s)' % (s['run'], s['pub'], s['seq'],
                                                         s['outcome']))
    if result.get('timed'):
        u = result['unavailability']
        w = result['window']
        lines.append('  window     %s s' % _fmt(w['seconds']))
        lines.append('  longest without a confirm   %s s (any publisher), %s s (worst publisher '
                     '%s)' % (_fmt(u['confirm']['longest_s']),
                              _fmt(u['confirm_worst_publisher']['longest_s']),
                              _fmt(u['confirm_worst_publisher'].get('publisher'))))
        lines.append('  longest without a delivery  %s s' % _fmt(u['delivery']['longest_s']))
        for name, stats in result['latency_ms'].items():
            lines.append('  %-26s n=%-7d p50 %s  p90 %s  p99 %s  p99.9 %s  max %s ms' % (
                name, stats['count'], _fmt(stats['p50']), _fmt(stats['p90']),
                _fmt(stats['p99']), _fmt(stats['p99_9']), _fmt(stats['max'])))
    for chk in result['checks']:
        lines.append('  [%s] %s (value %s)%s' % ('ok' if chk['ok'] else 'FAILED', chk['check'],
                                                _fmt(chk['value']),
                                                (': ' + chk['why']) if chk.get('why') else ''))
    lines.append('VERDICT: %s' % result['verdict'])
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python3 -m warren_amqp.checker',
        description='Judge a warren workload history (lost/unexpected/duplicates/indeterminate/'
                    'unavailability/latency). Exit 0 PASS, 1 FAIL, 2 bad input.')
    parser.add_argument('paths', nargs='+', metavar='DIR_OR_FILE',
                        help='directories (searched recursively for ops-*.jsonl and '
                             'seqs-*.json) or files')
    parser.add_argument('--json', metavar='OUT', help='write the full result as JSON here')
    parser.add_argument('--expect', action='append', default=[], metavar='PATH OP NUMBER',
                        help="extra condition for PASS, e.g. 'counts.indeterminate<=10' "
                             "(repeatable)")
    parser.add_argument('--quiet', action='store_true', help='print only the verdict line')
    args = parser.parse_args(argv)
    try:
        for text in args.expect:
            parse_expectation(text)
        result = check(args.paths, args.expect)
    except (HistoryError, ValueError, OSError) as e:
        print('checker: %s' % e, file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2, sort_keys=True)
            f.write('\n')
    text = render(result)
    print(text.splitlines()[-1] if args.quiet else text)
    return 0 if result['verdict'] == 'PASS' else 1


if __name__ == '__main__':
    sys.exit(main())
