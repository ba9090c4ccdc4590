#!/usr/bin/env python3
"""Contract checks for warren's Prometheus rules, beyond what promtool checks.

For every alert in roles/prometheus/files/rules/*.yml:
  * a `severity` label of page, ticket or info;
  * `summary`, `description`, `runbook_url` and `dashboard_url` annotations; summary or
    description names the node/queue/host through $labels (the always-firing Watchdog has none);
  * runbook_url is exactly RUNBOOK_BASE + "<AlertName>.md", RUNBOOK_BASE is galaxy.yml's
    `documentation` + "/runbooks/" (the prometheus role swaps both bases for the site's own,
    prometheus_runbook_url_base / prometheus_grafana_url), and dashboard_url starts with
    GRAFANA_BASE + "/d/" and names a dashboard that tools/dashboards/build.py generates;
  * docs/runbooks/<AlertName>.md exists with the four sections an on-call needs and links
    its dashboard;
  * one row in docs/monitoring.md's alert table that links that runbook and states the same
    severity and `for:` as the rule;
  * an expression that keeps or groups by rabbitmq_cluster (self-monitoring of Prometheus is
    the one exception) and uses no Kubernetes labels;
  * in tests/promtool/*_test.yml, at least one case where it fires and one where it is quiet
    (the Watchdog only fires).
Also: no runbook without an alert, no duplicate names, and every metric an expression reads
exists in tests/unit/fixtures/metric-names-4.0.5.txt (the one metric-name fixture, shared with
the dashboard tests; names taken from a live RabbitMQ 4.0.5 node and node_exporter), except
recording rules (must be defined here), the canary's warren_* metrics, Prometheus' own series
(not produced by a broker host) and the RabbitMQ 4.2 names read beside their 4.0.5 ones
(RENAMED_IN_4_2).

Exit status 0 when all hold, 1 otherwise. Needs PyYAML only.
"""
import argparse
import glob
import os
import re
import sys

import yaml

RUNBOOK_BASE = "https://example.invalid/warren/rabbitmq/docs/runbooks/"
GRAFANA_BASE = "https://grafana.example.invalid"
DASHBOARDS = {"warren-overview", "warren-queues", "warren-quorum", "warren-hosts", "warren-canary-slo"}
ALWAYS_FIRING = {"Watchdog"}
# RabbitMQ 4.2 renamed these (rabbitmq-server PR 13895: Ra counters from seshat); rules read the
# new name beside the old one so a rename cannot silence them. Not in the 4.0.5 fixture.
RENAMED_IN_4_2 = {"rabbitmq_detailed_raft_term": "rabbitmq_detailed_raft_term_total"}
SEVERITIES = {"page", "ticket", "info"}
RUNBOOK_SECTIONS = ("## What it means", "## Confirm", "## Mitigate", "## It is over when")
# Rule groups whose alerts describe Prometheus itself: their series carry no rabbitmq_cluster.
SELF_MONITORING_GROUPS = {"warren.prometheus"}
KUBERNETES_LABELS = ("namespace", "pod", "service", "container", "endpoint")
# Metrics not produced by a broker host, so not in the fixture: the canary (own exporter),
# Prometheus itself, and the `up` series Prometheus writes for every target.
UNLISTED_PREFIXES = ("warren_", "prometheus_", "alertmanager_")
UNLISTED_NAMES = {"up"}
PROMQL_WORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
}


