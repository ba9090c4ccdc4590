"""warren_amqp.failover: the failover order and the backoff bounds."""

import pytest

from warren_amqp.failover import Backoff, NodeRotation, backoff_delay


def test_rotation_order_wraps_and_sweeps_from_current():
    rot = NodeRotation(["a", "b", "c"])
    assert rot.current == "a"
    assert [rot.advance(), rot.advance(), rot.advance()] == ["b", "c", "a"]
    rot.advance()
    assert rot.sweep() == ["b", "c", "a"]
    rot.select("c")
    assert rot.current == "c" and rot.sweep() == ["c", "a", "b"]
    assert rot.next_after("c") == "a" and rot.next_after("a") == "b"


def test_single_node_rotation():
    rot = NodeRotation(["only"])
    assert rot.advance() == "only" and rot.next_after("only") == "only"
    with pytest.raises(ValueError):
        NodeRotation([])


@pytest.mark.parametrize("attempt", range(1, 40))
def test_backoff_bounds(attempt):
    ceiling = min(30.0, 1.0 * 2 ** (attempt - 1))
    low = backoff_delay(attempt, 1.0, 30.0, rand=lambda: 0.0)
    high = backoff_delay(attempt, 1.0, 30.0, rand=lambda: 1.0 - 1e-12)
    assert low == pytest.approx(ceiling / 2)
    assert high == pytest.approx(ceiling)
    assert 0.5 <= low <= high <= 30.0
    for _ in range(50):
        assert low <= backoff_delay(attempt, 1.0, 30.0) <= high


def test_backoff_grows_then_caps_and_is_jittered():
    highs = [backoff_delay(n, 0.5, 8.0, rand=lambda: 1.0) for n in range(1, 10)]
    assert highs == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert backoff_delay(10 ** 6, 1.0, 30.0, rand=lambda: 1.0) == 30.0
    assert backoff_delay(0, 1.0, 30.0, rand=lambda: 1.0) == 1.0
    delays = {round(backoff_delay(5, 1.0, 30.0), 6) for _ in range(20)}
    assert len(delays) > 10, "jitter: clients that lost the same node do not retry in lockstep"


def test_backoff_counter_resets():
    backoff = Backoff(1.0, 4.0, rand=lambda: 1.0)
    assert [backoff.failure() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.failure() == 1.0
