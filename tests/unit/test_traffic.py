"""The traffic engine (warren_amqp.traffic) without a broker: configuration errors, the
publisher's confirm/deadline/republish logic on a fake channel, and the per-step summary
(achieved rate, merged latencies, the invalid-step rule)."""

import collections
import json
import os
import sys
import time

import pytest
from pika.spec import Basic

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'roles', 'amqp_client',
                                'files'))

from warren_amqp import checker, hist, traffic  # noqa: E402  (path set just above)

CLIENT = {'nodes': ['rmq1:5672', 'rmq2:5672', 'rmq3:5672'], 'vhost': 'warren',
          'user': 'app', 'password': 'secret'}


def config(**overrides):
    data = {'client': dict(CLIENT), 'rate': 100, 'step_seconds': 10}
    data.update(overrides)
    return traffic.RunConfig(data)


# -- configuration ------------------------------------------------------------------------------

def test_defaults_and_the_derived_duration_bound():
    cfg = config()
    assert (cfg.queue_type, cfg.queues, cfg.publishers, cfg.consumers, cfg.confirm_window,
            cfg.prefetch, cfg.record_ops) == ('quorum', 1, 1, 1, 64, 100, False)
    assert [(s.name, s.rate) for s in cfg.steps] == [('step1', 100.0)]
    # 10 s of schedule + 2 s start-up + 30 s consume grace + 30 s margin
    assert cfg.duration_bound == pytest.approx(72)
    assert 'password' not in json.dumps(cfg.public())
    assert cfg.queue_names() == ['warren.traffic.0']
    assert cfg.queue_args() == {'x-queue-type': 'quorum'}


@pytest.mark.parametrize('overrides,message', [
    ({'queue_type': 'lazy'}, "'queue_type' must be one of quorum, classic, stream"),
    ({'queues': 0}, "'queues' must be a whole number from 1"),
    ({'publishers': -1}, "'publishers' must be a whole number"),
    ({'publishers': 0, 'consumers': 0}, 'nothing to run'),
    ({'queues': 3, 'consumers': 2}, "'consumers' (2) is below 'queues' (3)"),
    ({'processes': 4, 'publishers': 2, 'consumers': 2}, "'processes' (4) is more than"),
    ({'message_size': -5}, "'message_size' must be a whole number"),
    ({'message_size': 1.5}, "'message_size' must be a whole number"),
    ({'persistent': 'yes'}, "'persistent' must be true or false"),
    ({'confirm_window': 0}, "'confirm_window' must be a whole number from 1"),
    ({'prefetch': 70000}, "'prefetch' must be a whole number from 1 to 65535"),
    ({'rate': 0}, "'rate'/'rates' must be > 0"),
    ({'rates': [100, 200]}, "set 'rate' or 'rates', not both"),
    ({'rate': None, 'rates': []}, 'non-empty list'),
    ({'step_seconds': 0}, "'step_seconds' must be > 0"),
    ({'warmup_seconds': -1}, "'warmup_seconds' must be >= 0"),
    ({'confirm_deadline_seconds': 'soon'}, "'confirm_deadline_seconds' must be a number"),
    ({'duration_bound_seconds': 20}, "'duration_bound_seconds' (20) is shorter"),
    ({'node_assignment': 'random'}, "'node_assignment' must be 'spread' or 'first'"),
    ({'queue_prefix': 'amq.x'}, "'queue_prefix' must be a non-empty name"),
    ({'queue_arguments': {'x-queue-type': 'classic'}}, "set the queue type with 'queue_type'"),
    ({'run_id': 'a/b'}, "'run_id' must be a short name"),
    ({'rate_limit': 5}, 'unknown key(s) rate_limit'),
    ({'client': None}, "'client' (nodes, vhost"),
    ({'client': dict(CLIENT, nodes=[])}, 'client: '),
    ({'client': dict(CLIENT, tls=True, ca_file='/nonexistent/ca.pem')}, 'client: '),
    ({'publishers': 2000, 'consumers': 0, 'rate': 1000}, 'per process is more than 500'),
    ({'publishers': 1, 'rate': 200000}, 'more than 100000 msg/s per publisher'),
])
def test_every_bad_parameter_gets_a_clear_error(overrides, message):
    with pytest.raises(traffic.RunConfigError) as err:
        config(**overrides)
    assert message in str(err.value)


