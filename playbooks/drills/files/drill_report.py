#!/usr/bin/env python3
"""Report of one warren drill: report.json, report.md and timeline.png.

    python3 drill_report.py REPORT_DIR
    python3 drill_report.py --summary REPORTS_ROOT   # REPORTS_ROOT/summary.md over every report

REPORT_DIR/raw holds what the drill playbook collected:

  drill.json                  the drill's own record (plan, settings, timestamps, targets)
  out/ops-*.jsonl             the workload history (warren_amqp.traffic, record_ops)
  out/checker.json            the warren_amqp.checker verdict
  out/summary.json            the traffic engine's summary (failovers, blocked events)
  out/samples.jsonl           node states and queue leader, once a second (drill_sampler.py)
  prom_alerts.json            Prometheus query_range of ALERTS
  prom_alerts_for_state.json  Prometheus query_range of ALERTS_FOR_STATE (activeAt)
  am_alerts.json              Alertmanager /api/v2/alerts at the end
  webhook.json                the lab webhook receiver's notifications

Every time in the report is in seconds from the fault start (t = 0), except the UTC
timestamps in report.json's "times". Prints a short summary.
"""

import glob
import json
import math
import os
import sys
import time

# Below this share of the target rate, a second counts as degraded.
DEGRADED_SHARE = 0.5
# Alerts that became active this long before the fault start still count as the drill's.
ALERT_SLACK_S = 5.0


def load_json(path, default=None):
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def load_jsonl(paths):
    out = []
    for path in paths:
        with open(path, encoding='utf-8') as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a torn last line of a killed writer
    return out


def per_second(times, start, end):
    """Counts per whole second in [start, end): {second index: count}."""
    bins = {}
    for t in times:
        if t is None or t < start or t >= end:
            continue
        k = int(math.floor(t - start))
        bins[k] = bins.get(k, 0) + 1
    return [bins.get(i, 0) for i in range(int(math.ceil(end - start)))]


def workload_series(ops, t0, start, end):
    """Per-second confirm and delivery rates and confirm latency (ms, from intended) percentiles."""
    pubs = [o for o in ops if o.get('t') == 'pub']
    dels = [o for o in ops if o.get('t') == 'del' and not o.get('foreign')]
    confirms = [o['confirmed'] for o in pubs if o.get('outcome') == 'confirmed' and o.get('confirmed')]
    n = int(math.ceil(end - start))
    lat = [[] for _ in range(n)]
    for o in pubs:
        if o.get('outcome') == 'confirmed' and o.get('confirmed') and o.get('intended') is not None:
            k = int(math.floor(o['confirmed'] - start))
            if 0 <= k < n:
                lat[k].append((o['confirmed'] - o['intended']) * 1000.0)

    def pct(values, q):
        if not values:
            return None
        values = sorted(values)
        return values[min(len(values) - 1, int(math.ceil(q / 100.0 * len(values))) - 1)]

    return {
        't': [round(start + i - t0, 3) for i in range(n)],
        'confirmed': per_second(confirms, start, end),
        'delivered': per_second([d.get('delivered') for d in dels], start, end),
        'latency_p50_ms': [pct(v, 50) for v in lat],
        'latency_p99_ms': [pct(v, 99) for v in lat],
        'latency_max_ms': [max(v) if v else None for v in lat],
    }


def workload_recovery(series, rate, t_stop):
    """Seconds from the fault start to the end of the last degraded second (confirms below
    DEGRADED_SHARE of the target rate) between the fault start and the workload stop (t_stop,
    relative); 0 when no second was degraded."""
    last_bad = None
    for t, count in zip(series['t'], series['confirmed']):
        if 0 <= t < t_stop - 1 and count < DEGRADED_SHARE * rate:
            last_bad = t
    return 0.0 if last_bad is None else round(last_bad + 1.0, 1)


def node_timeline(samples, t0):
    """{node: [[t_from, t_to, state], ...]} merged runs of equal states; leader changes."""
    runs, leaders = {}, []
    for s in sorted(samples, key=lambda s: s.get('ts', 0)):
        t = round(s['ts'] - t0, 2)
        if 'leader' in s:
            if not leaders or leaders[-1][1] != s['leader']:
                leaders.append([t, s['leader']])
            continue
        node_runs = runs.setdefault(s['node'], [])
        if node_runs and node_runs[-1][2] == s['state']:
            node_runs[-1][1] = t
        else:
            if node_runs:
                node_runs[-1][1] = t
            node_runs.append([t, t, s['state']])
    return runs, leaders


