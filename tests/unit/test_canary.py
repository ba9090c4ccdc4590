"""Unit tests for roles/canary/files/warren_canary.py (a script, imported by path).

pika's exceptions and BasicProperties are the real ones, and so are warren_amqp (the package
the canary runs on) and prometheus_client; connections and channels are fakes, so every
failure path can be produced without a broker. The exposition tests pin the metric names,
types, labels, help texts and buckets: the SLO rules, alerts and dashboards depend on them.
"""

import collections
import json
import os
import re
import time
import urllib.request

import pika
import pika.exceptions
import pytest
from utils import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "roles", "canary", "files", "warren_canary.py")


wc = load_file("warren_canary", SCRIPT)

NODES = ["rmq1:5672", "rmq2:5672", "rmq3:5672"]


# --------------------------------------------------------------------------------------------
# fakes
# --------------------------------------------------------------------------------------------

Method = collections.namedtuple("Method", "delivery_tag redelivered")


class FakeBroker:
    """Queues shared by every node, and what a publish does: ``mode`` (or ``node_mode[node]``
    for connections to that node) is one of
    ok | nack | unroutable | hang | lost | swallow | mangle | stale-first | lost-consume."""

    def __init__(self, mode="ok", queues=("warren.canary",)):
        self.mode = mode
        self.node_mode = {}
        self.queues = {q: collections.deque() for q in queues}
        self.declared = []   # (queue, durable, arguments, node it was declared through)
        self.published = []  # (node, queue, message_id)
        self.acked = []
        self.tag = 0
        self.on_publish = None

    def mode_for(self, node):
        return self.node_mode.get(node, self.mode)

    def deliver(self, queue, body, message_id):
        self.tag += 1
        self.queues[queue].append((pika.BasicProperties(message_id=message_id), body))


class FakeChannel:
    def __init__(self, conn):
        self.conn, self.broker = conn, conn.broker
        self.is_open = True

    def queue_declare(self, queue, passive=False, durable=False, arguments=None):
        if passive:
            if queue not in self.broker.queues:
                self.is_open = False
                raise pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue")
            return
        self.broker.queues.setdefault(queue, collections.deque())
        self.broker.declared.append((queue, durable, arguments, self.conn.node))

    def confirm_delivery(self):
        pass

    def basic_qos(self, prefetch_count=0):
        assert prefetch_count == wc.PREFETCH

    def consume(self, queue, auto_ack=False, inactivity_timeout=None):
        assert auto_ack is False
        tag = 0
        while True:
            if self.broker.mode_for(self.conn.node) == "lost-consume":
                self.conn.is_open = self.is_open = False
                raise pika.exceptions.StreamLostError("Stream connection lost")
            pending = self.broker.queues.get(queue)
            if pending:
                properties, body = pending.popleft()
                tag += 1
                yield Method(tag, False), properties, body
            else:
                time.sleep(min(inactivity_timeout, 0.01))
                yield None, None, None

    def basic_publish(self, exchange, routing_key, body, properties, mandatory=False):
        broker = self.broker
        assert properties.delivery_mode == 2 and mandatory
        broker.published.append((self.conn.node, routing_key, properties.message_id))
        if broker.on_publish:
            broker.on_publish()
        mode = broker.mode_for(self.conn.node)
        if mode == "nack":
            raise pika.exceptions.NackError([])
        if mode == "unroutable" or routing_key not in broker.queues:
            raise pika.exceptions.UnroutableError([])
        if mode == "hang":
            time.sleep(5)
        if mode == "lost":
            self.conn.is_open = self.is_open = False
            raise pika.exceptions.StreamLostError("Transport indicated EOF")
        if mode == "stale-first":
            broker.deliver(routing_key, b'{"id": "old"}', "0" * 32)
        if mode == "mangle":
            body = body + b"!"
        if mode != "swallow":
            broker.deliver(routing_key, body, properties.message_id)

    def basic_ack(self, delivery_tag):
        self.broker.acked.append((self.conn.node, delivery_tag))

    def close(self):
        self.is_open = False


