"""Open-loop send schedules: when each message *should* be sent, whatever the broker does.

A run is a list of steps: an optional warm-up (at the first rate, left out of the results),
then one step per target rate, each ``step_seconds`` long. The total rate of a step is shared
evenly by the publishers of the run, and their send slots are interleaved (publisher i of P
is offset by i/P of its own interval), so together they send at an even pace rather than in
bursts of P.

Intended send times are computed in closed form (step start + (k + phase) * interval), never
by adding intervals up, so they do not drift over long runs. A publisher that falls behind
sends everything that is due as soon as it can (it never skips a slot), and every latency is
measured from the intended time: a stall shows up in the numbers instead of being hidden
(no coordinated omission).

``Pacer.take()`` hands out the next slot; the engine records ``sent - intended`` as the
schedule lag. The part of the lag that is the generator's own fault (the message was ready,
the window open and the connection up, but the process was too busy to send it) is what
decides whether a step is valid: ``step_valid()``.
"""

import dataclasses
import math
import time


class ScheduleError(ValueError):
    """A schedule parameter is wrong; the message names it."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One phase of a run. ``start``/``end`` are seconds from the run's start (t0)."""

    index: int
    name: str
    rate: float          # total msg/s over all publishers of the run
    start: float
    end: float
    warmup: bool = False

    @property
    def seconds(self):
        return self.end - self.start


