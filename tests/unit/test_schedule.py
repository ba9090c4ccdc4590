"""Open-loop schedules (warren_amqp.schedule): rates, step boundaries, lag, invalid steps."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'roles', 'amqp_client',
                                'files'))

from warren_amqp import schedule  # noqa: E402  (path set just above)


def all_slots(steps, count, t0=0.0):
    slots = []
    for i in range(count):
        pacer = schedule.Pacer(steps, i, count, t0)
        while not pacer.done:
            slots.append((i,) + pacer.take())
    return slots


@pytest.mark.parametrize('rate,publishers', [(200, 1), (200, 4), (1000, 3), (7.5, 2)])
def test_achieved_rate_matches_the_target(rate, publishers):
    steps = schedule.build_steps(rate, 10.0)
    slots = all_slots(steps, publishers)
    achieved = schedule.achieved_rate(len(slots), steps[0].seconds)
    assert achieved == pytest.approx(rate, rel=0.01)
    # the planned count each publisher reports is what it really sends
    assert sum(schedule.Pacer(steps, i, publishers, 0).planned() for i in range(publishers)) \
        == len(slots)


def test_publishers_interleave_evenly():
    steps = schedule.build_steps(400, 1.0)
    times = sorted(t for _, _, t, _ in all_slots(steps, 4))
    gaps = {round(b - a, 9) for a, b in zip(times, times[1:])}
    assert gaps == {0.0025}


def test_sequence_numbers_are_contiguous_across_steps():
    steps = schedule.build_steps([10, 20], 1.0, warmup_seconds=1.0)
    pacer = schedule.Pacer(steps, 0, 1, 100.0)
    seqs = []
    while not pacer.done:
        seqs.append(pacer.take()[0])
    assert seqs == list(range(10 + 10 + 20))


def test_step_boundaries_and_warmup():
    steps = schedule.build_steps([100, 200, 400], 5.0, warmup_seconds=2.0)
    assert [(s.name, s.rate, s.start, s.end, s.warmup) for s in steps] == [
        ('warmup', 100.0, 0.0, 2.0, True),
        ('step1', 100.0, 2.0, 7.0, False),
        ('step2', 200.0, 7.0, 12.0, False),
        ('step3', 400.0, 12.0, 17.0, False)]
    slots = all_slots(steps, 2, t0=1000.0)
    for step in steps:
        mine = [t for _, _, t, s in slots if s is step]
        # every slot lies inside its own step, and the step gets rate * seconds of them
        assert all(1000.0 + step.start <= t < 1000.0 + step.end for t in mine)
        assert len(mine) == round(step.rate * step.seconds)
    assert schedule.step_at(steps, 6.999).name == 'step1'
    assert schedule.step_at(steps, 7.0).name == 'step2'
    assert schedule.step_at(steps, 17.0) is None


def test_slots_do_not_drift_over_a_long_run():
    steps = schedule.build_steps(1000, 1200.0)
    pacer = schedule.Pacer(steps, 0, 1, 0.0)
    for _ in range(1_000_000):
        _, intended, _ = pacer.take()
    assert intended == pytest.approx(999.999, abs=1e-9)


class FakeClock:
    """A clock that only moves when the code under test sleeps or works."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_lag_is_zero_when_the_sender_keeps_up():
    clock = FakeClock()
    pacer = schedule.Pacer(schedule.build_steps(100, 1.0), 0, 1, 0.0)
    sent = []
    lags = schedule.drive(pacer, lambda seq, i, s: sent.append(seq), clock, clock.sleep)
    assert len(sent) == 100
    assert max(lags) == pytest.approx(0.0)


def test_open_loop_sender_that_stalls_catches_up_and_the_lag_shows_it():
    # 100 msg/s for 1 s; the send of seq 10 blocks for 0.3 s. A closed-loop client would send
    # 30 messages fewer; the open-loop one sends all 100, the ones due meanwhile late.
    clock = FakeClock()
    pacer = schedule.Pacer(schedule.build_steps(100, 1.0), 0, 1, 0.0)
    sent = []

    def send(seq, intended, step):
        sent.append(seq)
        if seq == 10:
            clock.sleep(0.3)

    lags = schedule.drive(pacer, send, clock, clock.sleep)
    assert sent == list(range(100))
    assert lags[11] == pytest.approx(0.29)      # due at 0.11, sent at 0.40
    assert lags[40] == pytest.approx(0.0)       # caught up by seq 40
    assert sum(1 for lag in lags if lag > 0.001) == 29


def test_invalid_step_rule():
    assert schedule.step_valid(0.4, 1.0)
    assert schedule.step_valid(1.0, 1.0)
    assert not schedule.step_valid(1.01, 1.0)
    assert not schedule.step_valid(None, 1.0)


@pytest.mark.parametrize('rates,step,warmup,match', [
    (0, 10, 0, 'rate must be > 0'),
    ([100, -1], 10, 0, 'rate must be > 0'),
    ([], 10, 0, 'non-empty list'),
    ('fast', 10, 0, 'non-empty list'),
    (100, 0, 0, 'step_seconds must be > 0'),
    (100, 10, -1, 'warmup_seconds must be >= 0'),
    (100, float('nan'), 0, 'step_seconds must be a number'),
])
def test_bad_parameters_are_refused(rates, step, warmup, match):
    with pytest.raises(schedule.ScheduleError, match=match):
        schedule.build_steps(rates, step, warmup)