class FakeConnection:
    def __init__(self, broker, node):
        self.broker = broker
        self.node = node
        self.is_open = True

    def channel(self):
        return FakeChannel(self)

    def process_data_events(self, time_limit=0):
        time.sleep(min(time_limit, 0.01))

    def close(self):
        self.is_open = False


class Connector:
    """connect_fn(params) that refuses the nodes listed in ``down``."""

    def __init__(self, broker, down=()):
        self.broker = broker
        self.down = set(down)
        self.calls = []

    def __call__(self, params):
        node = "%s:%d" % (params.host, params.port)
        self.calls.append(node)
        if node in self.down:
            raise pika.exceptions.AMQPConnectionError("Connection refused")
        return FakeConnection(self.broker, node)


def make_config(**overrides):
    raw = {"nodes": list(NODES), "vhost": "canary", "user": "warren-canary", "password": "pw",
           "confirm_timeout": 0.3, "consume_timeout": 0.3, "connect_timeout": 0.5,
           "interval": 0.5, "node_probes": False}
    raw.update(overrides)
    return wc.validate(raw)


def make_canary(mode="ok", down=(), rand=lambda: 1.0, **overrides):
    broker = FakeBroker(mode)
    connector = Connector(broker, down)
    canary = wc.Canary(make_config(**overrides), connect_fn=connector, rand=rand)
    return canary, broker, connector


def value(canary, name, **labels):
    return canary.metrics.value(name, **labels)


def probes(canary, result):
    return value(canary, "warren_canary_probes_total", result=result)


# --------------------------------------------------------------------------------------------
# exposition: the names, types, labels, help texts and buckets are an interface
# --------------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

FAMILIES = {
    "warren_canary_probes_total": ("counter", "Canary probes by result."),
    "warren_canary_publish_confirm_seconds": (
        "histogram", "Time from publish to the broker's publisher confirm, confirmed probes only."),
    "warren_canary_end_to_end_seconds": (
        "histogram", "Time from publish to delivery back to the canary, ok probes only."),
    "warren_canary_last_success_timestamp_seconds": (
        "gauge", "Unix time of the last ok probe, 0 before the first."),
    "warren_canary_stale_messages_total": (
        "counter", "Deliveries that were not the message in flight (leftovers), acked and dropped."),
    "warren_canary_connected": ("gauge", "1 on the broker node the canary is connected to."),
    "warren_canary_reconnects_total": ("counter", "Connections opened after the first one."),
    "warren_canary_build_info": ("gauge", "Canary version, always 1."),
    "warren_canary_node_probes_total": (
        "counter", "Probes through one broker node (its own connection, a queue led elsewhere) by result."),
    "warren_canary_node_up": ("gauge", "1 when the last probe through this broker node was ok."),
    "warren_canary_node_tls_cert_expiry_timestamp_seconds": (
        "gauge", "notAfter (Unix time) of the certificate the node presents on its AMQPS listener, "
        "from the last successful TLS handshake (TLS only)."),
    "warren_canary_node_tls_check_failures_total": (
        "counter", "Certificate checks that failed (no TLS handshake, or a certificate that does not "
        "verify), TLS only."),
}


def parse_exposition(text):
    """Parse text format 0.0.4 into ({name: type}, {name: help}, [(name, labels, value)])."""
    types, helps, samples = {}, {}, []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, "duplicate TYPE for %s" % name
            types[name] = kind
        elif line.startswith("# HELP "):
            _, _, name, doc = line.split(" ", 3)
            helps[name] = doc
        elif not line:
            continue
        else:
            match = SAMPLE.match(line)
            assert match, "unparsable line %r" % line
            labels = dict(LABEL.findall(match.group(3) or ""))
            samples.append((match.group(1), labels, float(match.group(4))))
    return types, helps, samples


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count", ""):
        base = name[: -len(suffix)] if suffix and name.endswith(suffix) else name
        if base in types:
            return base
    raise AssertionError("sample %s has no TYPE line" % name)