def _number(name, value, minimum=0.0, allow_equal=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or math.isinf(value):
        raise ScheduleError('%s must be a number, got %r' % (name, value))
    if value < minimum or (value == minimum and not allow_equal):
        raise ScheduleError('%s must be %s %g, got %r'
                            % (name, '>=' if allow_equal else '>', minimum, value))
    return float(value)


def build_steps(rates, step_seconds, warmup_seconds=0.0):
    """Steps for one rate (a fixed-rate run) or a list of rates (a stepped run)."""
    if isinstance(rates, (int, float)) and not isinstance(rates, bool):
        rates = [rates]
    if not isinstance(rates, (list, tuple)) or not rates:
        raise ScheduleError('rates must be a positive number or a non-empty list of them, '
                            'got %r' % (rates,))
    rates = [_number('rate', r) for r in rates]
    step_seconds = _number('step_seconds', step_seconds)
    warmup_seconds = _number('warmup_seconds', warmup_seconds, allow_equal=True)
    steps = []
    t = 0.0
    if warmup_seconds > 0:
        steps.append(Step(0, 'warmup', rates[0], 0.0, warmup_seconds, warmup=True))
        t = warmup_seconds
    for i, rate in enumerate(rates):
        steps.append(Step(len(steps), 'step%d' % (i + 1), rate, t, t + step_seconds))
        t += step_seconds
    return steps


def start_time(start_at, now, startup_seconds=2.0, tolerance=1.0):
    """The run's t0 (absolute): ``start_at`` when given (the common start of several load
    hosts), else ``now + startup_seconds``.

    A ``start_at`` that is already more than ``tolerance`` seconds in the past is refused with
    a ``ScheduleError`` that says how late it is: every slot between it and now would be due at
    once, so the run would open with a burst, measure that burst as schedule lag, and (with
    several hosts) no longer start in step. The caller should launch the generator sooner or
    give a later ``start_at``; a run never starts on a silently skewed schedule. A start less
    than ``tolerance`` late is accepted: its few late slots are measured as lag like any other.
    """
    startup_seconds = _number('startup_seconds', startup_seconds, allow_equal=True)
    if start_at is None:
        return now + startup_seconds
    start_at = _number('start_at', start_at, allow_equal=True)
    late = now - start_at
    if late > tolerance:
        raise ScheduleError(
            "'start_at' (%.3f) is %.1f s in the past when the generator is ready to start "
            '(more than the %g s allowed): the schedule would open with a burst of every slot '
            'since then. Launch the generator sooner or give it a later start_at (playbooks: '
            'loadtest_start_delay).' % (start_at, late, tolerance))
    return start_at


def step_at(steps, offset):
    """The step whose [start, end) holds ``offset`` seconds from t0, or None."""
    for step in steps:
        if step.start <= offset < step.end:
            return step
    return None


class Pacer:
    """The intended send times of publisher ``index`` out of ``count``, from t0 (absolute).

    ``peek()`` is the next intended absolute time (None when the schedule is done);
    ``take()`` returns ``(seq, intended, step)`` and moves on. Sequence numbers start at 0 and
    go up by one over the whole run, across steps.
    """

    def __init__(self, steps, index, count, t0):
        if not 0 <= index < count:
            raise ScheduleError('publisher index %r out of range 0..%d' % (index, count - 1))
        self.steps = list(steps)
        self.index, self.count, self.t0 = index, count, float(t0)
        self.seq = 0
        self._step_pos = 0
        self._k = 0
        self._next = None
        self._advance_to_valid()

    def _slot(self, step, k):
        interval = self.count / step.rate
        return step.start + (k + self.index / self.count) * interval

    def _advance_to_valid(self):
        while self._step_pos < len(self.steps):
            step = self.steps[self._step_pos]
            offset = self._slot(step, self._k)
            if offset < step.end:
                self._next = (self.t0 + offset, step)
                return
            self._step_pos += 1
            self._k = 0
        self._next = None

    def peek(self):
        return None if self._next is None else self._next[0]

    def take(self):
        if self._next is None:
            raise IndexError('schedule finished')
        intended, step = self._next
        seq = self.seq
        self.seq += 1
        self._k += 1
        self._advance_to_valid()
        return seq, intended, step

    def due(self, now):
        """Take every slot whose intended time is <= now (open loop: nothing is skipped)."""
        out = []
        while self._next is not None and self._next[0] <= now:
            out.append(self.take())
        return out

    @property
    def done(self):
        return self._next is None

    def planned(self):
        """How many messages this publisher is scheduled to send in all."""
        total = 0
        for step in self.steps:
            interval = self.count / step.rate
            first = self.index / self.count * interval
            if first < step.seconds:
                total += int(math.ceil((step.seconds - first) / interval - 1e-9))
        return total


def drive(pacer, send, clock=time.monotonic, sleep=time.sleep):
    """A simple blocking open-loop driver: sleep until the next slot, send what is due.

    ``send(seq, intended, step)`` is called for every slot, late ones too. Returns the list of
    lags (seconds between intended and actual call), for tests and simple clients; the traffic
    engine does the same on pika's I/O loop.
    """
    lags = []
    while not pacer.done:
        now = clock()
        nxt = pacer.peek()
        if nxt > now:
            sleep(nxt - now)
            continue
        for seq, intended, step in pacer.due(now):
            at = clock()
            send(seq, intended, step)
            lags.append(at - intended)
    return lags


def achieved_rate(count, seconds):
    """Messages per second; 0 for an empty interval."""
    return count / seconds if seconds > 0 else 0.0


def step_valid(gen_lag_p99_ms, bound_ms):
    """A step is valid unless the generator itself fell behind: its own lag p99 (ms) passed the
    bound. A step with no lag samples (nothing sent) cannot be judged and counts as invalid."""
    if gen_lag_p99_ms is None:
        return False
    return gen_lag_p99_ms <= bound_ms


def timer_check(poller='select', rate=1000.0, count=2000):
    """How late pika's I/O loop fires timers at ``rate``/s with the given poller (no broker):
    the floor under any schedule lag the engine can reach on this host. Returns ms stats."""
    from pika.adapters import select_connection    # pika only for this check

    select_connection.SELECT_TYPE = poller
    loop = select_connection.IOLoop()
    lags = []
    t0 = time.time() + 0.05
    pacer = Pacer(build_steps(rate, count / rate), 0, 1, t0)

    def fire():
        now = time.time()
        lags.extend(now - intended for _, intended, _ in pacer.due(now))
        if pacer.done:
            loop.stop()
            return
        loop.call_later(max(0.0, pacer.peek() - time.time()), fire)

    loop.call_later(0.05, fire)
    loop.start()
    lags.sort()
    return {'poller': poller, 'count': len(lags),
            'p50_ms': round(lags[len(lags) // 2] * 1e3, 3),
            'p99_ms': round(lags[int(len(lags) * 0.99)] * 1e3, 3),
            'max_ms': round(lags[-1] * 1e3, 3)}


if __name__ == '__main__':
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog='python3 -m warren_amqp.schedule',
        description="Measure how late pika's I/O loop fires the schedule's timers (no broker).")
    parser.add_argument('--poller', choices=('select', 'epoll', 'poll'), action='append')
    parser.add_argument('--rate', type=float, default=1000.0)
    parser.add_argument('--count', type=int, default=2000)
    args = parser.parse_args()
    for name in args.poller or ['epoll', 'select']:
        print(json.dumps(timer_check(name, args.rate, args.count)))
