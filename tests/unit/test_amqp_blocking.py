"""warren_amqp.blocking against fake pika connections (no network).

The fakes stand in for BlockingConnection/BlockingChannel only; pika's exceptions and
BasicProperties are the real ones. A node's behaviour is set per node in ``FakeCluster.mode``:
ok | down | hang (no confirm) | lost (connection drops on publish) | nack | unroutable.
Deadlines are the real SIGALRM ones, kept short.
"""

import collections
import time

import pika
import pika.exceptions
import pytest

from warren_amqp import blocking
from warren_amqp.blocking import (ConfirmPublisher, Consumer, DeadlineExceeded, FailoverConnection,
                                  NoNodeAvailable, RecentIds, shared_deadlines)
from warren_amqp.config import ClientConfig

Method = collections.namedtuple("Method", "delivery_tag redelivered")


class FakeCluster:
    def __init__(self, nodes=("rmq1", "rmq2", "rmq3")):
        self.mode = {n: "ok" for n in nodes}
        self.queue = collections.deque()  # one queue, replicated: every node sees it
        self.connects = []                # host of every connection attempt, in order
        self.published = []               # (host, message_id) of every publish reaching a node
        self.acked = []                   # (host, delivery_tag)
        self.tag = 0

    def connect(self, params):
        self.connects.append(params.host)
        if self.mode[params.host] == "down":
            raise pika.exceptions.AMQPConnectionError("Connection refused")
        return FakeConnection(self, params)


class FakeConnection:
    def __init__(self, cluster, params):
        self.cluster, self.params, self.host = cluster, params, params.host
        self.is_open = True

    def channel(self):
        if not self.is_open:
            raise pika.exceptions.ConnectionWrongStateError("closed")
        return FakeChannel(self)

    def process_data_events(self, time_limit=0):
        if self.cluster.mode[self.host] == "lost":
            self.is_open = False
            raise pika.exceptions.StreamLostError("Transport indicated EOF")
        time.sleep(min(time_limit, 0.01))

    def close(self):
        self.is_open = False


class FakeChannel:
    def __init__(self, conn):
        self.conn, self.cluster = conn, conn.cluster
        self.is_open = True
        self.confirming = False
        self.prefetch = None
        self.consuming = None

    def confirm_delivery(self):
        self.confirming = True

    def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False):
        assert self.confirming and mandatory, "publish only with confirms and mandatory"
        mode = self.cluster.mode[self.conn.host]
        self.cluster.published.append((self.conn.host, properties.message_id))
        if mode == "hang":
            time.sleep(10)
        if mode == "lost":
            self.conn.is_open = self.is_open = False
            raise pika.exceptions.StreamLostError("Transport indicated EOF")
        if mode == "nack":
            raise pika.exceptions.NackError([])
        if mode == "unroutable":
            raise pika.exceptions.UnroutableError([])
        self.cluster.tag += 1
        self.cluster.queue.append((properties, body))

    def basic_qos(self, prefetch_count=0):
        self.prefetch = prefetch_count

    def consume(self, queue, auto_ack=True, inactivity_timeout=None):
        self.consuming = (queue, auto_ack)
        tag = 0
        while True:
            if self.cluster.mode[self.conn.host] == "lost":
                self.conn.is_open = self.is_open = False
                raise pika.exceptions.StreamLostError("Transport indicated EOF")
            if self.cluster.queue:
                properties, body = self.cluster.queue.popleft()
                tag += 1
                yield Method(tag, False), properties, body
            else:
                time.sleep(min(inactivity_timeout, 0.01))
                yield None, None, None

    def basic_ack(self, delivery_tag):
        self.cluster.acked.append((self.conn.host, delivery_tag))

    def close(self):
        self.is_open = False


def make(nodes=("rmq1", "rmq2", "rmq3"), **overrides):
    cluster = FakeCluster(nodes)
    settings = {"nodes": ["%s:5672" % n for n in nodes], "vhost": "warren", "user": "app",
                "password": "pw", "connect_timeout": 0.5, "backoff_initial": 0.05,
                "backoff_max": 0.2}
    settings.update(overrides)
    conn = FailoverConnection(ClientConfig.from_dict(settings), connect_fn=cluster.connect)
    return cluster, conn


def props(message_id="m1"):
    return pika.BasicProperties(message_id=message_id, delivery_mode=2)


# --------------------------------------------------------------------------------------------
# connection failover
# --------------------------------------------------------------------------------------------