def nodes_back(runs, t_after):
    """First time after t_after from which every node stays 'running' (None if never)."""
    back = t_after
    for node_runs in runs.values():
        bad = [r for r in node_runs if r[2] != 'running' and r[1] >= t_after]
        if bad:
            if node_runs[-1][2] != 'running':
                return None
            back = max(back, bad[-1][1])
    return round(back, 1)


def prom_matrix(doc):
    if not isinstance(doc, dict) or doc.get('status') != 'success':
        return []
    return doc.get('data', {}).get('result', [])


def alert_key(labels):
    who = labels.get('rabbitmq_node') or labels.get('host') or labels.get('instance') or ''
    extra = labels.get('queue', '')
    return '%s %s%s' % (labels.get('alertname', '?'), who, (' ' + extra) if extra else '')


def alerts_seen(prom_alerts, prom_for_state, webhook, am_alerts, t0, ignored):
    """Per alert: active (pending) at, firing from/to, notified at, resolved notification at."""
    seen = {}

    def entry(labels):
        key = alert_key(labels)
        return seen.setdefault(key, {'alert': labels.get('alertname'), 'key': key,
                                     'severity': labels.get('severity'), 'labels': labels,
                                     'active_at': None, 'firing_from': None, 'firing_to': None,
                                     'notified_at': None, 'resolved_notified_at': None,
                                     'still_active_at_end': False})

    for series in prom_matrix(prom_for_state):
        labels = series.get('metric', {})
        if labels.get('alertname') in ignored:
            continue
        actives = [float(v[1]) for v in series.get('values', [])]
        actives = [a for a in actives if a >= t0 - ALERT_SLACK_S]
        if actives:
            e = entry(labels)
            first = round(min(actives) - t0, 1)
            e['active_at'] = first if e['active_at'] is None else min(e['active_at'], first)
    for series in prom_matrix(prom_alerts):
        labels = dict(series.get('metric', {}))
        if labels.get('alertname') in ignored or labels.pop('alertstate', None) != 'firing':
            continue
        times = [float(v[0]) for v in series.get('values', []) if float(v[0]) >= t0 - ALERT_SLACK_S]
        if times:
            e = entry(labels)
            e['firing_from'] = round(min(times) - t0, 1)
            e['firing_to'] = round(max(times) - t0, 1)
    for note in webhook or []:
        received = note.get('received_at')
        payload = note.get('payload') or {}
        if received is None or received < t0 - ALERT_SLACK_S:
            continue
        for alert in payload.get('alerts') or []:
            labels = alert.get('labels') or {}
            if labels.get('alertname') in ignored:
                continue
            e = entry(labels)
            rel = round(received - t0, 1)
            if alert.get('status') == 'firing' and e['notified_at'] is None:
                e['notified_at'] = rel
            elif alert.get('status') == 'resolved' and e['resolved_notified_at'] is None:
                e['resolved_notified_at'] = rel
    for alert in am_alerts or []:
        labels = alert.get('labels') or {}
        key = alert_key(labels)
        if key in seen and (alert.get('status') or {}).get('state') == 'active':
            seen[key]['still_active_at_end'] = True
    return sorted(seen.values(), key=lambda e: min(x for x in (e['active_at'], e['firing_from'], e['notified_at'], 1e9)
                                                   if x is not None))


def first_of(alerts, field):
    values = [a[field] for a in alerts if a.get(field) is not None and a[field] >= -ALERT_SLACK_S]
    return min(values) if values else None


