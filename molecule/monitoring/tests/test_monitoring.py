"""The monitoring stack, proven end to end on the lab's four hosts.

1. Every service runs, every Prometheus target is up with the labels of docs/monitoring.md.
2. Every recording and alert rule evaluates without error.
3. Every dashboard panel's query returns data from the live Prometheus after a canary warm-up
   (panels empty on a healthy cluster by design are listed below with their reason).
   The grafana role passes a check-mode run (Grafana itself cannot be installed here).
4. The full chain: stop RabbitMQ on one broker; RabbitMQNodeDown goes pending, then firing in
   Prometheus, and reaches the webhook receiver through Alertmanager; start the node again; the
   alert resolves and the resolved notification arrives.

Timings (and scrape durations, series counts) are printed and appended to
.build/monitoring-timings.json, one entry per run. Every wait is bounded and fails with a message
saying what did not happen. Tests run in file order; the node-down chain is last on purpose.
"""

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
BROKERS = RUNNER.get_hosts("rabbitmq")
MONITORING = RUNNER.get_hosts("monitoring")
CLUSTER = "warren-lab"
VICTIM = BROKERS[-1]
TIMINGS_FILE = os.path.join(PROJECT, ".build", "monitoring-timings.json")

testinfra_hosts = MONITORING

# Panels whose queries return nothing on a healthy, idle lab cluster, by design:
# {(dashboard uid, panel title): reason}. build.py's own empty_reason entries are added to it.
EMPTY_BY_DESIGN = {}

# The measurements of this run, written out at the end of the session (see _write_timings).
RUN = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def inventory_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def address(name):
    out = inventory_host(name).check_output("ip -4 -o addr show dev eth0")
    return out.split()[3].split("/")[0]


@pytest.fixture(scope="module")
def mon():
    return address(MONITORING[0])


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def prom(mon, path, **params):
    url = f"http://{mon}:9090{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    body = get_json(url)
    assert body["status"] == "success", f"{path} {params}: {body}"
    return body["data"]


def query(mon, expr):
    return prom(mon, "/api/v1/query", query=expr)["result"]