def test_bad_config_fails_before_any_connection(tmp_path, capsys, monkeypatch):
    def no_traffic(*a, **k):
        raise AssertionError('connected despite a bad config')

    monkeypatch.setattr(traffic.pika, 'BlockingConnection', no_traffic)
    monkeypatch.setattr(traffic.pika, 'SelectConnection', no_traffic)
    path = tmp_path / 'run.json'
    path.write_text(json.dumps({'client': CLIENT, 'rate': -3}))
    assert traffic.main(['--config', str(path), '--out', str(tmp_path / 'out')]) == 2
    assert "'rate'/'rates' must be > 0" in capsys.readouterr().err
    path.write_text('{not json')
    assert traffic.main(['--config', str(path), '--out', str(tmp_path / 'out')]) == 2
    assert 'not valid JSON' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_check_config_mode(tmp_path, capsys):
    path = tmp_path / 'run.json'
    path.write_text(json.dumps({'client': CLIENT, 'rates': [100, 200], 'step_seconds': 5,
                                'warmup_seconds': 2}))
    assert traffic.main(['--config', str(path), '--check-config']) == 0
    assert 'warmup 100/s x 2s, step1 100/s x 5s, step2 200/s x 5s' in capsys.readouterr().out


# -- the publisher, on a fake channel -----------------------------------------------------------

class FakeChannel:
    def __init__(self):
        self.published = []

    def basic_publish(self, exchange, routing_key, body, properties):
        self.published.append((routing_key, properties.headers[traffic.H_SEQ],
                               properties.headers))


def frame(method):
    return collections.namedtuple('Frame', 'method')(method)


@pytest.fixture
def worker(tmp_path):
    cfg = config(confirm_window=4, confirm_deadline_seconds=1.0, record_ops=True, rate=1000,
                 step_seconds=1)
    t0 = time.time() - 0.5          # 500 messages are already due
    w = traffic.Worker(cfg, 0, t0, str(tmp_path))
    later = []
    w.ioloop.call_later = lambda delay, cb: later.append((delay, cb))   # never run
    w.ioloop.remove_timeout = lambda handle: None
    w.later = later
    return w


def up(publisher):
    """Pretend the connection and its confirm-mode channel just opened."""
    publisher.channel = FakeChannel()
    publisher.tagmaps[publisher.gen] = ({}, collections.deque())
    publisher._confirming(publisher.gen)
    return publisher.channel


def test_window_limits_what_is_in_flight_and_confirms_free_it(worker):
    p = worker.publishers[0]
    ch = up(p)
    assert [seq for _, seq, _ in ch.published] == [0, 1, 2, 3]      # window 4, 500 due
    p._confirm(p.gen, frame(Basic.Ack(delivery_tag=2, multiple=True)))
    assert [seq for _, seq, _ in ch.published] == [0, 1, 2, 3, 4, 5]
    assert sorted(p.unconfirmed) == [2, 3, 4, 5]
    p._confirm(p.gen, frame(Basic.Ack(delivery_tag=4, multiple=False)))
    assert sorted(p.unconfirmed) == [2, 4, 5, 6]
    headers = ch.published[0][2]
    assert headers[traffic.H_RUN] == worker.cfg.run_id
    assert headers[traffic.H_INTENDED] == round(worker.t0 * 1e6)