def test_failover_order_skips_down_nodes_and_moves_on_after_a_loss():
    cluster, conn = make()
    cluster.mode["rmq1"] = "down"
    assert str(conn.connect()) == "rmq1:5672".replace("1", "2")
    assert cluster.connects == ["rmq1", "rmq2"]
    conn.fail_over("test")
    assert conn.node is None and conn.connection is None
    assert str(conn.connect()) == "rmq3:5672", "after leaving rmq2 the next sweep starts at rmq3"
    conn.fail_over("test")
    assert str(conn.connect()) == "rmq2:5672", "rmq1 is still down: wraps to rmq1, then rmq2"
    assert cluster.connects == ["rmq1", "rmq2", "rmq3", "rmq1", "rmq2"]
    assert conn.connections_opened == 3


def test_parameters_come_from_the_config():
    cluster, conn = make(heartbeat=3)
    conn.connect()
    params = conn.connection.params
    assert params.heartbeat == 3 and params.connection_attempts == 1
    assert params.client_properties["connection_name"] == "warren"


def test_all_nodes_down_one_sweep_then_backoff():
    cluster, conn = make(backoff_initial=30, backoff_max=30)
    for node in cluster.mode:
        cluster.mode[node] = "down"
    with pytest.raises(NoNodeAvailable, match="Connection refused") as info:
        conn.connect(timeout=0)
    assert len(info.value.errors) == 3 and len(cluster.connects) == 3
    started = time.monotonic()
    with pytest.raises(NoNodeAvailable, match="waiting out the reconnect backoff"):
        conn.connect(timeout=0)  # inside the backoff: nothing tried, no waiting
    assert len(cluster.connects) == 3 and time.monotonic() - started < 0.1


def test_connect_retries_with_backoff_within_its_timeout():
    cluster, conn = make()
    now = [0.0]
    sleeps = []
    conn.clock = lambda: now[0]

    def fake_sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds
        if len(sleeps) == 3:
            cluster.mode["rmq3"] = "ok"  # a node comes back during the third wait

    conn._sleep = fake_sleep
    for node in cluster.mode:
        cluster.mode[node] = "down"
    assert str(conn.connect(timeout=10)) == "rmq3:5672"
    assert len(cluster.connects) == 4 * 3
    assert all(0.025 <= s <= 0.2 for s in sleeps), sleeps
    assert sleeps[1] <= 0.1 and conn.backoff.failures == 0

    conn.close()
    for node in cluster.mode:
        cluster.mode[node] = "down"
    with pytest.raises(NoNodeAvailable):
        conn.connect(timeout=1.0)
    assert now[0] - 0.0 < 1000 and sum(sleeps) < 0.2 * 10 + 1.0, "bounded by the timeout"


def test_lost_connection_is_noticed_while_idle():
    cluster, conn = make()
    conn.connect()
    assert conn.process(0.02) is True
    cluster.mode["rmq1"] = "lost"
    assert conn.process(0.02) is False and conn.node is None
    assert str(conn.connect()) == "rmq2:5672"


# --------------------------------------------------------------------------------------------
# publisher confirms with a deadline
# --------------------------------------------------------------------------------------------


def test_confirmed_on_the_first_node():
    cluster, conn = make()
    res = ConfirmPublisher(conn, deadline=0.3).publish("", "q", b"x", props())
    assert res.ok and res.outcome == "confirmed" and res.attempts == 1
    assert str(res.node) == "rmq1:5672" and 0 <= res.confirm_seconds <= res.seconds < 0.3
    assert cluster.published == [("rmq1", "m1")]


def test_confirm_deadline_fails_over_and_republishes_on_the_next_node():
    cluster, conn = make()
    cluster.mode["rmq1"] = "hang"
    started = time.monotonic()
    res = ConfirmPublisher(conn, deadline=0.3).publish("", "q", b"x", props("m-7"))
    elapsed = time.monotonic() - started
    assert res.outcome == "confirmed" and res.attempts == 2, res
    assert str(res.node) == "rmq2:5672"
    assert cluster.published == [("rmq1", "m-7"), ("rmq2", "m-7")], "same message, same id, again"
    assert 0.3 <= elapsed < 0.8, "waited one deadline, not pika's forever"
    assert conn.node.host == "rmq2"


def test_attempts_are_bounded_when_every_node_hangs():
    cluster, conn = make()
    for node in cluster.mode:
        cluster.mode[node] = "hang"
    started = time.monotonic()
    res = ConfirmPublisher(conn, deadline=0.2, max_attempts=2).publish("", "q", b"x", props())
    assert res.outcome == "timeout" and res.attempts == 2 and not res.ok
    assert [h for h, _ in cluster.published] == ["rmq1", "rmq2"]
    assert time.monotonic() - started < 0.7
    assert not shared_deadlines().active, "no deadline left armed"


def test_total_time_is_bounded():
    cluster, conn = make()
    for node in cluster.mode:
        cluster.mode[node] = "hang"
    started = time.monotonic()
    res = ConfirmPublisher(conn, deadline=0.8, max_attempts=10, max_seconds=1.0).publish(
        "", "q", b"x", props())
    elapsed = time.monotonic() - started
    assert res.outcome == "timeout" and res.attempts == 2, res
    assert 1.0 <= elapsed < 1.4, "max_seconds caps the call: the second attempt gets what is left"


