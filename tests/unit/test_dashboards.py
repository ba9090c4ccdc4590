"""Checks on the generated Grafana dashboards (tools/dashboards/build.py).

Metric names are checked against tests/unit/fixtures/metric-names-4.0.5.txt, saved from a live
RabbitMQ 4.0.5 node and node_exporter 1.9.0 (the command is the file's first line).
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
from utils import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, "tools", "dashboards", "build.py")
OUT_DIR = os.path.join(ROOT, "roles", "grafana", "files", "dashboards")
FIXTURE = os.path.join(ROOT, "tests", "unit", "fixtures", "metric-names-4.0.5.txt")

# Series Prometheus synthesises for every target; no exporter exposes them.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                        "scrape_samples_post_metric_relabeling", "scrape_series_added"}
SKIP_PREFIXES = ("warren_canary_",)  # the canary's own names, tested in test_canary.py
# ("node" is not here: warren_canary_connected{node="host:port"} is the canary's own label)
KUBERNETES_LABELS = {"namespace", "pod", "container", "service", "endpoint",
                     "kubernetes_namespace", "kubernetes_pod_name", "k8s_namespace"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan", "atan2",
            # aggregations, which may be followed by a by/without clause instead of "("
            "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
            "quantile", "count_values", "limitk", "limit_ratio"}
# names whose "(" follows: functions and aggregations
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\$\{?\w+\}?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]?'
                   r'|[A-Za-z_:][\w:]*|\S')


build = load_file("warren_dashboards_build", BUILD)


def dashboards():
    out = {}
    for name in sorted(os.listdir(OUT_DIR)):
        if name.endswith(".json"):
            with open(os.path.join(OUT_DIR, name), encoding="utf-8") as handle:
                out[name] = json.load(handle)
    return out


def panels(dashboard):
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel


def all_queries():
    """(dashboard uid, where, expr) for every panel target and every query variable."""
    for dashboard in dashboards().values():
        for panel in panels(dashboard):
            for t in panel["targets"]:
                yield dashboard["uid"], panel["title"], t["expr"]
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                yield dashboard["uid"], "variable " + variable["name"], variable["query"]


def parse_expr(expr):
    """(metric names, label names) referenced by a PromQL expression (or label_values())."""
    tokens = TOKEN.findall(expr)
    metrics, labels = set(), set()
    depth_braces = 0
    in_grouping = 0  # inside by(...)/on(...)/...: names there are labels
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "{":
            depth_braces += 1
        elif tok == "}":
            depth_braces -= 1
        elif tok in ("by", "without", "on", "ignoring", "group_left", "group_right") and nxt == "(":
            in_grouping = 1
            i += 2
            continue
        elif in_grouping and tok == ")":
            in_grouping = 0
        elif tok == "[":  # range or subquery duration: skip to ]
            while i < len(tokens) and tokens[i] != "]":
                i += 1
        elif re.match(r"^[A-Za-z_:][\w:]*$", tok):
            if depth_braces or in_grouping:
                if nxt in ("=", "!", "=~", "!~") or in_grouping:
                    labels.add(tok)
            elif nxt == "(" or tok.lower() in KEYWORDS:
                pass
            elif tokens[i - 1:i] == [","] and tokens[:2] == ["label_values", "("]:
                labels.add(tok)  # label_values(selector, label)
            else:
                metrics.add(tok)
        i += 1
    return metrics, labels


def known_names():
    with open(FIXTURE, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert lines[0].startswith("# ") and "curl" in lines[0], "first line: the producing command"
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_generator_check_mode_passes():
    result = subprocess.run([sys.executable, BUILD, "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_check_mode_detects_drift(tmp_path):
    assert build.main(["--out", str(tmp_path)]) == 0
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    victim = tmp_path / "warren-overview.json"
    victim.write_text(victim.read_text().replace("Connections", "Conexions", 1))
    (tmp_path / "stray.json").write_text("{}")
    assert build.main(["--check", "--out", str(tmp_path)]) == 1


def test_output_is_deterministic():
    assert build.render_all() == build.render_all()
    for text in build.render_all().values():
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_dashboard_set_uids_and_tags():
    boards = dashboards()
    assert sorted(d["uid"] for d in boards.values()) == [
        "warren-canary-slo", "warren-hosts", "warren-overview", "warren-queues", "warren-quorum"]
    for name, dashboard in boards.items():
        assert name == dashboard["uid"] + ".json"
        assert "warren" in dashboard["tags"]
        assert dashboard["schemaVersion"] >= 39
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), "panel ids must be unique"
        for panel in dashboard["panels"]:
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24


def test_every_panel_has_description_and_datasource():
    for dashboard in dashboards().values():
        for panel in panels(dashboard):
            where = "%s / %s" % (dashboard["uid"], panel["title"])
            assert panel["type"] in ("timeseries", "stat", "gauge", "table"), where
            assert len(panel.get("description", "")) >= 20, where
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert panel["targets"], where
            for t in panel["targets"]:
                assert t["datasource"] == panel["datasource"], where
                assert t["expr"].strip(), where


def test_datasource_variable_defaults_to_warren_prometheus():
    for dashboard in dashboards().values():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        ds = variables["datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
        assert ds["current"]["value"] == "warren-prometheus"
        assert "rabbitmq_cluster" in variables


def test_no_kubernetes_labels():
    for uid, where, expr in all_queries():
        _, labels = parse_expr(expr)
        assert not labels & KUBERNETES_LABELS, "%s / %s uses %s" % (uid, where, labels & KUBERNETES_LABELS)
        assert "kube" not in expr.lower(), (uid, where)


def test_every_selector_filters_by_rabbitmq_cluster():
    for uid, where, expr in all_queries():
        metrics, _ = parse_expr(expr)
        for metric in metrics:
            for match in re.finditer(r"\b%s\b(\{[^}]*\})?" % re.escape(metric), expr):
                selector = match.group(1) or ""
                if where.startswith("variable rabbitmq_cluster"):
                    continue  # the variable that lists the clusters
                assert "rabbitmq_cluster" in selector, "%s / %s: %s without rabbitmq_cluster" % (
                    uid, where, metric)
                if ":" not in metric:  # recording rules aggregate the job away
                    assert "job=" in selector, "%s / %s: %s without a job" % (uid, where, metric)


def test_every_metric_name_was_seen_on_a_live_node():
    known = known_names()
    unknown = set()
    seen = set()
    for uid, where, expr in all_queries():
        metrics, _ = parse_expr(expr)
        for metric in metrics:
            if metric.startswith(SKIP_PREFIXES) or ":" in metric:  # canary; recording rules
                continue
            seen.add(metric)
            if metric not in known and metric not in PROMETHEUS_SYNTHETIC:
                unknown.add("%s (%s / %s)" % (metric, uid, where))
    assert not unknown, "names not in %s:\n  %s" % (FIXTURE, "\n  ".join(sorted(unknown)))
    assert len(seen) > 40  # the parser did find the names


def test_canary_metric_names_exist_in_the_canary():
    spec = importlib.util.spec_from_file_location(
        "warren_canary_for_dashboards", os.path.join(ROOT, "roles", "canary", "files", "warren_canary.py"))
    canary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(canary)
    exposed = set(re.findall(r"^([a-z_]+)(?:\{| )", canary.CanaryMetrics(["a:1"]).registry.render(), re.M))
    for uid, where, expr in all_queries():
        for metric in parse_expr(expr)[0]:
            if metric.startswith("warren_canary_"):
                assert metric in exposed, "%s / %s: %s" % (uid, where, metric)


def test_parser_sanity():
    metrics, labels = parse_expr(
        'sum by (rabbitmq_node) (rate(rabbitmq_global_messages_received_total{job="rabbitmq", '
        'rabbitmq_cluster="$rabbitmq_cluster"}[$__rate_interval])) / on (host) '
        'count by (host) (node_cpu_seconds_total{mode="idle"}) * 1e3 > 0.5 or vector(0)')
    assert metrics == {"rabbitmq_global_messages_received_total", "node_cpu_seconds_total"}
    assert labels == {"rabbitmq_node", "job", "rabbitmq_cluster", "host", "mode"}
    metrics, labels = parse_expr('label_values(node_uname_info{job="node"}, host)')
    assert metrics == {"node_uname_info"} and "host" in labels


def test_list_queries():
    result = subprocess.run([sys.executable, BUILD, "--list-queries", "--set",
                             "rabbitmq_cluster=lab"], capture_output=True, text=True, check=True)
    queries = json.loads(result.stdout)
    total = sum(len(p["targets"]) for d in dashboards().values() for p in panels(d))
    assert len(queries) == total
    for q in queries:
        assert set(q) >= {"dashboard", "panel", "expr"}
        assert "$" not in q["resolved"], q
        assert 'rabbitmq_cluster="lab"' in q["resolved"] or 'rabbitmq_cluster=~"lab"' in q["resolved"]


@pytest.mark.parametrize("expr, values, expected", [
    ('x{a="$v"}', {}, 'x{a=~".*"}'),
    ('x{a="$v"}', {"v": "k"}, 'x{a="k"}'),
    ('x{a=~"$v"}[$__rate_interval]', {}, 'x{a=~".*"}[1m]'),
    ("1 - $slo_objective", {}, "1 - 0.999"),
])
def test_resolve(expr, values, expected):
    assert build.resolve(expr, values) == expected


def panel_exprs(uid, title):
    for dashboard in dashboards().values():
        if dashboard["uid"] == uid:
            for panel in panels(dashboard):
                if panel["title"].startswith(title):
                    return [t["expr"] for t in panel["targets"]], panel
    raise KeyError((uid, title))


def test_queue_count_sums_every_node():
    """Each 4.0.5 node reports only the queues it hosts: max() showed about a third."""
    (expr,), _ = panel_exprs("warren-overview", "Queues")
    assert expr.startswith("sum(rabbitmq_queues{") and "$rabbitmq_node" not in expr


def test_raft_rates_are_taken_per_member_then_aggregated():
    """increase() of a per-node sum reads a deleted queue as a counter reset (3000 -> 2997)."""
    for title in ("Raft entries committed / s", "Raft term changes"):
        (expr,), _ = panel_exprs("warren-quorum", title)
        assert expr.startswith("sum by (rabbitmq_node) (") and "rabbitmq_detailed_raft_" in expr, expr
        assert "(rabbitmq_raft_" not in expr, expr


def test_growth_rate_takes_the_max_over_nodes():
    (expr,), _ = panel_exprs("warren-queues", "Growth rate")
    assert expr.startswith("max by (vhost, queue) (deriv(")


def test_no_panel_recomputes_thirty_days():
    for uid, where, expr in all_queries():
        assert "[30d]" not in expr, (uid, where)


def test_red_means_bad_on_availability_and_budget():
    for title in ("Availability, 30 days", "Error budget remaining, 30 days", "Availability, dashboard range",
                  "Error budget remaining (30 days"):
        _, panel = panel_exprs("warren-canary-slo", title)
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["color"] == "red" and steps[-1]["color"] == "green", (title, steps)


def test_burn_rate_panel_names_both_page_thresholds():
    _, panel = panel_exprs("warren-canary-slo", "Error budget burn rate")
    assert "slow-burn" not in panel["description"] and "6 over 6 h" in panel["description"]


def test_new_panels_exist():
    overview = {p["title"] for p in panels(dashboards()["warren-overview.json"])}
    for title in ("Broker CPU (Erlang VM)", "Scheduler utilisation", "Run queue", "Erlang memory: processes and system",
                  "Erlang system memory by use", "Link state per peer", "Traffic per peer", "Buffers per peer",
                  "Publishers", "Routed, acknowledged, redelivered / s", "Unconfirmed messages", "Queue and channel churn"):
        assert title in overview, title
