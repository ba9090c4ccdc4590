"""Unit tests for roles/canary/files/warren_canary.py (a script, imported by path).

pika's exceptions and BasicProperties are the real ones (pika is in the venv); connections and
channels are fakes, so every failure path can be produced without a broker.
"""

import collections
import json
import math
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


# --------------------------------------------------------------------------------------------
# fakes
# --------------------------------------------------------------------------------------------

Method = collections.namedtuple("Method", "delivery_tag")


class FakeBroker:
    """Holds queues and decides what a publish does: ``mode`` is one of
    ok | nack | unroutable | hang | lost | swallow | mangle | stale-first | lost-consume."""

    def __init__(self, mode="ok", queues=("warren.canary",)):
        self.mode = mode
        self.queues = set(queues)
        self.declared = []
        self.published = []
        self.acked = []
        self.pending = collections.deque()
        self.tag = 0
        self.on_publish = None

    def deliver(self, body, message_id):
        self.tag += 1
        self.pending.append((Method(self.tag), pika.BasicProperties(message_id=message_id), body))


class FakeChannel:
    def __init__(self, broker):
        self.broker = broker
        self.closed = False

    def queue_declare(self, queue, passive=False, durable=False, arguments=None):
        if passive:
            if queue not in self.broker.queues:
                self.closed = True
                raise pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue")
            return
        self.broker.queues.add(queue)
        self.broker.declared.append((queue, durable, arguments))

    def confirm_delivery(self):
        pass

    def basic_qos(self, prefetch_count=0):
        pass

    def consume(self, queue, auto_ack=False, inactivity_timeout=None):
        assert auto_ack is False
        broker = self.broker
        while True:
            if broker.mode == "lost-consume":
                raise pika.exceptions.StreamLostError("Stream connection lost")
            if broker.pending:
                yield broker.pending.popleft()
            else:
                time.sleep(min(inactivity_timeout, 0.01))
                yield None, None, None

    def basic_publish(self, exchange, routing_key, body, properties, mandatory=False):
        broker = self.broker
        assert properties.delivery_mode == 2 and mandatory
        broker.published.append(properties.message_id)
        if broker.on_publish:
            broker.on_publish()
        mode = broker.mode
        if mode == "nack":
            raise pika.exceptions.NackError([])
        if mode == "unroutable":
            raise pika.exceptions.UnroutableError([])
        if mode == "hang":
            time.sleep(5)
        if mode == "lost":
            raise pika.exceptions.StreamLostError("Transport indicated EOF")
        if mode == "stale-first":
            broker.deliver(b'{"id": "old"}', "0" * 32)
        if mode == "mangle":
            body = body + b"!"
        if mode != "swallow":
            broker.deliver(body, properties.message_id)

    def basic_ack(self, delivery_tag):
        self.broker.acked.append(delivery_tag)

    def close(self):
        self.closed = True


class FakeConnection:
    def __init__(self, broker, node):
        self.broker = broker
        self.node = node
        self.is_open = True
        self.events = 0

    def channel(self):
        return FakeChannel(self.broker)

    def process_data_events(self, time_limit=0):
        self.events += 1
        time.sleep(min(time_limit, 0.01))

    def close(self):
        self.is_open = False


class Connector:
    """connect(host, port) that refuses the nodes listed in ``down``."""

    def __init__(self, broker, down=()):
        self.broker = broker
        self.down = set(down)
        self.calls = []

    def __call__(self, host, port):
        node = "%s:%d" % (host, port)
        self.calls.append(node)
        if node in self.down:
            raise pika.exceptions.AMQPConnectionError("Connection refused")
        return FakeConnection(self.broker, node)


def make_config(**overrides):
    raw = {"nodes": ["rmq1:5672", "rmq2:5672", "rmq3:5672"], "vhost": "canary",
           "user": "warren-canary", "password": "pw", "confirm_timeout": 0.3,
           "consume_timeout": 0.3, "connect_timeout": 0.5, "interval": 0.5}
    raw.update(overrides)
    return wc.validate(raw)