def build(report_dir):
    raw = os.path.join(report_dir, 'raw')
    drill = load_json(os.path.join(raw, 'drill.json'), {})
    times = drill.get('times', {})
    t0 = float(times.get('fault_start') or time.time())
    out = os.path.join(raw, 'out')
    ops = load_jsonl(sorted(glob.glob(os.path.join(out, '**', 'ops-*.jsonl'), recursive=True)))
    checker = load_json(os.path.join(out, 'checker.json'), {})
    summary = load_json(os.path.join(out, 'summary.json'), {})
    samples = load_jsonl(sorted(glob.glob(os.path.join(out, '**', 'samples.jsonl'), recursive=True)))
    ignored = set(drill.get('ignored_alerts') or [])
    alerts = alerts_seen(load_json(os.path.join(raw, 'prom_alerts.json')),
                         load_json(os.path.join(raw, 'prom_alerts_for_state.json')),
                         load_json(os.path.join(raw, 'webhook.json'), []),
                         load_json(os.path.join(raw, 'am_alerts.json'), []), t0, ignored)

    start = float(times.get('workload_start') or t0 - 15)
    end = float(times.get('workload_stop') or t0 + 60) + 5
    series = workload_series(ops, t0, start, end)
    rate = float(drill.get('settings', {}).get('rate') or 0)
    runs, leaders = node_timeline(samples, t0)
    healed = float(times.get('healed') or t0) - t0
    # The workload ends at its last scheduled publish: the seconds in which the publishers wind
    # down after SIGTERM are not a degraded workload (the controller's stop time comes later).
    last_intended = max((float(o['intended']) for o in ops if o.get('t') == 'pub' and o.get('intended') is not None),
                        default=None)
    t_stop = end - 5 - t0 if last_intended is None else min(end - 5 - t0, last_intended - t0)
    wl_back = workload_recovery(series, rate, t_stop) if rate else None
    nb = nodes_back(runs, 0.0) if runs else None
    recovered_api = (float(times['recovered']) - t0) if times.get('recovered') else None
    candidates = [x for x in (wl_back, nb) if x is not None]
    time_to_recover = round(max(candidates), 1) if candidates and nb is not None else None

    counts = checker.get('counts', {})
    unavail = checker.get('unavailability', {})
    worst = (unavail.get('confirm_worst_publisher') or {}).get('longest_s')
    goal = drill.get('goal_seconds')
    goal = float(goal) if goal not in (None, '', 'None') else None
    notify_goal = float(drill.get('notify_goal_seconds') or 90)
    detect = first_of(alerts, 'active_at')
    fire = first_of(alerts, 'firing_from')
    notify = first_of(alerts, 'notified_at')
    failovers = [round(e['at'] - t0, 2) for e in summary.get('failovers', []) if 'at' in e]
    blocked = [[round(e['at'] - t0, 2), e['t']] for e in summary.get('blocked_events', []) if 'at' in e]

    # PASS needs the checker's PASS and a cluster that recovered by itself: a drill whose
    # cluster stayed red after the heal failed, whatever the message history says.
    verdict = checker.get('verdict', 'NO HISTORY')
    recovery_ok = str(drill.get('recovery_ok')).lower() == 'true'
    verdict_reasons = []
    if not recovery_ok:
        verdict_reasons.append('the cluster did not recover by itself within the recovery timeout (%s)'
                               % ('; '.join(drill.get('recovery_failing') or []) or 'cluster_health not green'))
        if verdict == 'PASS':
            verdict = 'FAIL'
    # A cluster left split (some broker's own view lists a partition or misses a node after the
    # window in which net_ticktime could still fire) did not recover, even if cluster_health was
    # green for a moment right after the heal.
    pc = partition_check(drill.get('partition_check'), t0)
    if pc is not None and not pc['ok']:
        verdict_reasons.append('leftover partition after the heal: %s' % '; '.join(pc['failing']))
        verdict = 'FAIL' if verdict == 'PASS' else verdict
        time_to_recover = None

    report = {
        'format': 'warren-drill-report/1',
        'drill': drill.get('drill'), 'run_id': drill.get('run_id'), 'cluster': drill.get('cluster'),
        'summary': drill.get('summary'), 'fault': drill.get('fault'), 'expected': drill.get('expected'),
        'recovers': drill.get('recovers'), 'targets': drill.get('targets'),
        'leader_before': drill.get('leader_before'), 'settings': drill.get('settings'),
        'times_utc': {k: (time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(float(v))) if v else None)
                      for k, v in times.items()},
        'times_from_fault_s': {k: (round(float(v) - t0, 1) if v else None) for k, v in times.items()},
        'verdict': verdict,
        'verdict_reasons': verdict_reasons,
        'checker_verdict': checker.get('verdict', 'NO HISTORY'),
        'checker_checks': checker.get('checks', []),
        'counts': {k: counts.get(k) for k in ('published', 'confirmed', 'lost', 'unexpected', 'duplicates',
                                              'indeterminate', 'recovered', 'unsent', 'nacked', 'foreign')
                   if k in counts},
        'unavailability_s': {
            'publish_worst_client': worst,
            'publish_any_client': (unavail.get('confirm') or {}).get('longest_s'),
            'delivery': (unavail.get('delivery') or {}).get('longest_s'),
        },
        'latency_ms': checker.get('latency_ms', {}),
        'confirms_by_node': checker.get('confirms_by_node', {}),
        'time_to_detect_s': detect,
        'time_to_fire_s': fire,
        'time_to_notify_s': notify,
        'time_to_recover_s': time_to_recover,
        'recovery': {'nodes_all_running_s': nb, 'workload_steady_s': wl_back,
                     'cluster_health_green_s': round(recovered_api, 1) if recovered_api is not None else None,
                     'healed_s': round(healed, 1)},
        'goals': {
            'publish_unavailability_s': goal,
            'publish_unavailability_met': (worst is not None and worst <= goal) if goal is not None else None,
            'notify_s': notify_goal,
            'notify_met': (notify is not None and notify <= notify_goal),
            'lost_zero': counts.get('lost') == 0,
        },
        'alerts': alerts,
        'failovers_s': failovers,
        'blocked_events_s': blocked,
        'leaders': leaders,
        'node_states': runs,
        'series': series,
        'recovery_ok': drill.get('recovery_ok'), 'recovery_failing': drill.get('recovery_failing'),
        'settle_error': drill.get('settle_error'),
        'partition_check': pc,
        'heal_output': drill.get('heal_output'),
        'command': drill.get('command'),
    }
    return report