def test_deadline_fails_over_and_republishes_unconfirmed(worker):
    p = worker.publishers[0]
    first_node = p.rotation.current
    up(p)
    p._confirm(p.gen, frame(Basic.Ack(delivery_tag=1, multiple=False)))
    assert sorted(p.unconfirmed) == [1, 2, 3, 4]
    p.check_deadline(time.time())                # not late yet
    assert worker.failovers == 0
    p.check_deadline(time.time() + 1.5)
    assert worker.failovers == 1
    assert p.rotation.current != first_node
    assert p.channel is None
    assert worker.later and worker.later[-1][1] == p.connect
    old_gen = p.gen
    ch = up(p)                                   # the new connection
    assert [seq for _, seq, _ in ch.published] == [1, 2, 3, 4]    # republished in order
    assert all(m.attempts == 2 for m in p.unconfirmed.values())
    # a late ack from the abandoned connection still counts: the broker did confirm seq 1
    p._confirm(old_gen - 1, frame(Basic.Ack(delivery_tag=2, multiple=False)))
    assert 1 not in p.unconfirmed


def test_nack_is_retried_and_unconfirmed_become_indeterminate(worker, tmp_path):
    p = worker.publishers[0]
    up(p)
    p._confirm(p.gen, frame(Basic.Nack(delivery_tag=1, multiple=False)))
    assert 0 not in p.unconfirmed
    delay, retry = worker.later[-1]
    assert delay == pytest.approx(worker.cfg.nack_retry)
    retry()                                       # the window is full again (seq 4 went out)
    assert p.channel.published[-1][1] == 4
    p._confirm(p.gen, frame(Basic.Ack(delivery_tag=2, multiple=False)))
    assert p.channel.published[-1][1] == 0        # a freed slot goes to the retry first
    assert p.unconfirmed[0].attempts == 2
    p.stop_at = time.time() - 0.1                 # schedule over, grace over
    worker.grace = 0
    assert p.finish_if_due(time.time())
    worker._mark_cpu('end')
    worker._write()
    result = checker.check([str(tmp_path)])
    c = result['counts']
    assert c['indeterminate'] == 4                # the window's worth, never confirmed
    assert c['unsent'] > 300                      # due at 1000/s, never sent: stalled
    # seq 1 was confirmed and nothing consumed it here: the checker calls it lost
    assert (c['confirmed'], c['lost'], c['attempted']) == (1, 1, 5)


# -- the summary ------------------------------------------------------------------------------

def proc_file(out, tag, lag_s, confirms):
    rec = hist.StepRecorder()
    for _ in range(confirms):
        rec.record(0, 'confirm_from_intended', 0.004)
        rec.record(0, 'generator_lag', lag_s)
    doc = {'tag': tag, 'meta': {'error': None}, 'histograms': rec.to_dict(),
           'counts': {'0': {'sent': confirms, 'confirmed': confirms}},
           'cpu': {'0': {'cpu_seconds': 1.0}, 'total_cpu_seconds': 1.5}, 'events': [],
           'series': [[100, confirms, confirms, 0, 0, 0, 4.0]]}
    (out / ('proc-%s.json' % tag)).write_text(json.dumps(doc))


def test_summary_merges_processes_and_marks_a_lagging_step_invalid(tmp_path):
    cfg = config(rate=100, step_seconds=10, processes=2, publishers=2, consumers=2,
                 lag_bound_ms=1.0)
    proc_file(tmp_path, 'h-0', 0.0002, 500)
    proc_file(tmp_path, 'h-1', 0.0002, 490)
    s = traffic.merge_run(cfg, str(tmp_path), ['h-0', 'h-1'], 1000.0)
    step = s['steps'][0]
    assert step['confirmed_rate'] == pytest.approx(99.0)
    assert step['achieved_ratio'] == pytest.approx(0.99)
    assert step['latency_ms']['confirm_from_intended']['count'] == 990
    assert step['cpu_cores'] == pytest.approx(0.2)
    assert step['valid'] is True
    proc_file(tmp_path, 'h-1', 0.003, 490)     # one process fell 3 ms behind its schedule
    step = traffic.merge_run(cfg, str(tmp_path), ['h-0', 'h-1'], 1000.0)['steps'][0]
    assert step['valid'] is False
    assert 'generator was the limit' in step['invalid_reason']
    assert s['series'] == [[100, 990, 990, 0, 0, 0, 4.0]]