def make_canary(mode="ok", down=(), rand=lambda: 1.0, **overrides):
    broker = FakeBroker(mode)
    connector = Connector(broker, down)
    canary = wc.Canary(make_config(**overrides), connect=connector, pika_module=pika, rand=rand)
    return canary, broker, connector


# --------------------------------------------------------------------------------------------
# exposition format
# --------------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text):
    """Parse text format 0.0.4 into ({name: type}, [(name, labels, value)])."""
    types, samples = {}, []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, "duplicate TYPE for %s" % name
            types[name] = kind
        elif line.startswith("# HELP ") or not line:
            continue
        else:
            match = SAMPLE.match(line)
            assert match, "unparsable line %r" % line
            labels = dict(LABEL.findall(match.group(3) or ""))
            samples.append((match.group(1), labels, float(match.group(4))))
    return types, samples


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count", ""):
        base = name[: -len(suffix)] if suffix and name.endswith(suffix) else name
        if base in types:
            return base
    raise AssertionError("sample %s has no TYPE line" % name)


def test_exposition_families_and_initial_values():
    metrics = wc.CanaryMetrics(["rmq1:5672", "rmq2:5672"])
    types, samples = parse_exposition(metrics.registry.render())
    assert types == {
        "warren_canary_probes_total": "counter",
        "warren_canary_publish_confirm_seconds": "histogram",
        "warren_canary_end_to_end_seconds": "histogram",
        "warren_canary_last_success_timestamp_seconds": "gauge",
        "warren_canary_stale_messages_total": "counter",
        "warren_canary_connected": "gauge",
        "warren_canary_reconnects_total": "counter",
        "warren_canary_build_info": "gauge",
    }
    for name, _, _ in samples:
        family_of(name, types)
    probes = {l["result"]: v for n, l, v in samples if n == "warren_canary_probes_total"}
    assert probes == {r: 0 for r in wc.RESULTS}
    assert set(probes) == {"ok", "publish_failed", "confirm_timeout", "consume_timeout",
                           "connection_failed", "payload_mismatch"}
    connected = {l["node"]: v for n, l, v in samples if n == "warren_canary_connected"}
    assert connected == {"rmq1:5672": 0, "rmq2:5672": 0}
    info = [l for n, l, v in samples if n == "warren_canary_build_info"]
    assert info and info[0]["version"] == wc.__version__
    assert "warren_canary_stale_messages_total 0\n" in metrics.registry.render(), "no empty {}"
    # no rabbitmq_cluster/host label: the scrape's target labels carry them
    assert all("rabbitmq_cluster" not in l and "host" not in l for _, l, _ in samples)


def test_histogram_buckets_are_cumulative_with_sum_count_and_inf():
    metrics = wc.CanaryMetrics([])
    for value in (0.001, 0.004, 0.02, 0.3, 0.3, 7.0, 42.0):
        metrics.end_to_end.observe(value)
    types, samples = parse_exposition(metrics.registry.render())
    name = "warren_canary_end_to_end_seconds"
    buckets = [(l["le"], v) for n, l, v in samples if n == name + "_bucket"]
    bounds = [b for b, _ in buckets]
    assert bounds == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
                      "10", "+Inf"]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert dict(buckets) == {"0.005": 2, "0.01": 2, "0.025": 3, "0.05": 3, "0.1": 3, "0.25": 3,
                             "0.5": 5, "1": 5, "2.5": 5, "5": 5, "10": 6, "+Inf": 7}
    (count,) = [v for n, l, v in samples if n == name + "_count"]
    (total,) = [v for n, l, v in samples if n == name + "_sum"]
    assert count == 7 == dict(buckets)["+Inf"]
    assert math.isclose(total, 0.001 + 0.004 + 0.02 + 0.3 + 0.3 + 7.0 + 42.0)
    # the untouched histogram still exposes all its series, at zero
    confirm = [v for n, l, v in samples if n.startswith("warren_canary_publish_confirm_seconds")]
    assert len(confirm) == 14 and not any(confirm)


