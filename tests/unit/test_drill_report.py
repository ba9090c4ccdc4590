"""Tests of the drill report generator (playbooks/drills/files/drill_report.py) and the node
sampler's state mapping (playbooks/drills/files/drill_sampler.py) on synthetic drill folders."""

import json
import os

from utils import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = os.path.join(ROOT, 'playbooks', 'drills', 'files')
rep = load_file('drill_report', os.path.join(FILES, 'drill_report.py'))
sampler = load_file('drill_sampler', os.path.join(FILES, 'drill_sampler.py'))

T0 = 1_800_000_000.0  # the fault start


def _write(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as handle:
        if path.endswith('.jsonl'):
            handle.write(''.join(json.dumps(d) + '\n' for d in doc))
        else:
            json.dump(doc, handle)


def _history(rate=20, start=-10, end=30, stall=(0, 4)):
    """20 msg/s from t=-10 to t=30; nothing confirmed between the stall bounds (then confirmed
    late at the stall's end, as a client that failed over and republished)."""
    ops = []
    seq = 0
    for i in range((end - start) * rate):
        intended = T0 + start + i / rate
        confirmed = intended + 0.005
        if stall[0] <= intended - T0 < stall[1]:
            confirmed = T0 + stall[1] + 0.2
        ops.append({'t': 'pub', 'run': 'r', 'pub': 'p0', 'seq': seq, 'intended': intended, 'sent': intended,
                    'confirmed': confirmed, 'outcome': 'confirmed', 'node': 'rmq1:5671'})
        ops.append({'t': 'del', 'run': 'r', 'pub': 'p0', 'seq': seq, 'delivered': confirmed + 0.01,
                    'node': 'rmq2:5671', 'redelivered': False})
        seq += 1
    return ops


def _drill_dir(tmp_path, webhook=None, prom_for_state=None, prom_alerts=None, samples=None, checker=None):
    raw = tmp_path / 'raw'
    _write(str(raw / 'drill.json'), {
        'drill': 'kill', 'run_id': 'kill-x', 'cluster': 'c', 'summary': 'killed', 'fault': 'kill -9',
        'expected': 'e', 'recovers': 'r', 'targets': ['rabbit@rmq1'], 'leader_before': 'rabbit@rmq1',
        'settings': {'rate': 20, 'fault_seconds': 5, 'self_heal_seconds': 65, 'publishers': 1,
                     'confirm_deadline_seconds': 1.0, 'heartbeat_seconds': 10},
        'goal_seconds': 1, 'notify_goal_seconds': 90, 'ignored_alerts': ['Watchdog'],
        'times': {'workload_start': T0 - 10, 'fault_start': T0, 'heal_start': T0 + 5, 'healed': T0 + 6,
                  'recovered': T0 + 12, 'workload_stop': T0 + 30, 'settled': T0 + 40},
        'recovery_ok': True, 'heal_output': ['rmq1: healed: start'], 'command': 'ansible-playbook kill.yml'})
    _write(str(raw / 'out' / 'ops-load1-0.jsonl'), _history())
    _write(str(raw / 'out' / 'checker.json'), checker or {
        'verdict': 'PASS', 'counts': {'confirmed': 800, 'lost': 0, 'unexpected': 0, 'duplicates': 3, 'indeterminate': 0},
        'unavailability': {'confirm': {'longest_s': 4.2}, 'confirm_worst_publisher': {'longest_s': 4.2},
                           'delivery': {'longest_s': 4.3}}})
    _write(str(raw / 'out' / 'samples.jsonl'), samples if samples is not None else [
        {'ts': T0 - 2, 'node': 'rabbit@rmq1', 'state': 'running'},
        {'ts': T0 + 1, 'node': 'rabbit@rmq1', 'state': 'down'},
        {'ts': T0 + 11, 'node': 'rabbit@rmq1', 'state': 'down'},
        {'ts': T0 + 12, 'node': 'rabbit@rmq1', 'state': 'running'},
        {'ts': T0 + 25, 'node': 'rabbit@rmq1', 'state': 'running'},
        {'ts': T0 - 2, 'node': 'rabbit@rmq2', 'state': 'running'},
        {'ts': T0 + 25, 'node': 'rabbit@rmq2', 'state': 'running'},
        {'ts': T0 - 2, 'leader': 'rabbit@rmq1', 'via': 'rabbit@rmq1'},
        {'ts': T0 + 3, 'leader': 'rabbit@rmq2', 'via': 'rabbit@rmq2'}])
    if webhook is not None:
        _write(str(raw / 'webhook.json'), webhook)
    if prom_for_state is not None:
        _write(str(raw / 'prom_alerts_for_state.json'), prom_for_state)
    if prom_alerts is not None:
        _write(str(raw / 'prom_alerts.json'), prom_alerts)
    return str(tmp_path)


def _matrix(series):
    return {'status': 'success', 'data': {'resultType': 'matrix', 'result': series}}


def test_series_and_workload_recovery(tmp_path):
    r = rep.build(_drill_dir(tmp_path))
    by_t = dict(zip(r['series']['t'], r['series']['confirmed']))
    assert by_t[-5.0] == 20          # steady before the fault
    assert by_t[1.0] == 0            # stalled
    assert by_t[4.0] == 80 + 20      # the republished backlog lands at t=4.2, with that second's own
    # The last second below half the rate is t=3..4: the workload is back at t=4.
    assert r['recovery']['workload_steady_s'] == 4.0
    # rmq1 was down from +1 to +12 (sampler): the nodes are whole again at +12.
    assert r['recovery']['nodes_all_running_s'] == 12.0
    assert r['time_to_recover_s'] == 12.0
    assert r['leaders'] == [[-2.0, 'rabbit@rmq1'], [3.0, 'rabbit@rmq2']]


def test_goal_verdicts_and_no_alerts(tmp_path):
    r = rep.build(_drill_dir(tmp_path))
    assert r['verdict'] == 'PASS'
    assert r['goals']['publish_unavailability_met'] is False  # 4.2 s against 1 s
    assert r['goals']['notify_met'] is False                  # nothing notified
    assert r['time_to_detect_s'] is None and r['alerts'] == []
    md = rep.markdown(r)
    assert 'publish unavailability <= 1 s: NOT met (4.2 s)' in md
    assert 'No alert fired' in md


def test_alert_timings_ignore_list_and_old_alerts(tmp_path):
    labels = {'alertname': 'RabbitMQNodeDown', 'rabbitmq_node': 'rabbit@rmq1', 'severity': 'page'}
    for_state = _matrix([
        {'metric': labels, 'values': [[T0 + 20, str(T0 + 16)], [T0 + 35, str(T0 + 16)]]},
        # active long before the fault: not the drill's
        {'metric': {'alertname': 'HostDiskSpaceLow', 'host': 'rmq1'}, 'values': [[T0 + 20, str(T0 - 600)]]},
        {'metric': {'alertname': 'Watchdog'}, 'values': [[T0 + 20, str(T0 + 1)]]}])
    alerts = _matrix([{'metric': dict(labels, alertstate='firing'), 'values': [[T0 + 50, '1'], [T0 + 65, '1']]}])
    webhook = [
        {'received_at': T0 - 100, 'payload': {'alerts': [{'status': 'firing', 'labels': labels}]}},  # before: ignored
        {'received_at': T0 + 61, 'payload': {'alerts': [{'status': 'firing', 'labels': labels}]}},
        {'received_at': T0 + 140, 'payload': {'alerts': [{'status': 'resolved', 'labels': labels}]}},
        {'received_at': T0 + 2, 'payload': {'alerts': [{'status': 'firing', 'labels': {'alertname': 'Watchdog'}}]}}]
    r = rep.build(_drill_dir(tmp_path, webhook=webhook, prom_for_state=for_state, prom_alerts=alerts))
    assert [a['alert'] for a in r['alerts']] == ['RabbitMQNodeDown']
    a = r['alerts'][0]
    assert (a['active_at'], a['firing_from'], a['firing_to'], a['notified_at'], a['resolved_notified_at']) == (
        16.0, 50.0, 65.0, 61.0, 140.0)
    assert (r['time_to_detect_s'], r['time_to_fire_s'], r['time_to_notify_s']) == (16.0, 50.0, 61.0)
    assert r['goals']['notify_met'] is True


def test_notify_goal_missed(tmp_path):
    labels = {'alertname': 'RabbitMQNodeDown', 'rabbitmq_node': 'rabbit@rmq1'}
    webhook = [{'received_at': T0 + 95, 'payload': {'alerts': [{'status': 'firing', 'labels': labels}]}}]
    r = rep.build(_drill_dir(tmp_path, webhook=webhook))
    assert r['time_to_notify_s'] == 95.0
    assert r['goals']['notify_met'] is False


def test_node_never_back_means_no_recovery(tmp_path):
    samples = [{'ts': T0 - 1, 'node': 'rabbit@rmq1', 'state': 'running'},
               {'ts': T0 + 5, 'node': 'rabbit@rmq1', 'state': 'down'},
               {'ts': T0 + 25, 'node': 'rabbit@rmq1', 'state': 'down'}]
    r = rep.build(_drill_dir(tmp_path, samples=samples))
    assert r['recovery']['nodes_all_running_s'] is None
    assert r['time_to_recover_s'] is None


def test_main_writes_three_files(tmp_path, capsys):
    d = _drill_dir(tmp_path, checker={'verdict': 'FAIL', 'counts': {'lost': 2, 'unexpected': 0},
                                      'unavailability': {}})
    assert rep.main([d]) == 0
    doc = json.loads((tmp_path / 'report.json').read_text())
    assert doc['verdict'] == 'FAIL' and doc['goals']['lost_zero'] is False
    assert 'Verdict: FAIL' in (tmp_path / 'report.md').read_text()
    assert (tmp_path / 'timeline.png').read_bytes()[:4] == b'\x89PNG'
    assert 'verdict FAIL; lost 2' in capsys.readouterr().out


def test_sampler_classify():
    assert sampler.classify({'running': True}) == ('running', '')
    assert sampler.classify({'running': False}) == ('down', 'not running')
    assert sampler.classify({'running': True, 'partitions': ['rabbit@rmq2']}) == ('partitioned', 'cannot reach rabbit@rmq2')
    assert sampler.classify({'running': True, 'disk_free_alarm': True}) == ('alarm', 'disk alarm')
    assert sampler.classify({'running': True, 'mem_alarm': True, 'disk_free_alarm': True}) == ('alarm', 'memory disk alarm')


def test_summary_takes_the_worst_of_the_runs(tmp_path):
    for i, (lost, worst, notify) in enumerate(((0, 0.4, 70.0), (0, 1.3, None), (1, 0.2, 50.0))):
        d = tmp_path / ('kill-%d' % i)
        d.mkdir()
        (d / 'report.json').write_text(json.dumps({
            'format': 'warren-drill-report/1', 'drill': 'kill', 'run_id': 'kill-%d' % i,
            'verdict': 'PASS' if lost == 0 else 'FAIL', 'counts': {'lost': lost, 'unexpected': 0, 'duplicates': 2,
                                                                   'confirmed': 100},
            'unavailability_s': {'publish_worst_client': worst}, 'time_to_detect_s': 10.0,
            'time_to_notify_s': notify, 'time_to_recover_s': 20.0 + i, 'settings': {'fault_seconds': 20},
            'goals': {'publish_unavailability_s': 1}}))
    assert rep.main(['--summary', str(tmp_path)]) == 0
    text = (tmp_path / 'summary.md').read_text()
    assert '| kill | 3 (2) | 20 s | 1 | 0 | 6 | 300 | 1.3 s | <= 1 s | 10.0 s | 70.0 s (2) | 22.0 s |' in text
    assert '[kill-1](kill-1/report.md)' in text


def test_a_cluster_that_did_not_recover_fails_the_drill_even_when_no_message_was_lost(tmp_path):
    path = _drill_dir(tmp_path)
    drill_json = os.path.join(path, 'raw', 'drill.json')
    with open(drill_json, encoding='utf-8') as handle:
        drill = json.load(handle)
    drill['recovery_ok'] = False
    drill['recovery_failing'] = ['no_partitions: rabbit@rmq1 cannot reach rabbit@rmq3']
    _write(drill_json, drill)
    r = rep.build(path)
    assert r['checker_verdict'] == 'PASS'
    assert r['verdict'] == 'FAIL'
    assert 'rabbit@rmq1 cannot reach rabbit@rmq3' in r['verdict_reasons'][0]
    md = rep.markdown(r)
    assert '## Verdict: FAIL' in md and 'Why: the cluster did not recover' in md


def test_a_recovered_cluster_keeps_the_checkers_verdict(tmp_path):
    r = rep.build(_drill_dir(tmp_path))
    assert r['verdict'] == 'PASS' and r['verdict_reasons'] == []


def test_summary_says_when_runs_never_recovered(tmp_path):
    ok = rep.build(_drill_dir(tmp_path / 'a'))
    samples = [{'ts': T0 - 1, 'node': 'rabbit@rmq1', 'state': 'running'},
               {'ts': T0 + 5, 'node': 'rabbit@rmq1', 'state': 'down'},
               {'ts': T0 + 25, 'node': 'rabbit@rmq1', 'state': 'down'}]
    stuck = rep.build(_drill_dir(tmp_path / 'b', samples=samples))
    stuck['run_id'] = 'kill-y'
    rows = rep.summarise([ok, stuck])
    assert rows[0]['not_recovered_runs'] == 1
    assert 'never in 1 of 2 runs' in rep.summary_markdown(rows, [ok, stuck])


def _with_partition_check(path, check):
    drill_json = os.path.join(path, 'raw', 'drill.json')
    with open(drill_json, encoding='utf-8') as handle:
        drill = json.load(handle)
    drill['partition_check'] = check
    _write(drill_json, drill)
    return path


def test_a_leftover_partition_fails_the_drill_and_is_named(tmp_path):
    failing = ['leftover partition: rmq3 sees running rabbit@rmq3, partitions {"rabbit@rmq3": ["rabbit@rmq1"]}']
    path = _with_partition_check(_drill_dir(tmp_path), {
        'ok': 'False', 'checked_at': T0 + 95, 'failing': failing, 'views': {}})
    r = rep.build(path)
    assert r['checker_verdict'] == 'PASS'
    assert r['verdict'] == 'FAIL'
    assert r['time_to_recover_s'] is None
    assert any('leftover partition after the heal' in why and 'rabbit@rmq3' in why for why in r['verdict_reasons'])
    assert r['partition_check']['checked_s'] == 95.0
    assert '**Leftover partition**' in rep.markdown(r)


def test_a_clean_partition_check_is_reported_and_keeps_pass(tmp_path):
    path = _with_partition_check(_drill_dir(tmp_path), {
        'ok': True, 'checked_at': T0 + 90, 'failing': [], 'views': {}})
    r = rep.build(path)
    assert r['verdict'] == 'PASS'
    assert 'Leftover-partition check' in rep.markdown(r) and 'none, every broker' in rep.markdown(r)


def test_the_publishers_wind_down_is_not_a_degraded_workload(tmp_path):
    # The history's publishers stop at t=30 (last intended send); the controller recorded the
    # stop 4 s later, after systemctl returned. The empty seconds in between are not degraded.
    path = _drill_dir(tmp_path)
    drill_json = os.path.join(path, 'raw', 'drill.json')
    with open(drill_json, encoding='utf-8') as handle:
        drill = json.load(handle)
    drill['times']['workload_stop'] = T0 + 34
    _write(drill_json, drill)
    r = rep.build(path)
    assert r['recovery']['workload_steady_s'] == 4.0  # the stall (0-4 s), not the wind-down