def metric_names(expr):
    """Metric (and recording rule) names an expression reads, by a small PromQL scan."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'", '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def label_uses(expr):
    """Label names used in matchers and in by/on/... clauses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    used = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", " ".join(re.findall(r"\{([^}]*)\}", text))))
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        used.update(x.strip() for x in group.split(",") if x.strip())
    return used


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    rules_dir = os.path.join(root, "roles/prometheus/files/rules")
    runbook_dir = os.path.join(root, "docs/runbooks")
    tests_dir = os.path.join(root, "tests/promtool")
    fixture = os.path.join(root, "tests/unit/fixtures/metric-names-4.0.5.txt")
    problems = []

    alerts, records, recording_exprs = {}, set(), {}
    for path in sorted(glob.glob(os.path.join(rules_dir, "*.yml"))):
        with open(path, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "record" in rule:
                    records.add(rule["record"])
                    recording_exprs[rule["record"]] = rule["expr"]
                    continue
                name = rule["alert"]
                if name in alerts:
                    problems.append(f"{name}: defined twice ({alerts[name]['file']} and {os.path.basename(path)})")
                alerts[name] = dict(rule, file=os.path.basename(path), group=group["name"])
    if not alerts:
        problems.append(f"no alerts found under {rules_dir}")

    known = set()
    with open(fixture, encoding="utf-8") as handle:
        known = {line.strip() for line in handle if line.strip() and not line.startswith("#")}

    with open(os.path.join(root, "galaxy.yml"), encoding="utf-8") as handle:
        documentation = (yaml.safe_load(handle) or {}).get("documentation", "")
    if RUNBOOK_BASE != documentation.rstrip("/") + "/runbooks/":
        problems.append(f"RUNBOOK_BASE {RUNBOOK_BASE} does not match galaxy.yml documentation {documentation!r} + /runbooks/")

    with open(os.path.join(root, "docs/monitoring.md"), encoding="utf-8") as handle:
        monitoring = handle.read()

    for name, rule in sorted(alerts.items()):
        where = f"{name} ({rule['file']})"
        labels = rule.get("labels") or {}
        notes = rule.get("annotations") or {}
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{where}: severity label must be one of {sorted(SEVERITIES)}, is {labels.get('severity')!r}")
        for key in ("summary", "description", "runbook_url", "dashboard_url"):
            if not str(notes.get(key, "")).strip():
                problems.append(f"{where}: annotation {key} missing or empty")
        if name not in ALWAYS_FIRING and "$labels." not in str(notes.get("summary", "")) + str(notes.get("description", "")):
            problems.append(f"{where}: summary/description name nothing through $labels")
        expected_url = f"{RUNBOOK_BASE}{name}.md"
        if notes.get("runbook_url") != expected_url:
            problems.append(f"{where}: runbook_url must be {expected_url}, is {notes.get('runbook_url')!r}")
        dashboard = re.match(re.escape(GRAFANA_BASE) + r"/d/([\w-]+)", str(notes.get("dashboard_url", "")))
        if not dashboard or dashboard.group(1) not in DASHBOARDS:
            problems.append(f"{where}: dashboard_url must be {GRAFANA_BASE}/d/<one of {sorted(DASHBOARDS)}>")
        runbook = os.path.join(runbook_dir, f"{name}.md")
        if not os.path.isfile(runbook):
            problems.append(f"{where}: docs/runbooks/{name}.md does not exist")
        else:
            with open(runbook, encoding="utf-8") as handle:
                body = handle.read()
            if not body.startswith(f"# {name}\n"):
                problems.append(f"docs/runbooks/{name}.md: must start with '# {name}'")
            for section in RUNBOOK_SECTIONS:
                if f"\n{section}\n" not in body:
                    problems.append(f"docs/runbooks/{name}.md: section '{section}' missing")
            if dashboard and f"/d/{dashboard.group(1)}" not in body:
                problems.append(f"docs/runbooks/{name}.md: does not link its dashboard {dashboard.group(1)}")
        rows = [line for line in monitoring.splitlines() if line.startswith(f"| {name} |")]
        if len(rows) != 1 or f"[{name}](runbooks/{name}.md)" not in rows[0]:
            problems.append(f"{where}: needs one row in docs/monitoring.md linking [{name}](runbooks/{name}.md)")
        else:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", rows[0])]
            if cells[2] != labels.get("severity") or not cells[3].endswith(f"; {rule.get('for', '0s')}"):
                problems.append(f"{where}: docs/monitoring.md row says severity {cells[2]!r} and threshold "
                                f"{cells[3]!r}; the rule has {labels.get('severity')!r} and for: {rule.get('for')}")
        expr = rule["expr"]
        if rule["group"] not in SELF_MONITORING_GROUPS and "rabbitmq_cluster" not in expr and "by (" in expr:
            problems.append(f"{where}: aggregates without keeping rabbitmq_cluster")
        k8s = label_uses(expr) & set(KUBERNETES_LABELS)
        if k8s:
            problems.append(f"{where}: uses Kubernetes labels {sorted(k8s)}")

    for where, expr in [(f"{n} ({r['file']})", r["expr"]) for n, r in sorted(alerts.items())] + sorted(
            recording_exprs.items()):
        for metric in sorted(metric_names(expr)):
            if ":" in metric:
                if metric not in records:
                    problems.append(f"{where}: reads recording rule {metric}, which no rule file defines")
            elif metric in UNLISTED_NAMES or metric.startswith(UNLISTED_PREFIXES):
                continue
            elif RENAMED_IN_4_2.get(metric) in known and RENAMED_IN_4_2[metric] in expr:
                continue
            elif metric not in known:
                problems.append(f"{where}: reads {metric}, not exposed by RabbitMQ 4.0.5/node_exporter (fixture)")

    for path in sorted(glob.glob(os.path.join(runbook_dir, "*.md"))):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem != "README" and stem not in alerts:
            problems.append(f"docs/runbooks/{stem}.md: no alert of that name")

    fires, quiet = set(), set()
    for path in sorted(glob.glob(os.path.join(tests_dir, "*_test.yml"))):
        with open(path, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle) or {}
        for rule_file in doc.get("rule_files", []):
            if not os.path.isfile(os.path.join(tests_dir, rule_file)):
                problems.append(f"{os.path.basename(path)}: rule file {rule_file} does not exist")
        for group in doc.get("tests", []):
            for case in group.get("alert_rule_test", []) or []:
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    for name in sorted(alerts):
        if name in ALWAYS_FIRING:
            if name in quiet or name not in fires:
                problems.append(f"{name}: always fires; its tests must expect it firing only")
            continue
        if name not in fires:
            problems.append(f"{name}: no promtool test case where it fires")
        if name not in quiet:
            problems.append(f"{name}: no promtool test case where it stays quiet")
    for name in sorted((fires | quiet) - set(alerts)):
        problems.append(f"tests name alert {name}, which no rule file defines")

    for problem in problems:
        print(f"FAIL {problem}")
    print(f"checked {len(alerts)} alerts and {len(records)} recording rules: "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
