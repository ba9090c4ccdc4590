"""The total-queue checker (warren_amqp.checker) on synthetic histories, one per category."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'roles', 'amqp_client',
                                'files'))

from warren_amqp import checker  # noqa: E402  (path set just above)

RUN = 'r1'
T0 = 1_000_000.0


def pub(seq, outcome='confirmed', intended=None, sent=None, confirmed=None, p='p0', run=RUN,
        node='rmq1:5671'):
    intended = T0 + seq * 0.1 if intended is None else intended
    if outcome == 'unsent':
        sent = None
    elif sent is None:
        sent = intended + 0.001
    if outcome == 'confirmed' and confirmed is None:
        confirmed = sent + 0.004
    return {'t': 'pub', 'run': run, 'pub': p, 'seq': seq, 'queue': 'q0', 'intended': intended,
            'sent': sent, 'confirmed': confirmed if outcome == 'confirmed' else None,
            'outcome': outcome, 'node': node, 'attempts': 1}


def dlv(seq, delivered=None, p='p0', run=RUN, redelivered=False):
    intended = T0 + seq * 0.1
    return {'t': 'del', 'run': run, 'pub': p, 'seq': seq, 'queue': 'q0',
            'delivered': intended + 0.01 if delivered is None else delivered,
            'node': 'rmq2:5671', 'redelivered': redelivered, 'consumer': 'c0',
            'intended': intended}


def write(tmp_path, records, name='ops-load1-0.jsonl'):
    path = tmp_path / name
    with open(path, 'w', encoding='utf-8') as f:
        for r in records:
            f.write(json.dumps(r) + '\n')
    return path


def run_check(tmp_path, records, expectations=()):
    write(tmp_path, records)
    return checker.check([str(tmp_path)], expectations)


def clean(n=10):
    return [pub(i) for i in range(n)] + [dlv(i) for i in range(n)]


def test_clean_history_passes(tmp_path):
    r = run_check(tmp_path, clean())
    assert r['verdict'] == 'PASS'
    c = r['counts']
    assert (c['confirmed'], c['delivered'], c['lost'], c['unexpected'], c['duplicates']) == \
        (10, 10, 0, 0, 0)


def test_lost_fails(tmp_path):
    records = [pub(i) for i in range(10)] + [dlv(i) for i in range(10) if i != 4]
    r = run_check(tmp_path, records)
    assert r['counts']['lost'] == 1
    assert r['lost_sample'] == [{'run': RUN, 'pub': 'p0', 'seq': 4}]
    assert r['verdict'] == 'FAIL'


def test_unexpected_fails(tmp_path):
    # seq 10 was never published by p0; p9 never existed at all in this run
    records = clean() + [dlv(10), dlv(0, p='p9')]
    r = run_check(tmp_path, records)
    assert r['counts']['unexpected'] == 2
    assert r['verdict'] == 'FAIL'


def test_unsent_message_consumed_is_unexpected(tmp_path):
    records = clean(5) + [pub(5, 'unsent'), dlv(5)]
    r = run_check(tmp_path, records)
    assert r['counts']['unsent'] == 1
    assert r['counts']['unexpected'] == 1
    assert r['verdict'] == 'FAIL'


def test_duplicates_are_reported_not_failed(tmp_path):
    records = clean() + [dlv(3, redelivered=True), dlv(3), dlv(7)]
    r = run_check(tmp_path, records)
    assert r['counts']['duplicates'] == 3
    assert r['counts']['duplicate_messages'] == 2
    assert r['counts']['redelivered_flag'] == 1
    assert r['verdict'] == 'PASS'


def test_indeterminate_may_or_may_not_arrive(tmp_path):
    records = clean(5) + [pub(5, 'indeterminate'), pub(6, 'indeterminate'), dlv(5),
                          pub(7, 'nacked')]
    r = run_check(tmp_path, records)
    c = r['counts']
    assert (c['indeterminate'], c['nacked'], c['recovered'], c['lost']) == (2, 1, 1, 0)
    assert c['attempted'] == 8
    assert r['verdict'] == 'PASS'


def test_foreign_messages_are_counted_not_failed(tmp_path):
    records = clean() + [dlv(0, run='old-run'), {'t': 'del', 'foreign': True, 'delivered': T0}]
    r = run_check(tmp_path, records)
    assert r['counts']['foreign'] == 2
    assert r['counts']['unexpected'] == 0
    assert r['verdict'] == 'PASS'
    r = run_check(tmp_path, records, ['counts.foreign<=0'])
    assert r['verdict'] == 'FAIL'


def test_unavailability_windows(tmp_path):
    # 100 messages at 10/s; confirms stop between seq 30 and 60 (a 3 s stall) for publisher p0,
    # while p1 keeps confirming; deliveries stop between seq 40 and 45 for everyone.
    records = []
    for i in range(100):
        stalled = 30 < i < 60
        records.append(pub(i, 'indeterminate' if stalled else 'confirmed'))
        records.append(pub(i, p='p1'))
        if not 40 < i < 45:
            records.append(dlv(i, p='p1'))
            if not stalled:
                records.append(dlv(i))
    r = run_check(tmp_path, records)
    u = r['unavailability']
    worst = u['confirm_worst_publisher']
    assert worst['publisher'] == RUN + '/p0'
    # last confirm before the stall: seq 30 at +0.005, first after: seq 60 at +0.005
    assert worst['longest_s'] == pytest.approx(3.0, abs=1e-6)
    assert u['confirm']['longest_s'] == pytest.approx(0.1, abs=1e-6)
    assert u['delivery']['longest_s'] == pytest.approx(0.5, abs=1e-6)
    assert r['window']['seconds'] == pytest.approx(9.9)
    r = run_check(tmp_path, records,
                  ['unavailability.confirm_worst_publisher.longest_s<=2.5'])
    assert r['verdict'] == 'FAIL'


def test_latency_from_intended_time_shows_a_stalled_sender(tmp_path):
    # Open loop: seq 5..9 were due at their slots but only sent at T0+2.0 (the client stalled).
    # From the actual send they look fast (4 ms); from the intended time they do not.
    records = []
    for i in range(10):
        intended = T0 + i * 0.1
        sent = intended + 0.001 if i < 5 else T0 + 2.0
        records.append(pub(i, intended=intended, sent=sent, confirmed=sent + 0.004))
        records.append(dlv(i, delivered=sent + 0.010))
    lat = run_check(tmp_path, records)['latency_ms']
    assert lat['confirm_from_sent']['max'] == pytest.approx(4.0)
    assert lat['confirm_from_intended']['max'] == pytest.approx(1504.0)
    assert lat['confirm_from_intended']['p50'] == pytest.approx(5.0)
    assert lat['end_to_end_from_intended']['max'] == pytest.approx(1510.0)
    assert lat['confirm_from_intended']['count'] == 10


def test_percentiles_nearest_rank():
    stats = checker.percentiles(list(range(1, 1001)))
    assert (stats['p50'], stats['p90'], stats['p99'], stats['p99_9'], stats['max']) == \
        (500, 900, 990, 999, 1000)
    assert checker.percentiles([])['p99'] is None


def test_compact_seqs_format_counts_the_same(tmp_path):
    outcomes = bytearray([1] * 10 + [3, 4])
    counts = bytearray([1] * 10 + [0, 0])
    counts[2] = 2           # one duplicate
    counts[9] = 0           # seq 9 confirmed, never consumed: lost
    doc = {'format': 'warren-seqs/1',
           'publishers': [{'run': RUN, 'pub': 'p0', 'outcomes': checker.rle_encode(outcomes)}],
           'deliveries': [{'run': RUN, 'pub': 'p0', 'counts': checker.rle_encode(counts)}],
           'foreign': 1, 'unexpected': 0}
    (tmp_path / 'seqs-load1-0.json').write_text(json.dumps(doc))
    r = checker.check([str(tmp_path)])
    c = r['counts']
    assert (c['confirmed'], c['indeterminate'], c['unsent'], c['lost'], c['duplicates'],
            c['foreign']) == (10, 1, 1, 1, 1, 1)
    assert r['timed'] is False
    assert r['verdict'] == 'FAIL'


def test_histories_split_over_files_are_merged(tmp_path):
    write(tmp_path, [pub(i) for i in range(10)], 'ops-load1-0.jsonl')
    write(tmp_path, [dlv(i) for i in range(0, 10, 2)], 'ops-load1-1.jsonl')
    (tmp_path / 'drain').mkdir()
    write(tmp_path / 'drain', [dlv(i) for i in range(1, 10, 2)], 'ops-drain-load1-0.jsonl')
    r = checker.check([str(tmp_path)])
    assert r['files'] == 3
    assert r['counts']['lost'] == 0
    assert r['verdict'] == 'PASS'


def test_torn_last_line_is_skipped_but_corruption_is_not(tmp_path):
    path = write(tmp_path, clean())
    with open(path, 'a', encoding='utf-8') as f:
        f.write('{"t": "del", "run": "r1", "pu')
    r = checker.check([str(tmp_path)])
    assert r['torn_last_lines'] == 1 and r['verdict'] == 'PASS'
    with open(path, 'a', encoding='utf-8') as f:
        f.write('\n' + json.dumps(dlv(1)) + '\n')
    with pytest.raises(checker.HistoryError):
        checker.check([str(tmp_path)])


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(checker.HistoryError, match='no ops'):
        checker.check([str(tmp_path)])
    write(tmp_path, [dlv(0)])
    with pytest.raises(checker.HistoryError, match='no publish records'):
        checker.check([str(tmp_path)])
    with pytest.raises(ValueError, match='PATH OP NUMBER'):
        checker.parse_expectation('lost is zero')


def test_cli_exit_codes_and_json(tmp_path, capsys):
    write(tmp_path, clean())
    out = tmp_path / 'result.json'
    assert checker.main([str(tmp_path), '--json', str(out)]) == 0
    assert json.loads(out.read_text())['verdict'] == 'PASS'
    assert 'VERDICT: PASS' in capsys.readouterr().out
    assert checker.main([str(tmp_path), '--expect', 'counts.confirmed>=11']) == 1
    assert checker.main([str(tmp_path / 'nothing-here')]) == 2
    assert checker.main([str(tmp_path), '--expect', 'nonsense']) == 2