def wait_for(what, predicate, timeout, interval=1.0):
    """Poll predicate() until it returns something truthy; return it. Fail after timeout s."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:  # service restarting, partial JSON
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last_error})" if last_error else ""))


@pytest.fixture(scope="session", autouse=True)
def _write_timings():
    yield
    os.makedirs(os.path.dirname(TIMINGS_FILE), exist_ok=True)
    runs = []
    if os.path.exists(TIMINGS_FILE):
        with open(TIMINGS_FILE, encoding="utf-8") as handle:
            runs = json.load(handle).get("runs", [])
    runs.append(RUN)
    with open(TIMINGS_FILE, "w", encoding="utf-8") as handle:
        json.dump({"scenario": "molecule/monitoring", "runs": runs}, handle, indent=2, sort_keys=True)
        handle.write("\n")
    print(f"\n[timings] {json.dumps(RUN, sort_keys=True)}\n[timings] appended to {TIMINGS_FILE}")


# ---------------------------------------------------------------------------------------------
# 1. services and targets
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("service", [
    "prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
    "warren-canary", "warren-webhook-receiver",
])
def test_monitoring_services_run(host, service):
    assert host.service(service).is_running, f"{service} is not running"
    assert host.service(service).is_enabled, f"{service} is not enabled"


def test_canary_config_is_private(host):
    config = host.file("/etc/warren-canary/canary.json")
    assert config.user == "warren-canary" and config.mode == 0o600


def test_every_target_up(mon):
    expected = {"prometheus": 1, "alertmanager": 1, "canary": 1, "node": len(BROKERS) + len(MONITORING),
                "rabbitmq": len(BROKERS), "rabbitmq_detailed": len(BROKERS)}

    def all_up():
        targets = prom(mon, "/api/v1/targets", state="active")["activeTargets"]
        return targets if all(t["health"] == "up" for t in targets) else None

    targets = wait_for("every Prometheus target to be up", all_up, timeout=180, interval=3)
    jobs = {}
    for target in targets:
        jobs[target["labels"]["job"]] = jobs.get(target["labels"]["job"], 0) + 1
    assert jobs == expected

    for target in targets:
        labels = target["labels"]
        assert labels["host"] in BROKERS + MONITORING, labels
        if labels["host"] in BROKERS and labels["job"] in ("rabbitmq", "rabbitmq_detailed", "node"):
            assert labels["rabbitmq_cluster"] == CLUSTER, labels
            assert labels["rabbitmq_node"] == f"rabbit@{labels['host']}", labels
        if labels["job"] in ("rabbitmq", "rabbitmq_detailed"):
            assert target["scrapeUrl"].startswith("https://"), "TLS is on: brokers must be scraped over HTTPS"
        if labels["job"] == "canary":
            assert labels["rabbitmq_cluster"] == CLUSTER

    RUN["scrape_duration_seconds"] = {
        f"{t['labels']['job']}/{t['labels']['host']}": round(t["lastScrapeDuration"], 4)
        for t in targets if t["labels"]["job"] in ("rabbitmq", "rabbitmq_detailed")}
    RUN["series_per_target"] = {
        f"{s['metric']['job']}/{s['metric']['host']}": int(float(s["value"][1]))
        # host!="": Debian starts prometheus at install with its stock config, whose
        # localhost:9090/9100 targets (no host label) leave series for up to 5 minutes.
        for s in query(mon, 'scrape_samples_scraped{host!=""}')
        if s["metric"]["job"] in ("rabbitmq", "rabbitmq_detailed", "node")}
    print("\n[scrape] " + json.dumps(RUN["scrape_duration_seconds"], sort_keys=True))
    print("[series] " + json.dumps(RUN["series_per_target"], sort_keys=True))


def test_identity_labels_reach_every_series(mon):
    """RabbitMQ's own cluster name and node name agree with the target labels."""
    info = query(mon, 'rabbitmq_identity_info{job="rabbitmq"}')
    assert len(info) == len(BROKERS)
    for series in info:
        metric = series["metric"]
        assert metric["exported_rabbitmq_cluster"] == metric["rabbitmq_cluster"] == CLUSTER
        assert metric["exported_rabbitmq_node"] == metric["rabbitmq_node"]


# ---------------------------------------------------------------------------------------------
# 2. rules
# ---------------------------------------------------------------------------------------------
def test_every_rule_evaluates_without_error(mon):
    def evaluated():
        groups = prom(mon, "/api/v1/rules")["groups"]
        rules = [(g["name"], r) for g in groups for r in g["rules"]]
        # Evaluated at least once since the last (re)load: lastEvaluation is set.
        if rules and all(not r["lastEvaluation"].startswith("0001-") for _, r in rules):
            return rules
        return None

    rules = wait_for("every rule to be evaluated once", evaluated, timeout=120, interval=3)
    broken = [f"{group}/{rule['name']}: {rule['health']} {rule.get('lastError', '')}"
              for group, rule in rules if rule["health"] != "ok" or rule.get("lastError")]
    assert not broken, "rules failing to evaluate:\n" + "\n".join(broken)
    alerts = {r["name"] for _, r in rules if r["type"] == "alerting"}
    assert "RabbitMQNodeDown" in alerts and len(alerts) >= 28
    RUN["rules"] = {"alerting": len(alerts), "recording": sum(1 for _, r in rules if r["type"] == "recording")}


def test_expected_cluster_size_comes_from_the_inventory(mon):
    series = query(mon, "warren_rabbitmq_expected_nodes")
    assert [(s["metric"], s["value"][1]) for s in series] == [
        ({"__name__": "warren_rabbitmq_expected_nodes", "rabbitmq_cluster": CLUSTER}, str(len(BROKERS)))]


def test_healthy_cluster_raises_no_page(mon):
    firing = [a["labels"] for a in prom(mon, "/api/v1/alerts")["alerts"]
              if a["state"] == "firing" and a["labels"].get("severity") == "page"]
    assert not firing, f"pages firing on a healthy cluster: {firing}"