def test_label_values_are_escaped():
    gauge = wc.Gauge("x", "help", ["node"])
    gauge.set(1, node='a"b\\c\nd')
    assert gauge.lines() == ['x{node="a\\"b\\\\c\\nd"} 1']


def test_metrics_over_http():
    metrics = wc.CanaryMetrics(["rmq1:5672"])
    metrics.probes.inc(result="ok")
    server = wc.start_http_server(metrics.registry, "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            types, samples = parse_exposition(resp.read().decode())
        assert ("warren_canary_probes_total", {"result": "ok"}, 1.0) in samples
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen("http://127.0.0.1:%d/nope" % port, timeout=5)
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# backoff and rotation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 40))
def test_backoff_bounds(attempt):
    ceiling = min(30.0, 1.0 * 2 ** (attempt - 1))
    low = wc.backoff_delay(attempt, 1.0, 30.0, rand=lambda: 0.0)
    high = wc.backoff_delay(attempt, 1.0, 30.0, rand=lambda: 1.0 - 1e-12)
    assert low == pytest.approx(ceiling / 2)
    assert high == pytest.approx(ceiling)
    assert 0.5 <= low <= high <= 30.0
    for _ in range(50):
        assert low <= wc.backoff_delay(attempt, 1.0, 30.0) <= high


def test_backoff_grows_then_caps():
    highs = [wc.backoff_delay(n, 0.5, 8.0, rand=lambda: 1.0) for n in range(1, 10)]
    assert highs == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert wc.backoff_delay(10 ** 6, 1.0, 30.0, rand=lambda: 1.0) == 30.0


def connected_nodes(canary):
    return {node: v for (node,), v in canary.metrics.connected._values.items()}


def test_rotation_skips_refused_nodes_and_prefers_the_next_after_a_loss():
    canary, broker, connector = make_canary(down={"rmq1:5672"})
    res = canary.probe()
    assert res.result == "ok" and res.node == "rmq2:5672"
    assert connector.calls == ["rmq1:5672", "rmq2:5672"]
    assert connected_nodes(canary) == {"rmq1:5672": 0, "rmq2:5672": 1, "rmq3:5672": 0}
    assert canary.metrics.reconnects.value() == 0

    broker.mode = "lost"  # rmq2 dies mid-publish
    assert canary.probe().result == "publish_failed"
    assert canary.conn is None and not any(connected_nodes(canary).values())

    broker.mode = "ok"
    res = canary.probe()
    assert res.node == "rmq3:5672", "after losing rmq2 the next sweep starts at rmq3"
    assert connector.calls[-1] == "rmq3:5672"
    assert canary.metrics.reconnects.value() == 1
    assert connected_nodes(canary)["rmq3:5672"] == 1


def test_all_nodes_down_backs_off_and_counts_connection_failed():
    canary, broker, connector = make_canary(
        down={"rmq1:5672", "rmq2:5672", "rmq3:5672"}, reconnect_backoff_initial=60,
        reconnect_backoff_max=60)
    res = canary.probe()
    assert res.result == "connection_failed" and "Connection refused" in res.detail
    assert len(connector.calls) == 3
    # within the backoff no node is tried, but the due probe still counts as a failure
    res = canary.probe()
    assert res.result == "connection_failed" and "backoff" in res.detail
    assert len(connector.calls) == 3
    # backoff over: a node is back
    connector.down.discard("rmq2:5672")
    canary.next_sweep_at = 0
    assert canary.probe().result == "ok"
    assert canary.failed_sweeps == 0


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


def test_ok_probe_observes_both_latencies():
    canary, broker, _ = make_canary()
    res = canary.probe()
    canary.record(res)
    assert res.result == "ok" and res.stale == 0
    assert 0 <= res.confirm_seconds <= res.end_to_end_seconds < 1
    m = canary.metrics
    assert m.probes.value(result="ok") == 1
    assert m.confirm._count == 1 and m.end_to_end._count == 1
    assert m.last_success.value() == pytest.approx(time.time(), abs=5)
    assert broker.acked == [1]


def test_missing_queue_is_declared_as_durable_quorum_queue():
    canary, broker, _ = make_canary()
    broker.queues.clear()
    assert canary.probe().result == "ok"
    assert broker.declared == [("warren.canary", True, {"x-queue-type": "quorum"})]


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
    m = canary.metrics
    assert m.probes.value(result=expected) == 1
    assert m.probes.value(result="ok") == 0
    assert m.end_to_end._count == 0
    assert m.last_success.value() == 0
    if expected in ("consume_timeout", "payload_mismatch"):
        assert m.confirm._count == 1  # it was confirmed
    if mode in ("hang", "lost", "lost-consume"):
        assert canary.conn is None, "a connection cut short is never reused"


def test_connection_refused_everywhere_is_connection_failed():
    canary, _, _ = make_canary(down={"rmq1:5672", "rmq2:5672", "rmq3:5672"})
    res = canary.probe()
    canary.record(res)
    assert res.result == "connection_failed"
    assert canary.metrics.probes.value(result="connection_failed") == 1


def test_stale_messages_are_acked_and_counted_not_errors():
    canary, broker, _ = make_canary("stale-first")
    res = canary.probe()
    canary.record(res)
    assert res.result == "ok" and res.stale == 1
    assert canary.metrics.stale.value() == 1
    assert broker.acked == [1, 2]


def test_late_delivery_of_a_timed_out_probe_is_stale_next_time():
    canary, broker, _ = make_canary("swallow")
    first = canary.probe()
    assert first.result == "consume_timeout"
    broker.deliver(b"late", first.message_id)  # the broker delivers it after all
    broker.mode = "ok"
    second = canary.probe()
    assert second.result == "ok" and second.stale == 1


def test_unroutable_redeclares_on_next_probe():
    canary, broker, _ = make_canary("unroutable")
    assert canary.probe().result == "publish_failed"
    assert canary.channel is None and canary.conn is not None
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
    assert canary.metrics.probes.value(result="ok") == 2  # the one cut by stop is not counted
    assert canary.conn is None


def test_once_prints_json(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"nodes": ["rmq1:5672"], "vhost": "canary", "user": "u",
                               "password": "p", "rabbitmq_cluster": "lab"}))
    broker = FakeBroker()
    monkeypatch.setattr(wc.Canary, "_pika_connect", lambda self, h, p: FakeConnection(broker, h))
    assert wc.main(["--config", str(cfg), "--once"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"] == "ok" and out["node"] == "rmq1:5672" and out["rabbitmq_cluster"] == "lab"
    broker.mode = "nack"
    assert wc.main(["--config", str(cfg), "--once"]) == 1


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
    assert cfg.queue == "warren.canary" and cfg.tls is False
    assert "password" not in cfg.public()


def test_ini_config_and_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    ini = tmp_path / "canary.ini"
    ini.write_text("[canary]\nnodes = rmq1:5671, rmq2:5671\n rmq3:5671\nvhost = canary\n"
                   "user = warren-canary\npassword_file = %s\ntls = yes\n"
                   "tls_verify_hostname = off\ninterval = 2.5\nlisten_port = 9500\n" % secret)
    cfg = wc.load_config(str(ini))
    assert cfg.node_names == ["rmq1:5671", "rmq2:5671", "rmq3:5671"]
    assert cfg.password == "s3cret" and cfg.tls and not cfg.tls_verify_hostname
    assert cfg.interval == 2.5 and cfg.listen_port == 9500
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
    ({"listen_port": 70000}, "'listen_port' must be 1-65535"),
    ({"tls": "maybe"}, "'tls' must be true or false"),
    ({"tls_ca_file": "/etc/ssl/ca.pem"}, "'tls_ca_file' is set but 'tls' is false"),
    ({"tls": True, "tls_ca_file": "/nonexistent/ca.pem"}, "no such file /nonexistent/ca.pem"),
    ({"tls": True, "tls_cert_file": "/x"}, "set both 'tls_cert_file' and 'tls_key_file'"),
    ({"reconnect_backoff_max": 0.5}, "must not be below 'reconnect_backoff_initial'"),
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