def partition_check(check, t0):
    """The leftover-partition check (tasks/partition_check.yml): when, and each broker's view."""
    if not isinstance(check, dict):
        return None
    ok = str(check.get('ok')).lower() == 'true'
    at = check.get('checked_at')
    return {'ok': ok, 'checked_s': round(float(at) - t0, 1) if at else None,
            'failing': check.get('failing') or [], 'views': check.get('views') or {}}


def partition_check_lines(pc):
    if pc is None:
        return []
    if pc['ok']:
        return ['Leftover-partition check (every broker asked for its own view, at %s): none, every broker '
                'sees all nodes running and no partition.' % fmt(pc['checked_s']), '']
    return ['**Leftover partition** (every broker asked for its own view, at %s): %s. Clear it with '
            'docs/runbooks/RabbitMQDistributionLinksMissing.md, step 3.' % (fmt(pc['checked_s']), '; '.join(pc['failing'])), '']


def fmt(value, unit='s'):
    if value is None:
        return '-'
    if isinstance(value, float):
        return '%.1f %s' % (value, unit) if unit else '%.1f' % value
    return '%s %s' % (value, unit) if unit else str(value)


def markdown(r):
    s = r['settings'] or {}
    c = r['counts']
    u = r['unavailability_s']
    g = r['goals']
    lines = [
        '# Drill %s: %s' % (r['drill'], r['run_id']), '',
        '%s. Cluster `%s`, target(s) %s (leader of the workload queue before the fault: %s).' % (
            r['summary'], r['cluster'], ', '.join(r['targets'] or []), r['leader_before']), '',
        '## What was done', '',
        '- Fault: %s, held %s s (self-heal timer on the node after %s s at most).' % (
            r['fault'], s.get('fault_seconds'), s.get('self_heal_seconds')),
        '- Workload: %s msg/s, %s publishers with confirms (deadline %s s, heartbeat %s s, every broker listed), '
        'manual-ack consumers%s.' % (s.get('rate'), s.get('publishers'), s.get('confirm_deadline_seconds'),
                                     s.get('heartbeat_seconds'),
                                     (', capped at %s msg/s each' % s['consumer_rate']) if s.get('consumer_rate') else ''),
        '- Expected: %s' % r['expected'],
        '- Command: `%s`; undo any fault by hand: `ansible-playbook playbooks/drills/heal.yml`.' % r['command'], '',
        '## Verdict: %s' % r['verdict'], '',
    ] + (['Why: %s (the message checker alone said %s).' % ('; '.join(r['verdict_reasons']), r['checker_verdict']), '']
         if r.get('verdict_reasons') else []) + [
        '| lost | unexpected | duplicates | indeterminate | confirmed | longest publish unavailability (worst client / any client) | longest delivery gap |',
        '|---|---|---|---|---|---|---|',
        '| %s | %s | %s | %s | %s | %s / %s | %s |' % (
            c.get('lost'), c.get('unexpected'), c.get('duplicates'), c.get('indeterminate'), c.get('confirmed'),
            fmt(u['publish_worst_client']), fmt(u['publish_any_client']), fmt(u['delivery'])), '',
        '| time to detect (pending) | time to fire | time to notify | time to recover |',
        '|---|---|---|---|',
        '| %s | %s | %s | %s |' % (fmt(r['time_to_detect_s']), fmt(r['time_to_fire_s']),
                                  fmt(r['time_to_notify_s']), fmt(r['time_to_recover_s'])), '',
        'Times are from the fault start. Time to recover: every node running again (sampler) and the '
        'workload back above %d%% of its rate, whichever is later.' % int(DEGRADED_SHARE * 100), '',
    ] + partition_check_lines(r.get('partition_check'))
    goal_lines = []
    if g['publish_unavailability_s'] is not None:
        goal_lines.append('- publish unavailability <= %g s: %s (%s)' % (
            g['publish_unavailability_s'], 'met' if g['publish_unavailability_met'] else 'NOT met',
            fmt(u['publish_worst_client'])))
    goal_lines.append('- notified within %g s: %s (%s)' % (g['notify_s'], 'met' if g['notify_met'] else 'NOT met',
                                                          fmt(r['time_to_notify_s'])))
    goal_lines.append('- 0 confirmed messages lost: %s' % ('met' if g['lost_zero'] else 'NOT met'))
    lines += ['## Goals', ''] + goal_lines + ['']
    lines += ['## Timeline (seconds from the fault start)', '', '| t | event |', '|---|---|']
    events = []
    for k, v in (r['times_from_fault_s'] or {}).items():
        if v is not None:
            events.append((v, k.replace('_', ' ')))
    for t, who in r['leaders']:
        events.append((t, 'queue leader: %s' % who))
    for a in r['alerts']:
        for field, what in (('active_at', 'pending'), ('firing_from', 'firing'), ('notified_at', 'notified'),
                            ('firing_to', 'last seen firing'), ('resolved_notified_at', 'resolved, notified')):
            if a.get(field) is not None:
                events.append((a[field], 'alert %s: %s' % (a['key'], what)))
    for node, node_runs in sorted((r['node_states'] or {}).items()):
        for t_from, _t_to, state in node_runs:
            events.append((t_from, '%s: %s' % (node, state)))
    if r['failovers_s']:
        events.append((r['failovers_s'][0], 'first client failover (%d in all)' % len(r['failovers_s'])))
    for t, what in r['blocked_events_s'][:6]:
        events.append((t, 'connection %s by the broker' % what))
    for t, what in sorted(events, key=lambda e: e[0]):
        lines.append('| %+.1f | %s |' % (t, what))
    lines += ['', '## What recovered the system', '', r['recovers'] or '-', '']
    if r['alerts']:
        lines += ['## Alerts', '', '| alert | severity | pending | firing | notified | resolved (notified) | active at end |',
                  '|---|---|---|---|---|---|---|']
        for a in r['alerts']:
            lines.append('| %s | %s | %s | %s | %s | %s | %s |' % (
                a['key'], a['severity'], fmt(a['active_at']), fmt(a['firing_from']), fmt(a['notified_at']),
                fmt(a['resolved_notified_at']), 'yes' if a['still_active_at_end'] else 'no'))
        lines.append('')
    else:
        lines += ['## Alerts', '', 'No alert fired (pending or firing) during the drill.', '']
    if not r['recovery_ok'] or r['settle_error']:
        lines += ['## Problems', '', '- recovery: %s' % ('; '.join(r['recovery_failing'] or []) or 'ok'),
                  '- settle: %s' % (r['settle_error'] or 'ok'), '']
    lines += ['Heal output: %s' % '; '.join(r['heal_output'] or ['-']), '',
              '![timeline](timeline.png)', '']
    return '\n'.join(lines)