def test_lost_connection_while_publishing_republishes_elsewhere():
    cluster, conn = make()
    cluster.mode["rmq1"] = "lost"
    res = ConfirmPublisher(conn, deadline=0.3).publish("", "q", b"x", props())
    assert res.ok and res.attempts == 2 and str(res.node) == "rmq2:5672"


def test_no_node_at_all_is_unavailable_within_max_seconds():
    cluster, conn = make()
    for node in cluster.mode:
        cluster.mode[node] = "down"
    started = time.monotonic()
    pub = ConfirmPublisher(conn, deadline=0.2, max_attempts=3, max_seconds=0.6)
    res = pub.publish("", "q", b"x", props())
    assert res.outcome == "unavailable" and res.attempts == 0
    assert time.monotonic() - started < 0.6 + 0.1
    assert len(cluster.connects) >= 6, "it kept sweeping (with backoff) while time was left"


@pytest.mark.parametrize("mode, outcome", [("nack", "nacked"), ("unroutable", "unroutable")])
def test_broker_answers_are_final_no_failover(mode, outcome):
    cluster, conn = make()
    cluster.mode["rmq1"] = mode
    res = ConfirmPublisher(conn, deadline=0.3).publish("", "q", b"x", props())
    assert res.outcome == outcome and res.attempts == 1
    assert cluster.published == [("rmq1", "m1")] and str(conn.node) == "rmq1:5672"


def test_confirm_mode_is_set_again_on_a_new_channel():
    cluster, conn = make()
    pub = ConfirmPublisher(conn, deadline=0.3)
    assert pub.publish("", "q", b"x", props()).ok
    conn.fail_over("test")
    assert pub.publish("", "q", b"y", props("m2")).ok  # FakeChannel asserts confirm mode


# --------------------------------------------------------------------------------------------
# consumer
# --------------------------------------------------------------------------------------------


def test_consumer_manual_acks_with_prefetch():
    cluster, conn = make()
    ConfirmPublisher(conn, deadline=0.3).publish("", "q", b"hello", props("a"))
    consumer = Consumer(conn, "q", prefetch=7)
    delivery = consumer.get(0.5)
    assert delivery.body == b"hello" and delivery.message_id == "a" and not delivery.redelivered
    assert conn.channel.prefetch == 7 and conn.channel.consuming == ("q", False)
    assert cluster.acked == [], "nothing is acked behind the application's back"
    assert consumer.ack(delivery) is True
    assert cluster.acked == [("rmq1", 1)]
    assert consumer.get(0.1) is None


def test_ack_after_failover_is_refused_and_consumption_resumes_elsewhere():
    cluster, conn = make()
    ConfirmPublisher(conn, deadline=0.3).publish("", "q", b"1", props("a"))
    consumer = Consumer(conn, "q")
    first = consumer.get(0.5)
    cluster.mode["rmq1"] = "lost"
    with pytest.raises(pika.exceptions.StreamLostError):
        consumer.get(0.5)
    assert consumer.ack(first) is False, "a tag of a dead channel cannot be acked"
    cluster.queue.append((props("a"), b"1"))  # the broker redelivers it
    again = consumer.get(0.5)
    assert again.message_id == "a" and str(again.node) == "rmq2:5672"
    assert consumer.ack(again) and cluster.acked == [("rmq2", 1)]


def test_recent_ids_deduplicate_and_stay_bounded():
    ids = RecentIds(size=3)
    assert [ids.seen(i) for i in ("a", "b", "a", "c", "d")] == [False, False, True, False, False]
    assert len(ids) == 3
    assert ids.seen("b") is False, "the oldest id was forgotten once the window was full"
    assert ids.seen("d") is True


# --------------------------------------------------------------------------------------------
# deadlines
# --------------------------------------------------------------------------------------------


def test_deadlines_nest_and_cut_short():
    deadlines = shared_deadlines()
    assert deadlines.enabled
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="inner"):
        with deadlines.limit(5, "outer"):
            with deadlines.limit(0.05, "inner"):
                time.sleep(2)
    assert time.monotonic() - started < 0.5
    with pytest.raises(DeadlineExceeded, match="outer"):
        with deadlines.limit(0.1, "outer"):
            with deadlines.limit(5, "inner"):
                pass
            time.sleep(2)
    with pytest.raises(DeadlineExceeded):
        with deadlines.limit(5, "long"):
            deadlines.cut_short()
            time.sleep(2)
    assert not deadlines.active and time.monotonic() - started < 1.0
    assert blocking.DeadlineExceeded in FailoverConnection.errors
