"""Unit tests for playbooks/files/loadtest_prom.py (the load test's Prometheus queries).

The catalogue must only name metrics that RabbitMQ 4.0.5 and node_exporter 1.9 really export
(tests/unit/fixtures/metric-names-4.0.5.txt was taken from a live lab node), and a failing
query must be recorded in the output instead of ending the collection.
"""

import json
import os
import re
import urllib.parse

import pytest
from utils import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
prom = load_file("loadtest_prom", os.path.join(ROOT, "playbooks", "files", "loadtest_prom.py"))
FIXTURE = os.path.join(ROOT, "tests", "unit", "fixtures", "metric-names-4.0.5.txt")

PROMQL_WORDS = {"sum", "by", "max", "avg", "rate", "host", "job", "mode", "device", "min"}


def metric_names(expr):
    """Identifiers in a PromQL expression that are metric names (not labels or functions)."""
    no_labels = re.sub(r"\{[^}]*\}", "", expr)
    no_windows = re.sub(r"\[[^\]]*\]", "", no_labels)
    no_groupings = re.sub(r"by \([^)]*\)", "", no_windows)
    words = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", no_groupings)
    return {w for w in words if w not in PROMQL_WORDS}


def test_every_catalogue_metric_exists_on_rabbitmq_4_0_5():
    with open(FIXTURE, encoding="utf-8") as f:
        known = {line.strip() for line in f if line.strip()}
    used = set()
    for key in prom.CATALOGUE:
        names = metric_names(prom.promql(key, "30s"))
        assert names, key
        used |= names
    missing = sorted(used - known)
    assert not missing, "metrics not exported by RabbitMQ 4.0.5 / node_exporter: %s" % missing


def test_catalogue_covers_what_the_issue_asks_for():
    resources = {entry[2] for entry in prom.CATALOGUE.values()}
    assert {"cpu", "memory", "disk", "network", "raft", "queues", "rates", "flow"} <= resources
    for key in ("scheduler_utilisation", "broker_fsync_latency", "raft_commit_latency",
                "queue_messages", "publish_rate", "deliver_rate", "confirm_rate",
                "memory_alarm", "disk_alarm", "unconfirmed"):
        assert key in prom.CATALOGUE
    # every query is grouped per node
    for key in prom.CATALOGUE:
        assert "by (host)" in prom.promql(key, "30s"), key


def test_rate_window_spans_two_scrapes():
    assert prom.rate_window(15, 5) == "30s"
    assert prom.rate_window(15, 60) == "60s"
    assert "[30s]" in prom.promql("broker_cpu_cores", "30s")
    assert "{w}" not in prom.promql("broker_cpu_cores", "30s")


def test_parse_matrix_groups_by_host_and_drops_nan_and_hostless_series():
    payload = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"host": "rmq1"}, "values": [[1, "0.5"], [2, "NaN"], [3, "+Inf"], [4, "1"]]},
        {"metric": {"host": "rmq2"}, "values": [[1, "2"]]},
        {"metric": {"instance": "localhost:9100"}, "values": [[1, "9"]]},
    ]}}
    series = prom.parse_matrix(payload)
    assert series == {"rmq1": [[1.0, 0.5], [4.0, 1.0]], "rmq2": [[1.0, 2.0]]}


def test_parse_matrix_rejects_errors_and_vectors():
    with pytest.raises(ValueError, match="bad_data: parse error"):
        prom.parse_matrix({"status": "error", "error": "bad_data: parse error"})
    with pytest.raises(ValueError, match="expected a matrix"):
        prom.parse_matrix({"status": "success", "data": {"resultType": "vector", "result": []}})


def test_collect_records_failures_and_keeps_going():
    calls = []

    def fetch(url, expr, start, end, step):
        calls.append((url, expr, start, end, step))
        if "rabbitmq_io_sync" in expr:
            raise OSError("connection refused")
        return {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"host": "rmq1"}, "values": [[start, "1"]]}]}}

    out = prom.collect("http://mon:9090", 100.0, 200.0, 5, 15, fetch=fetch)
    assert len(calls) == len(prom.CATALOGUE)
    assert out["window"] == "30s"
    assert out["queries"]["broker_fsync_rate"]["error"] == "connection refused"
    assert out["queries"]["broker_fsync_rate"]["series"] == {}
    assert out["queries"]["broker_cpu_cores"]["series"] == {"rmq1": [[100.0, 1.0]]}
    assert out["queries"]["broker_cpu_cores"]["error"] is None
    json.dumps(out)  # the playbook stores it as JSON


def test_query_range_builds_the_api_call(monkeypatch):
    seen = {}

    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return b'{"status": "success", "data": {"resultType": "matrix", "result": []}}'

    def urlopen(url, timeout):
        seen["url"] = url
        return Resp()

    monkeypatch.setattr(prom.urllib.request, "urlopen", urlopen)
    prom.query_range("http://127.0.0.1:9090/", "up", 10, 20, 5)
    parsed = urllib.parse.urlparse(seen["url"])
    qs = urllib.parse.parse_qs(parsed.query)
    assert parsed.path == "/api/v1/query_range"
    assert qs == {"query": ["up"], "start": ["10.000"], "end": ["20.000"], "step": ["5s"]}


def test_main_refuses_an_empty_window(capsys):
    with pytest.raises(SystemExit):
        prom.main(["--start", "10", "--end", "10"])
    assert "--end must be after --start" in capsys.readouterr().err