STATE_COLOURS = {'running': '#4caf50', 'alarm': '#ff9800', 'partitioned': '#9c27b0',
                 'down': '#f44336', 'unresponsive': '#795548', 'error': '#9e9e9e'}


def plot(r, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    s = r['series']
    t0_rel = r['times_from_fault_s'] or {}
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 7), sharex=True,
                                        gridspec_kw={'height_ratios': [3, 2, 1.4]})
    ax1.step(s['t'], s['confirmed'], where='post', label='confirmed/s', color='#1f77b4')
    ax1.step(s['t'], s['delivered'], where='post', label='delivered/s', color='#2ca02c', alpha=0.6)
    ax1.set_ylabel('msg/s')
    ax1.set_title('drill %s  %s  (verdict %s)' % (r['drill'], r['run_id'], r['verdict']), fontsize=10)

    def clean(xs, ys):
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and y > 0]
        return [p[0] for p in pts], [p[1] for p in pts]

    for key, colour, label in (('latency_p50_ms', '#1f77b4', 'p50'), ('latency_p99_ms', '#ff7f0e', 'p99'),
                               ('latency_max_ms', '#d62728', 'max')):
        xs, ys = clean(s['t'], s[key])
        if xs:
            ax2.plot(xs, ys, '.', ms=3, color=colour, label=label)
    ax2.set_yscale('log')
    ax2.set_ylabel('confirm latency\nfrom intended, ms')

    nodes = sorted(r['node_states'] or {})
    for i, node in enumerate(nodes):
        for t_from, t_to, state in r['node_states'][node]:
            ax3.barh(i, max(t_to - t_from, 0.8), left=t_from, height=0.6,
                     color=STATE_COLOURS.get(state, '#9e9e9e'), edgecolor='none')
    for t, leader in r['leaders']:
        if leader in nodes:
            ax3.plot([t], [nodes.index(leader)], marker='*', color='black', ms=7)
    ax3.set_yticks(range(len(nodes)))
    ax3.set_yticklabels(nodes, fontsize=8)
    ax3.set_xlabel('seconds from the fault start (states: green running, purple partitioned, brown unresponsive, '
                   'red down, orange alarm; * queue leader)', fontsize=8)

    fault_end = t0_rel.get('healed') or t0_rel.get('heal_start') or 0
    for ax in (ax1, ax2, ax3):
        ax.axvspan(0, max(fault_end, 0.5), color='#f44336', alpha=0.12, lw=0)
    for a in r['alerts']:
        for field, colour, style in (('active_at', '#ff9800', ':'), ('firing_from', '#d62728', '-'),
                                     ('notified_at', '#9c27b0', '--'), ('resolved_notified_at', '#2ca02c', '--')):
            if a.get(field) is not None:
                ax1.axvline(a[field], color=colour, ls=style, lw=1)
                ax1.annotate(a['alert'], (a[field], ax1.get_ylim()[1]), fontsize=6, rotation=90,
                             va='top', ha='right', color=colour)
    ax1.plot([], [], color='#ff9800', ls=':', label='alert pending')
    ax1.plot([], [], color='#d62728', ls='-', label='alert firing')
    ax1.plot([], [], color='#9c27b0', ls='--', label='notified')
    ax1.legend(loc='lower left', fontsize=7, ncol=3)
    if ax2.lines:
        ax2.legend(loc='upper left', fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _worst(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def summarise(reports):
    """One row per drill over its runs: sums of the counts, the worst of the timings."""
    rows = {}
    for r in reports:
        rows.setdefault(r['drill'], []).append(r)
    out = []
    for drill, runs in sorted(rows.items()):
        counts = [r.get('counts') or {} for r in runs]
        goal = runs[-1].get('goals', {}).get('publish_unavailability_s')
        out.append({
            'drill': drill, 'runs': len(runs),
            'pass': sum(1 for r in runs if r.get('verdict') == 'PASS'),
            'lost': sum(c.get('lost') or 0 for c in counts),
            'unexpected': sum(c.get('unexpected') or 0 for c in counts),
            'duplicates': sum(c.get('duplicates') or 0 for c in counts),
            'confirmed': sum(c.get('confirmed') or 0 for c in counts),
            'unavailability_s': _worst(r['unavailability_s'].get('publish_worst_client') for r in runs),
            'detect_s': _worst(r.get('time_to_detect_s') for r in runs),
            'notify_s': _worst(r.get('time_to_notify_s') for r in runs),
            'notified_runs': sum(1 for r in runs if r.get('time_to_notify_s') is not None),
            'recover_s': _worst(r.get('time_to_recover_s') for r in runs),
            'not_recovered_runs': sum(1 for r in runs if r.get('time_to_recover_s') is None),
            'fault_s': sorted({(r.get('settings') or {}).get('fault_seconds') for r in runs} - {None}),
            'goal_s': goal,
        })
    return out


def summary_markdown(rows, reports):
    lines = ['# Drill results', '',
             'Worst of all runs per drill (sums for the counts). Times in seconds from the fault start; '
             '"unavailability" is the longest time without a confirm for the worst publisher.', '',
             '| drill | runs (PASS) | fault held | lost | unexpected | duplicates | confirmed | longest unavailability '
             '| goal | time to detect | time to notify (runs notified) | time to recover |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for w in rows:
        lines.append('| %s | %d (%d) | %s | %d | %d | %d | %d | %s | %s | %s | %s (%d) | %s |' % (
            w['drill'], w['runs'], w['pass'], '/'.join('%s s' % f for f in w['fault_s']) or '-', w['lost'],
            w['unexpected'], w['duplicates'], w['confirmed'], fmt(w['unavailability_s']),
            ('<= %g s' % w['goal_s']) if w['goal_s'] is not None else '-', fmt(w['detect_s']),
            fmt(w['notify_s']), w['notified_runs'],
            ('never in %d of %d runs' % (w['not_recovered_runs'], w['runs'])) if w.get('not_recovered_runs')
            else fmt(w['recover_s'])))
    lines += ['', '## Every run', '', '| run | verdict | lost | unavailability | detect | notify | recover |',
              '|---|---|---|---|---|---|---|']
    for r in sorted(reports, key=lambda r: r.get('run_id') or ''):
        lines.append('| [%s](%s/report.md) | %s | %s | %s | %s | %s | %s |' % (
            r['run_id'], r['run_id'], r['verdict'], (r.get('counts') or {}).get('lost'),
            fmt(r['unavailability_s'].get('publish_worst_client')), fmt(r.get('time_to_detect_s')),
            fmt(r.get('time_to_notify_s')), fmt(r.get('time_to_recover_s'))))
    return '\n'.join(lines) + '\n'


def summary_main(root):
    reports = []
    for path in sorted(glob.glob(os.path.join(root, '*', 'report.json'))):
        doc = load_json(path)
        if isinstance(doc, dict) and doc.get('format') == 'warren-drill-report/1':
            reports.append(doc)
    rows = summarise(reports)
    with open(os.path.join(root, 'summary.md'), 'w', encoding='utf-8') as handle:
        handle.write(summary_markdown(rows, reports))
    for w in rows:
        print('%-14s runs %d (PASS %d)  lost %d  unexpected %d  worst unavailability %s  notify %s  recover %s' % (
            w['drill'], w['runs'], w['pass'], w['lost'], w['unexpected'], fmt(w['unavailability_s']),
            fmt(w['notify_s']), fmt(w['recover_s'])))
    print('summary %s (%d reports)' % (os.path.join(root, 'summary.md'), len(reports)))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == '--summary':
        return summary_main(argv[1])
    if len(argv) != 1:
        print('usage: drill_report.py REPORT_DIR | drill_report.py --summary REPORTS_ROOT', file=sys.stderr)
        return 2
    report_dir = argv[0]
    r = build(report_dir)
    with open(os.path.join(report_dir, 'report.json'), 'w', encoding='utf-8') as handle:
        json.dump(r, handle, indent=1, sort_keys=True)
        handle.write('\n')
    with open(os.path.join(report_dir, 'report.md'), 'w', encoding='utf-8') as handle:
        handle.write(markdown(r))
    plot(r, os.path.join(report_dir, 'timeline.png'))
    c, u = r['counts'], r['unavailability_s']
    print('drill %s: verdict %s; lost %s, unexpected %s, duplicates %s, indeterminate %s' % (
        r['drill'], r['verdict'], c.get('lost'), c.get('unexpected'), c.get('duplicates'), c.get('indeterminate')))
    print('longest publish unavailability %s (worst client), %s (any client); delivery gap %s' % (
        fmt(u['publish_worst_client']), fmt(u['publish_any_client']), fmt(u['delivery'])))
    print('time to detect %s, to fire %s, to notify %s, to recover %s (from the fault start)' % (
        fmt(r['time_to_detect_s']), fmt(r['time_to_fire_s']), fmt(r['time_to_notify_s']), fmt(r['time_to_recover_s'])))
    print('report %s' % os.path.join(report_dir, 'report.md'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
