"""The run's start time (warren_amqp.schedule.start_time and the traffic engine's use of it).

A common ``start_at`` that is already past when the generator is ready (a slow host, a playbook
that computed it too early) must stop the run with a clear error before any traffic, never be
accepted silently: every slot since then would go out at once and skew the schedule.
"""

import json
import time

import pytest

from warren_amqp import schedule, traffic

CLIENT = {'nodes': ['rmq1:5672'], 'vhost': 'warren', 'user': 'app', 'password': 'secret'}


def test_no_start_at_starts_after_the_startup_time():
    assert schedule.start_time(None, 1000.0, 2.0) == pytest.approx(1002.0)


def test_a_future_start_at_is_kept():
    assert schedule.start_time(1010.0, 1000.0, 2.0) == pytest.approx(1010.0)


def test_a_start_at_slightly_late_is_accepted_and_not_moved():
    # Within the tolerance the schedule keeps its t0 (the late slots are measured as lag).
    assert schedule.start_time(999.5, 1000.0, 2.0, tolerance=1.0) == pytest.approx(999.5)


def test_a_start_at_in_the_past_is_refused_with_how_late_it_is():
    with pytest.raises(schedule.ScheduleError) as err:
        schedule.start_time(970.0, 1000.0, 2.0, tolerance=1.0)
    message = str(err.value)
    assert 'in the past' in message
    assert '30.0 s' in message
    assert 'loadtest_start_delay' in message


@pytest.mark.parametrize('start_at', ['soon', True, float('nan')])
def test_a_start_at_that_is_not_a_time_is_refused(start_at):
    with pytest.raises(schedule.ScheduleError):
        schedule.start_time(start_at, 1000.0)


def _no_workers(monkeypatch):
    """The queues 'set up' without a broker; starting a worker process fails the test."""
    monkeypatch.setattr(traffic, 'setup_queues', lambda cfg, declare=True: {})

    def no_fork(*a, **k):
        raise AssertionError('worker processes started despite a start_at in the past')

    monkeypatch.setattr(traffic.multiprocessing, 'get_context', no_fork)


def test_the_engine_refuses_a_past_start_at_before_any_traffic(tmp_path, monkeypatch):
    _no_workers(monkeypatch)
    cfg = traffic.RunConfig({'client': dict(CLIENT), 'rate': 50, 'step_seconds': 5,
                             'start_at': time.time() - 30})
    with pytest.raises(traffic.RunConfigError) as err:
        traffic.run(cfg, str(tmp_path / 'out'))
    assert 'in the past' in str(err.value)


def test_cli_start_at_overrides_the_config_and_a_past_one_exits_2(tmp_path, capsys,
                                                                   monkeypatch):
    _no_workers(monkeypatch)
    path = tmp_path / 'run.json'
    path.write_text(json.dumps({'client': CLIENT, 'rate': 50, 'step_seconds': 5,
                                'start_at': time.time() + 3600}))
    late = '%.3f' % (time.time() - 20)
    rc = traffic.main(['--config', str(path), '--out', str(tmp_path / 'out'),
                       '--start-at', late])
    assert rc == 2
    err = capsys.readouterr().err
    assert 'in the past' in err and late in err
    assert not list((tmp_path / 'out').glob('*.json'))


def test_the_duration_bound_counts_from_a_later_start(tmp_path):
    cfg = traffic.RunConfig({'client': dict(CLIENT), 'rate': 50, 'step_seconds': 5})
    t0 = time.time() + 60
    worker = traffic.Worker(cfg, 0, t0, str(tmp_path))
    assert worker.hard_end == pytest.approx(t0 + cfg.duration_bound, abs=0.01)