# ---------------------------------------------------------------------------------------------
# 3. dashboards
# ---------------------------------------------------------------------------------------------
def panel_queries():
    out = subprocess.run(
        [sys.executable, os.path.join(PROJECT, "tools", "dashboards", "build.py"),
         "--list-queries", "--set", f"rabbitmq_cluster={CLUSTER}"],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_every_dashboard_panel_has_data(mon):
    # Warm-up: rates over 1m need two scrapes of the canary with probes in between.
    def canary_warm():
        ok = query(mon, f'sum(warren_canary_probes_total{{job="canary", rabbitmq_cluster="{CLUSTER}", result="ok"}})')
        samples = query(mon, 'count_over_time(up{job="canary"}[2m])')
        return ok and float(ok[0]["value"][1]) >= 6 and samples and float(samples[0]["value"][1]) >= 4

    wait_for("the canary warm-up (6 ok probes, 4 scrapes)", canary_warm, timeout=180, interval=5)

    queries = panel_queries()
    assert len(queries) > 50
    empty_by_design = dict(EMPTY_BY_DESIGN)
    empty_by_design.update({(q["dashboard"], q["panel"]): q["empty_reason"] for q in queries if q["empty_reason"]})
    empty, errors = [], []
    for item in queries:
        try:
            result = query(mon, item["resolved"])
        except (OSError, AssertionError) as exc:
            errors.append(f"{item['dashboard']} / {item['panel']} ({item['refId']}): {exc}")
            continue
        if not result and (item["dashboard"], item["panel"]) not in empty_by_design:
            empty.append(f"{item['dashboard']} / {item['panel']} ({item['refId']}): {item['resolved']}")
    assert not errors, "panel queries Prometheus rejects:\n" + "\n".join(errors)
    assert not empty, "panels without data:\n" + "\n".join(empty)
    RUN["dashboard_queries"] = {"total": len(queries), "empty_by_design": len(empty_by_design)}


def panel_value(mon, queries, dashboard, panel, ref="A"):
    """The single number a stat panel's query returns on the live Prometheus."""
    item = [q for q in queries if q["dashboard"] == dashboard and q["panel"] == panel and q["refId"] == ref][0]
    result = query(mon, item["resolved"])
    assert len(result) == 1, f"{dashboard} / {panel} ({ref}): {result}"
    return float(result[0]["value"][1])


def test_dashboard_known_answers(mon):
    """Values with a known answer: the node counts are the brokers of the inventory, and the
    queue count is what RabbitMQ itself lists (each node reports only the queues it hosts, so
    the panel must sum over the nodes)."""
    queries = panel_queries()
    assert panel_value(mon, queries, "warren-overview", "Nodes up / expected", "A") == len(BROKERS)
    assert panel_value(mon, queries, "warren-overview", "Nodes up / expected", "B") == len(BROKERS)
    broker = inventory_host(BROKERS[0])
    vhosts = broker.check_output("rabbitmqctl -q list_vhosts name --no-table-headers").split()
    listed = sum(len([line for line in broker.check_output(
        f"rabbitmqctl -q list_queues -p {vhost} name --no-table-headers").splitlines() if line.strip()])
        for vhost in vhosts)
    assert listed >= 1, "the canary's queue at least"

    def counted():
        return panel_value(mon, queries, "warren-overview", "Queues") == listed
    wait_for(f"the Queues panel to show the {listed} queue(s) rabbitmqctl lists", counted, timeout=60, interval=5)
    RUN["known_answers"] = {"nodes": len(BROKERS), "queues": listed}


# ---------------------------------------------------------------------------------------------
# Grafana: check mode only (its package cannot be fetched here; see grafana_check.yml)
# ---------------------------------------------------------------------------------------------
def test_grafana_role_passes_check_mode():
    playbook = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "grafana_check.yml")
    run = subprocess.run(["ansible-playbook", "--check", "-i", INVENTORY, playbook],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "changed: [wm-mon1]" in run.stdout.split("Add Grafana's apt repository")[1].split("TASK")[0]
    assert "Grafana is not installed on wm-mon1 yet" in run.stdout
    assert not inventory_host(MONITORING[0]).exists("grafana-server"), "check mode must not install Grafana"


# ---------------------------------------------------------------------------------------------
# 4. node down: Prometheus -> Alertmanager -> webhook receiver, and back
# ---------------------------------------------------------------------------------------------
def node_down_alert(mon):
    for alert in prom(mon, "/api/v1/alerts")["alerts"]:
        labels = alert["labels"]
        if labels["alertname"] == "RabbitMQNodeDown" and labels.get("host") == VICTIM:
            return alert
    return None


def notifications(mon, status, since):
    """Webhook deliveries after `since` (Unix time) carrying RabbitMQNodeDown for the victim."""
    found = []
    for entry in get_json(f"http://{mon}:9099/alerts"):
        if entry["received_at"] < since:
            continue
        payload = entry["payload"]
        for alert in payload.get("alerts", []):
            if (alert["labels"].get("alertname") == "RabbitMQNodeDown" and alert["labels"].get("host") == VICTIM
                    and alert["status"] == status):
                found.append((entry, payload))
    return found


def test_node_down_pages_through_alertmanager_and_resolves(mon):
    victim = inventory_host(VICTIM)
    assert node_down_alert(mon) is None, "RabbitMQNodeDown is already active before the test"

    stopped_at = time.time()
    victim.check_output("systemctl stop rabbitmq-server")
    try:
        pending = wait_for("RabbitMQNodeDown to go pending", lambda: node_down_alert(mon), timeout=120)
        pending_at = time.time()
        wait_for("RabbitMQNodeDown to fire",
                 lambda: (node_down_alert(mon) or {}).get("state") == "firing", timeout=120)
        firing_at = time.time()
        delivered = wait_for("the firing notification at the webhook receiver",
                             lambda: notifications(mon, "firing", stopped_at), timeout=180)
        notified_at = delivered[0][0]["received_at"]
        payload = delivered[0][1]
        assert payload["receiver"] == "lab-webhook"
        assert payload["commonLabels"]["severity"] == "page"
        assert payload["groupLabels"] == {"alertname": "RabbitMQNodeDown", "rabbitmq_cluster": CLUSTER}
        alert = [a for a in payload["alerts"] if a["labels"]["host"] == VICTIM][0]
        assert alert["labels"]["rabbitmq_node"] == f"rabbit@{VICTIM}"
        assert alert["annotations"]["runbook_url"].endswith("/docs/runbooks/RabbitMQNodeDown.md")
        assert pending["labels"]["rabbitmq_cluster"] == CLUSTER
    finally:
        started_at = time.time()
        victim.check_output("systemctl start rabbitmq-server")

    wait_for("RabbitMQNodeDown to clear in Prometheus", lambda: node_down_alert(mon) is None, timeout=180)
    cleared_at = time.time()
    # Alertmanager sends a resolved notification on the group's next group_interval tick
    # (5m by default, 30 s in this scenario, counted from the firing notification).
    resolved = wait_for("the resolved notification at the webhook receiver",
                        lambda: notifications(mon, "resolved", started_at), timeout=420, interval=5)
    resolved_notified_at = resolved[0][0]["received_at"]

    timings = {
        "victim": VICTIM,
        "stop_to_pending_s": round(pending_at - stopped_at, 1),
        "stop_to_firing_s": round(firing_at - stopped_at, 1),
        "pending_to_firing_s": round(firing_at - pending_at, 1),
        "stop_to_notification_s": round(notified_at - stopped_at, 1),
        "start_to_cleared_s": round(cleared_at - started_at, 1),
        "start_to_resolved_notification_s": round(resolved_notified_at - started_at, 1),
    }
    RUN["node_down"] = timings
    print("\n[node-down] " + json.dumps(timings, sort_keys=True))
    assert timings["stop_to_notification_s"] < 90, f"notification took longer than the 90 s aim: {timings}"

    wait_for(f"{VICTIM} to rejoin the cluster",
             lambda: victim.run("rabbitmq-diagnostics -q check_running").rc == 0, timeout=180, interval=3)