def test_exposition_families_and_initial_values():
    metrics = wc.CanaryMetrics(["rmq1:5672", "rmq2:5672"])
    types, helps, samples = parse_exposition(metrics.registry.render())
    assert types == {name: kind for name, (kind, _) in FAMILIES.items()}
    assert helps == {name: doc for name, (_, doc) in FAMILIES.items()}
    for name, _, _ in samples:
        family_of(name, types)
    assert not [n for n, _, _ in samples if n.endswith("_created")], "no _created series"
    probe_counts = {l["result"]: v for n, l, v in samples if n == "warren_canary_probes_total"}
    assert probe_counts == {r: 0 for r in wc.RESULTS}
    assert set(probe_counts) == {"ok", "publish_failed", "confirm_timeout", "consume_timeout",
                                 "connection_failed", "payload_mismatch"}
    connected = {l["node"]: v for n, l, v in samples if n == "warren_canary_connected"}
    assert connected == {"rmq1:5672": 0, "rmq2:5672": 0}
    node_probes = {(l["node"], l["result"]): v for n, l, v in samples
                   if n == "warren_canary_node_probes_total"}
    assert node_probes == {(n, r): 0 for n in ("rmq1:5672", "rmq2:5672") for r in wc.RESULTS}
    node_up = {l["node"]: v for n, l, v in samples if n == "warren_canary_node_up"}
    assert node_up == {"rmq1:5672": 0, "rmq2:5672": 0}
    info = [l for n, l, v in samples if n == "warren_canary_build_info"]
    assert info and info[0]["version"] == wc.__version__ and info[0]["pika"] == pika.__version__
    unlabelled = {n: v for n, l, v in samples if not l}
    assert unlabelled["warren_canary_stale_messages_total"] == 0
    assert unlabelled["warren_canary_reconnects_total"] == 0
    assert unlabelled["warren_canary_last_success_timestamp_seconds"] == 0
    # no rabbitmq_cluster/host label: the scrape's target labels carry them
    assert all("rabbitmq_cluster" not in l and "host" not in l for _, l, _ in samples)


def test_histogram_buckets_are_cumulative_with_sum_count_and_inf():
    metrics = wc.CanaryMetrics([])
    for observed in (0.001, 0.004, 0.02, 0.3, 0.3, 7.0, 42.0):
        metrics.end_to_end.observe(observed)
    types, _, samples = parse_exposition(metrics.registry.render())
    name = "warren_canary_end_to_end_seconds"
    buckets = [(float(l["le"]), v) for n, l, v in samples if n == name + "_bucket"]
    assert [b for b, _ in buckets] == [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                       float("inf")]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert counts == [2, 2, 3, 3, 3, 3, 5, 5, 5, 5, 6, 7]
    (count,) = [v for n, l, v in samples if n == name + "_count"]
    (total,) = [v for n, l, v in samples if n == name + "_sum"]
    assert count == 7
    assert total == pytest.approx(0.001 + 0.004 + 0.02 + 0.3 + 0.3 + 7.0 + 42.0)
    # the label values the SLO rules select on are spelled as they are in the rules
    les = {l["le"] for n, l, v in samples if n == name + "_bucket"}
    assert {"0.05", "0.25", "0.5", "+Inf"} <= les
    # the untouched histogram still exposes all its series, at zero
    confirm = [v for n, l, v in samples if n.startswith("warren_canary_publish_confirm_seconds")]
    assert len(confirm) == 14 and not any(confirm)


def test_metrics_over_http():
    metrics = wc.CanaryMetrics(["rmq1:5672"])
    metrics.probes.labels(result="ok").inc()
    server = wc.start_http_server(metrics.registry, "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            _, _, samples = parse_exposition(resp.read().decode())
        assert ("warren_canary_probes_total", {"result": "ok"}, 1.0) in samples
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# the cluster probe: rotation and backoff (through warren_amqp)
# --------------------------------------------------------------------------------------------


def connected_nodes(canary):
    return {n: value(canary, "warren_canary_connected", node=n) for n in NODES}


def test_rotation_skips_refused_nodes_and_prefers_the_next_after_a_loss():
    canary, broker, connector = make_canary(down={"rmq1:5672"})
    res = canary.probe()
    assert res.result == "ok" and res.node == "rmq2:5672"
    assert connector.calls == ["rmq1:5672", "rmq2:5672"]
    assert connected_nodes(canary) == {"rmq1:5672": 0, "rmq2:5672": 1, "rmq3:5672": 0}
    assert value(canary, "warren_canary_reconnects_total") == 0

    broker.mode = "lost"  # rmq2 dies mid-publish
    assert canary.probe().result == "publish_failed"
    assert canary.cluster_conn.connection is None and not any(connected_nodes(canary).values())

    broker.mode = "ok"
    res = canary.probe()
    assert res.node == "rmq3:5672", "after losing rmq2 the next sweep starts at rmq3"
    assert connector.calls[-1] == "rmq3:5672"
    assert value(canary, "warren_canary_reconnects_total") == 1
    assert connected_nodes(canary)["rmq3:5672"] == 1


def test_all_nodes_down_backs_off_and_counts_connection_failed():
    canary, broker, connector = make_canary(
        down=set(NODES), reconnect_backoff_initial=60, reconnect_backoff_max=60)
    res = canary.probe()
    assert res.result == "connection_failed" and "Connection refused" in res.detail
    assert len(connector.calls) == 3
    # within the backoff no node is tried, but the due probe still counts as a failure
    res = canary.probe()
    assert res.result == "connection_failed" and "backoff" in res.detail
    assert len(connector.calls) == 3
    # backoff over: a node is back
    connector.down.discard("rmq2:5672")
    canary.cluster_conn.retry_at = 0
    assert canary.probe().result == "ok"
    assert canary.cluster_conn.backoff.failures == 0


def test_client_settings_reach_warren_amqp():
    canary, _, _ = make_canary(heartbeat=7, reconnect_backoff_initial=2, reconnect_backoff_max=9,
                               rabbitmq_cluster="lab")
    client = canary.cluster_conn.config
    assert (client.heartbeat, client.backoff_initial, client.backoff_max) == (7, 2, 9)
    assert client.connect_timeout == 0.5 and client.connection_name.endswith("(lab)")
    assert canary.cluster.publisher.deadline == 0.3 and canary.cluster.publisher.max_attempts == 1


# --------------------------------------------------------------------------------------------
# results of the cluster probe
# --------------------------------------------------------------------------------------------


def test_ok_probe_observes_both_latencies():
    canary, broker, _ = make_canary()
    res = canary.probe()
    canary.record(res)
    assert res.result == "ok" and res.stale == 0
    assert 0 <= res.confirm_seconds <= res.end_to_end_seconds < 1
    assert probes(canary, "ok") == 1
    assert value(canary, "warren_canary_publish_confirm_seconds_count") == 1
    assert value(canary, "warren_canary_end_to_end_seconds_count") == 1
    assert value(canary, "warren_canary_last_success_timestamp_seconds") == pytest.approx(time.time(), abs=5)
    assert broker.acked == [("rmq1:5672", 1)]


def test_missing_queue_is_declared_as_durable_quorum_queue():
    canary, broker, _ = make_canary()
    broker.queues.clear()
    assert canary.probe().result == "ok"
    assert broker.declared == [("warren.canary", True, {"x-queue-type": "quorum"}, "rmq1:5672")]


@pytest.mark.parametrize("mode, expected", [
    ("nack", "publish_failed"),
    ("unroutable", "publish_failed"),
    ("lost", "publish_failed"),
    ("hang", "confirm_timeout"),
    ("swallow", "consume_timeout"),
    ("lost-consume", "consume_timeout"),
    ("mangle", "payload_mismatch"),
])
def test_failure_classification(mode, expected):
    canary, broker, _ = make_canary(mode)
    started = time.monotonic()
    res = canary.probe()
    canary.record(res)
    assert res.result == expected, res.detail
    assert time.monotonic() - started < 2, "every failure path is bounded by its timeout"
    assert probes(canary, expected) == 1
    assert probes(canary, "ok") == 0
    assert value(canary, "warren_canary_end_to_end_seconds_count") == 0
    assert value(canary, "warren_canary_last_success_timestamp_seconds") == 0
    confirmed = 1 if expected in ("consume_timeout", "payload_mismatch") else 0
    assert value(canary, "warren_canary_publish_confirm_seconds_count") == confirmed
    if mode in ("hang", "lost", "lost-consume"):
        assert canary.cluster_conn.connection is None, "a connection cut short is never reused"


def test_confirm_timeout_is_not_retried_within_the_probe():
    """The SLI counts what a client without retries would see; the next probe goes elsewhere."""
    canary, broker, _ = make_canary()
    broker.node_mode["rmq1:5672"] = "hang"
    assert canary.probe().result == "confirm_timeout"
    assert [n for n, _, _ in broker.published] == ["rmq1:5672"]
    assert canary.probe().result == "ok" and canary.cluster.node == "rmq2:5672"


def test_connection_refused_everywhere_is_connection_failed():
    canary, _, _ = make_canary(down=set(NODES))
    res = canary.probe()
    canary.record(res)
    assert res.result == "connection_failed"
    assert probes(canary, "connection_failed") == 1


def test_stale_messages_are_acked_and_counted_not_errors():
    canary, broker, _ = make_canary("stale-first")
    res = canary.probe()
    canary.record(res)
    assert res.result == "ok" and res.stale == 1
    assert value(canary, "warren_canary_stale_messages_total") == 1
    assert broker.acked == [("rmq1:5672", 1), ("rmq1:5672", 2)]


def test_late_delivery_of_a_timed_out_probe_is_stale_next_time():
    canary, broker, _ = make_canary("swallow")
    first = canary.probe()
    assert first.result == "consume_timeout"
    broker.deliver("warren.canary", b"late", first.message_id)  # delivered after all
    broker.mode = "ok"
    second = canary.probe()
    assert second.result == "ok" and second.stale == 1


def test_unroutable_redeclares_on_next_probe():
    canary, broker, _ = make_canary("unroutable")
    assert canary.probe().result == "publish_failed"
    assert canary.cluster.consumer is None and canary.cluster_conn.connection is not None
    broker.mode = "ok"
    broker.queues.clear()
    assert canary.probe().result == "ok"
    assert broker.declared


def test_run_loop_is_paced_and_stops():
    canary, broker, _ = make_canary(interval=0.5)

    def stop_after_three():
        if len(broker.published) >= 3:
            canary.stop()

    broker.on_publish = stop_after_three
    started = time.monotonic()
    canary.run()
    elapsed = time.monotonic() - started
    assert len(broker.published) == 3
    assert 0.9 <= elapsed < 3, "one probe per interval"
    assert probes(canary, "ok") == 2  # the one cut by stop is not counted
    assert canary.cluster_conn.connection is None


# --------------------------------------------------------------------------------------------
# node probes: one connection per node, a queue led by another node
# --------------------------------------------------------------------------------------------


def node_up(canary):
    return {n: value(canary, "warren_canary_node_up", node=n) for n in NODES}


def test_node_probes_go_through_every_node_to_a_queue_led_elsewhere():
    canary, broker, connector = make_canary(node_probes=True)
    results = canary.probe_nodes()
    assert {n: r.result for n, r in results.items()} == {n: "ok" for n in NODES}
    assert node_up(canary) == {n: 1 for n in NODES}
    for node in NODES:
        assert value(canary, "warren_canary_node_probes_total", node=node, result="ok") == 1
    # each node publishes its own queue through its own connection...
    assert [(n, q) for n, q, _ in broker.published] == [
        ("rmq1:5672", "warren.canary.node.rmq1"), ("rmq2:5672", "warren.canary.node.rmq2"),
        ("rmq3:5672", "warren.canary.node.rmq3")]
    # ...and that queue was declared through the next node, with its leader there
    assert [(q, via, a.get("x-queue-leader-locator")) for q, _, a, via in broker.declared] == [
        ("warren.canary.node.rmq1", "rmq2:5672", "client-local"),
        ("warren.canary.node.rmq2", "rmq3:5672", "client-local"),
        ("warren.canary.node.rmq3", "rmq1:5672", "client-local")]
    assert all(a["x-queue-type"] == "quorum" for _, _, a, _ in broker.declared)
    # the SLI's counters are untouched by node probes
    assert sum(probes(canary, r) for r in wc.RESULTS) == 0


def test_a_node_that_accepts_connections_but_cannot_serve_shows_up_in_one_round():
    canary, broker, _ = make_canary(node_probes=True)
    canary.record(canary.probe())
    canary.probe_nodes()
    broker.node_mode["rmq2:5672"] = "hang"  # connections fine, confirms never come
    started = time.monotonic()
    canary.record(canary.probe())
    results = canary.probe_nodes()
    assert time.monotonic() - started < 2, "one round, bounded by the confirm timeout"
    assert results["rmq2:5672"].result == "confirm_timeout"
    assert node_up(canary) == {"rmq1:5672": 1, "rmq2:5672": 0, "rmq3:5672": 1}
    assert value(canary, "warren_canary_node_probes_total", node="rmq2:5672",
                 result="confirm_timeout") == 1
    assert probes(canary, "ok") == 2, "the cluster probe (on rmq1) saw nothing: hence node probes"
    broker.node_mode.clear()
    canary.probe_nodes()
    assert node_up(canary)["rmq2:5672"] == 1


def test_a_down_node_is_connection_failed_and_its_queue_is_declared_elsewhere():
    canary, broker, connector = make_canary(node_probes=True, down={"rmq2:5672"})
    results = canary.probe_nodes()
    assert results["rmq2:5672"].result == "connection_failed"
    assert results["rmq1:5672"].result == "ok" and results["rmq3:5672"].result == "ok"
    assert node_up(canary) == {"rmq1:5672": 1, "rmq2:5672": 0, "rmq3:5672": 1}
    via = {q: n for q, _, _, n in broker.declared}
    assert via["warren.canary.node.rmq1"] == "rmq3:5672", "rmq2 is down: the one after it"


def test_single_node_declares_its_own_queue():
    canary, broker, _ = make_canary(node_probes=True, nodes=["rmq1:5672"])
    assert canary.probe_nodes()["rmq1:5672"].result == "ok"
    assert [(q, via) for q, _, _, via in broker.declared] == [("warren.canary.node.rmq1", "rmq1:5672")]


def test_node_queue_names():
    nodes = make_config(nodes=["a:1", "a:2", "b:3"]).nodes
    assert [wc.node_queue_name("q", n, nodes) for n in nodes] == ["q.node.a-1", "q.node.a-2", "q.node.b"]


def test_once_prints_json(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"nodes": ["rmq1:5672", "rmq2:5672"], "vhost": "canary", "user": "u",
                               "password": "p", "rabbitmq_cluster": "lab"}))
    broker = FakeBroker()
    monkeypatch.setattr(pika, "BlockingConnection",
                        lambda params: FakeConnection(broker, "%s:%d" % (params.host, params.port)))
    assert wc.main(["--config", str(cfg), "--once"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"] == "ok" and out["node"] == "rmq1:5672" and out["rabbitmq_cluster"] == "lab"
    assert {n: r["result"] for n, r in out["nodes"].items()} == {"rmq1:5672": "ok", "rmq2:5672": "ok"}
    broker.node_mode["rmq2:5672"] = "nack"  # one node failing is enough for exit 1
    assert wc.main(["--config", str(cfg), "--once"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["result"] == "ok" and out["nodes"]["rmq2:5672"]["result"] == "publish_failed"


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def test_defaults():
    cfg = wc.validate({"nodes": ["rmq1", "[::1]:5673"], "vhost": "canary", "user": "u",
                       "password": "p"})
    assert cfg.nodes == [("rmq1", 5672), ("::1", 5673)]
    assert cfg.node_names == ["rmq1:5672", "[::1]:5673"]
    assert (cfg.interval, cfg.confirm_timeout, cfg.consume_timeout) == (5.0, 5.0, 5.0)
    assert (cfg.listen_address, cfg.listen_port) == ("0.0.0.0", 9491)
    assert cfg.queue == "warren.canary" and cfg.tls is False and cfg.node_probes is True
    assert cfg.client.heartbeat == 30 and cfg.client.backoff_max == 10
    assert "password" not in cfg.public()


def test_ini_config_and_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    ini = tmp_path / "canary.ini"
    ini.write_text("[canary]\nnodes = rmq1:5671, rmq2:5671\n rmq3:5671\nvhost = canary\n"
                   "user = warren-canary\npassword_file = %s\ntls = yes\n"
                   "tls_verify_hostname = off\ninterval = 2.5\nlisten_port = 9500\n"
                   "node_probes = no\nheartbeat = 12\n" % secret)
    cfg = wc.load_config(str(ini))
    assert cfg.node_names == ["rmq1:5671", "rmq2:5671", "rmq3:5671"]
    assert cfg.client.password == "s3cret" and cfg.tls and not cfg.tls_verify_hostname
    assert cfg.interval == 2.5 and cfg.listen_port == 9500 and cfg.node_probes is False
    assert cfg.client.heartbeat == 12 and cfg.client.verify_hostname is False
    assert wc.validate({"nodes": ["rmq1"], "vhost": "v", "user": "u", "password": "p",
                        "tls": True}).nodes == [("rmq1", 5671)]


BASE = {"nodes": ["rmq1:5672"], "vhost": "canary", "user": "u", "password": "p"}


@pytest.mark.parametrize("change, message", [
    ({"nodes": None}, "missing required key(s): nodes"),
    ({"vhost": ""}, "missing required key(s): vhost"),
    ({"intervall": 5}, "unknown key(s) intervall"),
    ({"nodes": "rmq1:5672"}, "'nodes' must be a non-empty list"),
    ({"nodes": ["rmq1:99999"]}, "port must be 1-65535"),
    ({"nodes": ["rmq1:abc"]}, "port must be 1-65535"),
    ({"nodes": ["::1:5672"]}, "write IPv6 addresses as [addr]:port"),
    ({"nodes": ["rmq1:5672", "rmq1:5672"]}, "lists a node twice"),
    ({"password_file": "/x"}, "exactly one of 'password' and 'password_file'"),
    ({"password": None}, "exactly one of 'password' and 'password_file'"),
    ({"interval": 0}, "'interval' must be a positive number of seconds"),
    ({"interval": 0.1}, "'interval' must be at least 0.5 seconds"),
    ({"confirm_timeout": "soon"}, "'confirm_timeout' must be a number"),
    ({"connect_timeout": -1}, "'connect_timeout' must be a positive number of seconds"),
    ({"heartbeat": -1}, "'heartbeat' must be 0 (off)"),
    ({"listen_port": 70000}, "'listen_port' must be 1-65535"),
    ({"tls": "maybe"}, "'tls' must be true or false"),
    ({"node_probes": "maybe"}, "'node_probes' must be true or false"),
    ({"tls_ca_file": "/etc/ssl/ca.pem"}, "'tls_ca_file' is set but 'tls' is false"),
    ({"tls": True, "tls_ca_file": "/nonexistent/ca.pem"}, "no such file /nonexistent/ca.pem"),
    ({"tls": True, "tls_cert_file": "/x"}, "set both 'tls_cert_file' and 'tls_key_file'"),
    ({"reconnect_backoff_max": 0.5}, "'reconnect_backoff_max' must not be below 'reconnect_backoff_initial'"),
    ({"password": None, "password_file": "/nonexistent/pw"}, "cannot read password_file"),
])
def test_config_errors_are_clear(change, message):
    raw = dict(BASE)
    raw.update(change)
    raw = {k: v for k, v in raw.items() if not (k in change and v is None)}
    with pytest.raises(wc.ConfigError) as info:
        wc.validate(raw, source="canary.json")
    assert message in str(info.value)
    assert str(info.value).startswith("canary.json: ")


def test_config_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(wc.ConfigError, match="invalid JSON"):
        wc.load_config(str(bad))
    ini = tmp_path / "x.ini"
    ini.write_text("[other]\na = b\n")
    with pytest.raises(wc.ConfigError, match=r"no \[canary\] section"):
        wc.load_config(str(ini))
    with pytest.raises(wc.ConfigError, match="cannot read config file"):
        wc.load_config(str(tmp_path / "missing.json"))
    assert wc.main(["--config", str(bad), "--check-config"]) == 2
    assert "config error: " in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text(json.dumps(BASE))
    assert wc.main(["--config", str(good), "--check-config"]) == 0
    assert "p" not in json.loads(capsys.readouterr().out).values()


# --------------------------------------------------------------------------------------------
# certificate expiry (a real TLS handshake against a local listener)
# --------------------------------------------------------------------------------------------


def _make_ca_and_server_cert(tmp_path, not_after):
    """A CA and a server certificate for 127.0.0.1/localhost valid until ``not_after``."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.timezone.utc))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {}
    for label, data in (("ca", ca.public_bytes(serialization.Encoding.PEM)),
                        ("cert", cert.public_bytes(serialization.Encoding.PEM)),
                        ("key", key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))):
        paths[label] = tmp_path / (label + ".pem")
        paths[label].write_bytes(data)
    return paths


def _tls_listener(paths):
    """A TLS server on 127.0.0.1 that completes handshakes until closed; returns (port, stop)."""
    import socket
    import ssl
    import threading

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(paths["cert"]), str(paths["key"]))
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()

    def close():
        stop.set()
        server.close()

    return server.getsockname()[1], close


def test_cert_check_reports_the_certificates_not_after_and_failures(tmp_path):
    not_after = int(time.time()) + 20 * 86400
    paths = _make_ca_and_server_cert(tmp_path, not_after)
    port, close = _tls_listener(paths)
    try:
        cfg = wc.validate({"nodes": ["localhost:%d" % port, "127.0.0.1:1"], "vhost": "canary",
                           "user": "u", "password": "p", "tls": True,
                           "tls_ca_file": str(paths["ca"]), "connect_timeout": 2})
        canary = wc.Canary(cfg, connect_fn=lambda params: None)
        results = canary.check_certs()
    finally:
        close()
    good, bad = "localhost:%d" % port, "127.0.0.1:1"
    # X.509 times have one-second resolution
    assert results[good] == not_after
    assert results[bad] is None
    m = canary.metrics
    assert m.value("warren_canary_node_tls_cert_expiry_timestamp_seconds", node=good) == not_after
    assert m.value("warren_canary_node_tls_check_failures_total", node=good) == 0
    assert m.value("warren_canary_node_tls_check_failures_total", node=bad) == 1


def test_cert_check_refuses_a_certificate_from_another_ca(tmp_path):
    paths = _make_ca_and_server_cert(tmp_path, int(time.time()) + 86400)
    other = tmp_path / "other"
    other.mkdir()
    other_ca = _make_ca_and_server_cert(other, int(time.time()) + 86400)["ca"]
    port, close = _tls_listener(paths)
    try:
        cfg = wc.validate({"nodes": ["localhost:%d" % port], "vhost": "canary", "user": "u",
                           "password": "p", "tls": True, "tls_ca_file": str(other_ca)})
        canary = wc.Canary(cfg, connect_fn=lambda params: None)
        assert canary.check_certs() == {"localhost:%d" % port: None}
    finally:
        close()
    assert canary.metrics.value("warren_canary_node_tls_check_failures_total",
                                node="localhost:%d" % port) == 1


def test_cert_check_is_off_without_tls_and_validated():
    cfg = wc.validate({"nodes": ["rmq1"], "vhost": "canary", "user": "u", "password": "p"})
    assert cfg.cert_check_interval == 600
    assert wc.Canary(cfg, connect_fn=lambda params: None).check_certs() == {}
    with pytest.raises(wc.ConfigError, match="cert_check_interval"):
        wc.validate({"nodes": ["rmq1"], "vhost": "canary", "user": "u", "password": "p",
                     "cert_check_interval": -1})
