#!/usr/bin/env python3
"""Generate warren's Grafana dashboards (roles/grafana/files/dashboards/*.json) from code.

    python3 tools/dashboards/build.py                 # write the JSON files
    python3 tools/dashboards/build.py --check         # exit 1 if the committed files differ
    python3 tools/dashboards/build.py --list-queries [--set rabbitmq_cluster=lab ...]

Output is deterministic: keys sorted, two-space indent, panel ids numbered in definition order.
Standard library only.

Label contract (implemented by the prometheus role). Jobs: ``rabbitmq`` (aggregated
``/metrics``), ``rabbitmq_detailed`` (``/metrics/detailed`` with ``queue_coarse_metrics``,
``queue_consumer_count`` and ``ra_metrics``, the last one required by the quorum alert rules
too), ``node``, ``prometheus``, ``alertmanager``, ``canary``. Every series has the target label
``host``; broker hosts and the canary also ``rabbitmq_cluster``; broker series ``rabbitmq_node``.
Dashboards filter on those labels only, never on Kubernetes ones.

``--list-queries`` prints JSON ``[{dashboard, panel, refId, expr, resolved, empty_reason}]``:
``resolved`` has Grafana's variables replaced (``--set name=value``; unset label filters become
``=~".*"``, ``$__rate_interval`` 1m, ``$__range`` 1h) so it can be sent to Prometheus as is;
``empty_reason`` is null for panels that must return data on a healthy cluster.
"""

import argparse
import json
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(ROOT, "roles", "grafana", "files", "dashboards")
DS = {"type": "prometheus", "uid": "${datasource}"}
DEFAULT_DATASOURCE_UID = "warren-prometheus"
SCHEMA_VERSION = 39
SLO_OBJECTIVE = "0.999"
MSG_RATE = "suffix: msg/s"

# --------------------------------------------------------------------------------------------
# panel builders
# --------------------------------------------------------------------------------------------


def target(expr, legend="", ref=None, instant=False, fmt="time_series"):
    return {"expr": expr, "legend": legend, "ref": ref, "instant": instant, "format": fmt}


class Panel:
    """A panel before layout: kind, size, queries and field options."""

    def __init__(self, kind, title, description, targets, unit="short", width=12, height=8,
                 minimum=None, maximum=None, thresholds=None, stack=False, decimals=None,
                 empty_reason=None, options=None, transformations=None, overrides=None,
                 base="green"):
        assert description and description.strip(), title
        self.kind, self.title, self.description = kind, title, " ".join(description.split())
        self.targets = [t if isinstance(t, dict) else target(t) for t in targets]
        self.unit, self.width, self.height = unit, width, height
        self.minimum, self.maximum, self.thresholds = minimum, maximum, thresholds
        self.stack, self.decimals, self.empty_reason = stack, decimals, empty_reason
        self.options, self.transformations = options, transformations
        self.overrides = overrides or []
        self.base = base  # colour below the first threshold: "red" where low values are bad

    def render(self, panel_id, x, y):
        steps = [{"color": self.base, "value": None}]
        for value, color in self.thresholds or []:
            steps.append({"color": color, "value": value})
        defaults = {"unit": self.unit, "thresholds": {"mode": "absolute", "steps": steps},
                    "color": {"mode": "palette-classic" if self.kind == "timeseries"
                              else "thresholds"}}
        if self.minimum is not None:
            defaults["min"] = self.minimum
        if self.maximum is not None:
            defaults["max"] = self.maximum
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                "spanNulls": False, "axisSoftMin": 0 if self.minimum is None else None,
                "stacking": {"mode": "normal" if self.stack else "none", "group": "A"},
                "thresholdsStyle": {"mode": "dashed" if self.thresholds else "off"},
            }
            defaults["custom"] = {k: v for k, v in defaults["custom"].items() if v is not None}
            options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                       "tooltip": {"mode": "multi", "sort": "desc"}}
        elif self.kind in ("stat", "gauge"):
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "orientation": "auto"}
            if self.kind == "stat":
                options.update(colorMode="value", graphMode="area", justifyMode="auto",
                               textMode="auto")
            else:
                options.update(showThresholdLabels=False, showThresholdMarkers=True)
        else:  # table
            options = {"showHeader": True, "cellHeight": "sm",
                       "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
        options.update(self.options or {})
        targets = []
        for index, t in enumerate(self.targets):
            targets.append({
                "datasource": DS, "editorMode": "code", "expr": t["expr"],
                "legendFormat": t["legend"] or "__auto", "range": not t["instant"],
                "instant": t["instant"], "format": t["format"],
                "refId": t["ref"] or chr(ord("A") + index),
            })
        panel = {
            "id": panel_id, "type": self.kind, "title": self.title,
            "description": self.description, "datasource": DS,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "targets": targets, "options": options,
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
        }
        if self.transformations:
            panel["transformations"] = self.transformations
        return panel


def ts(title, description, targets, **kw):
    return Panel("timeseries", title, description, targets, **kw)


def stat(title, description, targets, **kw):
    kw.setdefault("width", 6)
    kw.setdefault("height", 4)
    return Panel("stat", title, description, targets, **kw)


def gauge(title, description, targets, **kw):
    kw.setdefault("width", 6)
    kw.setdefault("height", 6)
    return Panel("gauge", title, description, targets, **kw)


def table(title, description, targets, columns=None, hide=(), **kw):
    """Instant table; several queries are merged on their labels, values renamed by refId."""
    kw.setdefault("width", 24)
    kw.setdefault("height", 8)
    rows = [target(t["expr"] if isinstance(t, dict) else t, instant=True, fmt="table")
            for t in targets]
    exclude = {name: True for name in ("Time", "__name__", "job", "instance") + tuple(hide)}
    rename = {}
    for index, name in enumerate(columns or []):
        ref = chr(ord("A") + index)
        rename["Value #%s" % ref if len(rows) > 1 else "Value"] = name
    transformations = ([{"id": "merge", "options": {}}] if len(rows) > 1 else []) + [
        {"id": "organize", "options": {"excludeByName": exclude, "renameByName": rename,
                                       "indexByName": {}}}]
    return Panel("table", title, description, rows, transformations=transformations, **kw)


class Row:
    def __init__(self, title, panels):
        self.title, self.panels = title, panels


# --------------------------------------------------------------------------------------------
# variables
# --------------------------------------------------------------------------------------------


def var_datasource():
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "regex": "", "hide": 0, "refresh": 1, "multi": False,
            "includeAll": False, "options": [],
            "current": {"selected": False, "text": DEFAULT_DATASOURCE_UID,
                        "value": DEFAULT_DATASOURCE_UID}}


def var_query(name, label, query, multi=False, include_all=False, all_value=None):
    variable = {"name": name, "label": label, "type": "query", "datasource": DS,
                "definition": query, "query": query, "refresh": 2, "sort": 1, "regex": "",
                "hide": 0, "multi": multi, "includeAll": include_all, "options": [],
                "current": ({"selected": True, "text": ["All"], "value": ["$__all"]}
                            if include_all else {})}
    if all_value is not None:
        variable["allValue"] = all_value
    return variable


def var_constant(name, value):
    return {"name": name, "type": "constant", "query": value, "hide": 2, "skipUrlSync": False,
            "current": {"selected": False, "text": value, "value": value},
            "options": [{"selected": True, "text": value, "value": value}]}


def var_cluster(metric):
    return var_query("rabbitmq_cluster", "Cluster", "label_values(%s, rabbitmq_cluster)" % metric)


def var_nodes():
    return var_query(
        "rabbitmq_node", "Node",
        'label_values(rabbitmq_identity_info{job="rabbitmq", rabbitmq_cluster="$rabbitmq_cluster"}, '
        "rabbitmq_node)", multi=True, include_all=True, all_value=".*")


# --------------------------------------------------------------------------------------------
# selectors
# --------------------------------------------------------------------------------------------

RMQ = 'job="rabbitmq", rabbitmq_cluster="$rabbitmq_cluster", rabbitmq_node=~"$rabbitmq_node"'
RMQ_ALL = 'job="rabbitmq", rabbitmq_cluster="$rabbitmq_cluster"'
DET = 'job="rabbitmq_detailed", rabbitmq_cluster="$rabbitmq_cluster"'
QSEL = DET + ', vhost=~"$vhost", queue=~"$queue"'
NODE = 'job="node", rabbitmq_cluster=~"$rabbitmq_cluster", host=~"$host"'
CAN = 'job="canary", rabbitmq_cluster="$rabbitmq_cluster"'
RI = "$__rate_interval"
FS = 'fstype!~"tmpfs|ramfs|devtmpfs|overlay|squashfs|nsfs|autofs|fuse.*"'


def m(metric, selector, extra=""):
    return "%s{%s%s}" % (metric, selector, (", " + extra) if extra else "")


# --------------------------------------------------------------------------------------------
# dashboards
# --------------------------------------------------------------------------------------------


def headroom(title, description, used, used_name, limit, limit_name, unit, gauge_title,
             gauge_description, warn_crit, inverted=False):
    """A per-node "used vs limit" time series and a gauge of the worst node's ratio."""
    def series(metric, name):
        return target("max by (rabbitmq_node) (%s)" % m(metric, RMQ), "{{rabbitmq_node}} " + name)

    num, den = (limit, used) if inverted else (used, limit)
    return [
        ts(title, description, [series(used, used_name), series(limit, limit_name)],
           unit=unit, width=16),
        gauge(gauge_title, gauge_description,
              [target("max(%s / %s)" % (m(num, RMQ), m(den, RMQ)))], unit="percentunit",
              minimum=0, maximum=1,
              thresholds=[(warn_crit[0], "orange"), (warn_crit[1], "red")], width=8, height=8),
    ]


def overview():
    per_node = {"legend": "{{rabbitmq_node}}"}
    return {
        "uid": "warren-overview",
        "title": "warren / RabbitMQ overview",
        "description": "One RabbitMQ cluster: health, throughput, backlog, clients and resource "
                       "headroom, per node.",
        "variables": [var_datasource(), var_cluster('rabbitmq_identity_info{job="rabbitmq"}'),
                      var_nodes()],
        "rows": [
            Row("Health", [
                stat("Nodes up / expected",
                     "Broker nodes whose /metrics scrape succeeds, next to the number of broker "
                     "targets Prometheus is configured with. Fewer up than expected: a node or "
                     "its metrics endpoint is down.",
                     [target('sum(up{%s})' % RMQ_ALL, "up"),
                      target('count(up{%s})' % RMQ_ALL, "expected")], decimals=0),
                stat("Unreachable cluster peers",
                     "Highest number of cluster peers any node cannot reach over Erlang "
                     "distribution. Above 0 means a partition or a peer down.",
                     [target("max(%s)" % m("rabbitmq_unreachable_cluster_peers_count", RMQ))],
                     thresholds=[(1, "red")], decimals=0),
                stat("Resource alarms",
                     "Nodes with a memory, disk or file-descriptor alarm raised. Any alarm "
                     "blocks publishers cluster-wide until it clears.",
                     [target("sum(%s)" % m("rabbitmq_alarms_memory_used_watermark", RMQ), "memory"),
                      target("sum(%s)" % m("rabbitmq_alarms_free_disk_space_watermark", RMQ), "disk"),
                      target("sum(%s)" % m("rabbitmq_alarms_file_descriptor_limit", RMQ), "fds")],
                     thresholds=[(1, "red")], decimals=0),
                stat("Queues",
                     "Queues in the cluster (all vhosts, all types). Each node reports only the "
                     "queues it hosts (a quorum queue on its leader), so this is the sum over "
                     "every node of the cluster, whatever the node selection.",
                     [target("sum(%s)" % m("rabbitmq_queues", RMQ_ALL))], decimals=0),
                stat("Publishers",
                     "Publishing channels and links on the selected nodes.",
                     [target("sum(%s)" % m("rabbitmq_global_publishers", RMQ))], decimals=0),
                table("Nodes",
                      "Each broker node with its RabbitMQ and Erlang versions and uptime. Mixed "
                      "versions are expected only during a rolling upgrade.",
                      ["max by (rabbitmq_node, rabbitmq_version, erlang_version) (%s)"
                       % m("rabbitmq_build_info", RMQ),
                       "max by (rabbitmq_node) (%s)" % m("rabbitmq_erlang_uptime_seconds", RMQ)],
                      columns=["build info", "uptime"], height=6,
                      overrides=[{"matcher": {"id": "byName", "options": "uptime"},
                                  "properties": [{"id": "unit", "value": "s"}]},
                                 {"matcher": {"id": "byName", "options": "build info"},
                                  "properties": [{"id": "custom.hidden", "value": True}]}]),
            ]),
            Row("Throughput", [
                ts("Messages in / out",
                   "Cluster-wide messages received from publishers and delivered to consumers "
                   "(all protocols, all queue types), per second.",
                   [target("sum(rate(%s[%s]))" % (m("rabbitmq_global_messages_received_total", RMQ), RI), "published in"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_global_messages_delivered_total", RMQ), RI), "delivered out"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_global_messages_confirmed_total", RMQ), RI), "confirmed")],
                   unit=MSG_RATE),
                ts("Messages published in, per node",
                   "Messages received per second on each node (the node the publisher is "
                   "connected to). A skew points at unbalanced client connections.",
                   [target("sum by (rabbitmq_node) (rate(%s[%s]))"
                           % (m("rabbitmq_global_messages_received_total", RMQ), RI), **per_node)],
                   unit=MSG_RATE),
                ts("Messages delivered out, per node",
                   "Messages delivered to consumers per second on each node, by queue type.",
                   [target("sum by (rabbitmq_node, queue_type) (rate(%s[%s]))"
                           % (m("rabbitmq_global_messages_delivered_total", RMQ), RI),
                           "{{rabbitmq_node}} {{queue_type}}")], unit=MSG_RATE),
                ts("Unroutable messages",
                   "Messages that matched no queue, dropped or returned to the publisher, per "
                   "second. Usually a missing binding or a typo in a routing key; 0 when "
                   "healthy.",
                   [target("sum(rate(%s[%s]))" % (m("rabbitmq_global_messages_unroutable_dropped_total", RMQ), RI), "dropped"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_global_messages_unroutable_returned_total", RMQ), RI), "returned")],
                   unit=MSG_RATE),
            ]),
            Row("Message flow (the official overview's rates)", [
                ts("Routed, acknowledged, redelivered / s",
                   "Messages routed to at least one queue, acknowledged by consumers, and "
                   "redelivered (delivered again after a consumer failed or rejected), per "
                   "second, cluster-wide. Redeliveries above a trickle mean consumers crash or "
                   "reject.",
                   [target("sum(rate(%s[%s]))" % (m("rabbitmq_global_messages_routed_total", RMQ), RI), "routed"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_global_messages_acknowledged_total", RMQ), RI), "acknowledged"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_global_messages_redelivered_total", RMQ), RI), "redelivered")],
                   unit=MSG_RATE, width=8),
                ts("Unconfirmed messages",
                   "Messages published with confirms that the broker has not confirmed yet, per "
                   "node (channels on that node). Growing values: queues cannot keep up "
                   "(replication, disk).",
                   [target("sum by (rabbitmq_node) (%s)" % m("rabbitmq_channel_messages_unconfirmed", RMQ), **per_node)],
                   width=8),
                ts("Queue and channel churn",
                   "Queues declared, created and deleted, and channels opened and closed, per "
                   "second. Steady churn costs CPU and (for quorum queues) Raft work.",
                   [target("sum(rate(%s[%s]))" % (m("rabbitmq_queues_declared_total", RMQ), RI), "queues declared"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_queues_created_total", RMQ), RI), "queues created"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_queues_deleted_total", RMQ), RI), "queues deleted"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_channels_opened_total", RMQ), RI), "channels opened"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_channels_closed_total", RMQ), RI), "channels closed")],
                   unit="ops", width=8),
            ]),
            Row("Backlog", [
                ts("Messages ready",
                   "Messages waiting in queues for a consumer, summed per node (the node that "
                   "hosts the queue or its leader). Steady growth means consumers do not keep up.",
                   [target("sum by (rabbitmq_node) (%s)" % m("rabbitmq_queue_messages_ready", RMQ), **per_node)],
                   stack=True),
                ts("Messages unacknowledged",
                   "Messages delivered to consumers and not yet acknowledged, per node. High "
                   "values with low delivery rates point at slow or stuck consumers.",
                   [target("sum by (rabbitmq_node) (%s)" % m("rabbitmq_queue_messages_unacked", RMQ), **per_node)],
                   stack=True),
            ]),
            Row("Clients", [
                ts("Connections",
                   "Open client connections per node.",
                   [target("sum by (rabbitmq_node) (%s)" % m("rabbitmq_connections", RMQ), **per_node)],
                   width=8, stack=True),
                ts("Channels",
                   "Open channels per node. Many channels per connection, or channels growing "
                   "steadily, usually mean a client leaks them.",
                   [target("sum by (rabbitmq_node) (%s)" % m("rabbitmq_channels", RMQ), **per_node)],
                   width=8, stack=True),
                ts("Consumers",
                   "Consumers per node (the node of the consumer's channel). A drop means "
                   "consumer applications disconnected.",
                   [target("sum by (rabbitmq_node) (%s)" % m("rabbitmq_consumers", RMQ), **per_node)],
                   width=8, stack=True),
                ts("Connection churn",
                   "Connections opened and closed per second, cluster-wide. High churn costs "
                   "CPU and memory; clients should keep long-lived connections.",
                   [target("sum(rate(%s[%s]))" % (m("rabbitmq_connections_opened_total", RMQ), RI), "opened"),
                    target("sum(rate(%s[%s]))" % (m("rabbitmq_connections_closed_total", RMQ), RI), "closed")],
                   unit="ops", width=24),
            ]),
            Row("CPU: the Erlang VM beside the host", [
                ts("Broker CPU (Erlang VM)",
                   "CPU time the Erlang VM used per second, in cores, per node "
                   "(erlang_vm_statistics_runtime_milliseconds), beside the host's busy CPUs in "
                   "cores. A VM near the host's total: RabbitMQ is the load.",
                   [target("sum by (rabbitmq_node) (rate(%s[%s])) / 1000"
                           % (m("erlang_vm_statistics_runtime_milliseconds", RMQ), RI), "{{rabbitmq_node}} Erlang VM"),
                    target("sum by (rabbitmq_node) (1 - rate(%s[%s]))"
                           % (m("node_cpu_seconds_total", 'job="node", rabbitmq_cluster="$rabbitmq_cluster", '
                                'rabbitmq_node=~"$rabbitmq_node"', 'mode="idle"'), RI), "{{rabbitmq_node}} host")],
                   unit="short", width=8),
                ts("Scheduler utilisation",
                   "Erlang VM CPU time divided by its online schedulers: how busy the schedulers "
                   "are on average (1 = every scheduler busy all the time). Approximation from "
                   "runtime; the exact figure needs scheduler_wall_time, not exported by 4.0.5.",
                   [target("sum by (rabbitmq_node) (rate(%s[%s])) / 1000 / max by (rabbitmq_node) (%s)"
                           % (m("erlang_vm_statistics_runtime_milliseconds", RMQ), RI,
                              m("erlang_vm_schedulers_online", RMQ)), **per_node)],
                   unit="percentunit", minimum=0, maximum=1, thresholds=[(0.8, "orange")], width=8),
                ts("Run queue",
                   "Erlang processes ready to run and waiting for a scheduler, per node. "
                   "Persistently above the number of schedulers: the node is CPU-bound.",
                   [target("sum by (rabbitmq_node) (%s)" % m("erlang_vm_statistics_run_queues_length", RMQ), **per_node)],
                   width=8),
            ]),
            Row("Memory by category", [
                ts("Erlang memory: processes and system",
                   "Memory the Erlang VM allocated for processes (connections, channels, queues) "
                   "and for the system (binaries, ETS tables, code, atoms), per node.",
                   [target("max by (rabbitmq_node, kind) (%s)" % m("erlang_vm_memory_bytes_total", RMQ),
                           "{{rabbitmq_node}} {{kind}}")], unit="bytes", stack=True),
                ts("Erlang system memory by use",
                   "System memory by use, per node: binary (message bodies in flight), ets "
                   "(tables: metrics, queue indexes, the metadata store), code, atom, other. "
                   "rabbitmq-diagnostics memory_breakdown gives RabbitMQ's own finer split.",
                   [target("max by (rabbitmq_node, usage) (%s)" % m("erlang_vm_memory_system_bytes_total", RMQ),
                           "{{rabbitmq_node}} {{usage}}")], unit="bytes", stack=True),
            ]),
            Row("Erlang distribution (links between nodes, per peer)", [
                ts("Link state per peer",
                   "State of each node's distribution link to each peer: 3 up, 2 pending, 1 "
                   "idle. A partition longer than net_ticktime takes links down; shorter ones "
                   "show as a flat line in the traffic panel (RabbitMQDistributionLinkSilent).",
                   [target("max by (rabbitmq_node, peer) (%s)" % m("erlang_vm_dist_node_state", RMQ),
                           "{{rabbitmq_node}} -> {{peer}}")], decimals=0, width=8),
                ts("Traffic per peer",
                   "Bytes received from and sent to each peer per second. Healthy peers talk "
                   "every second; a line at 0 is a cut link.",
                   [target("sum by (rabbitmq_node, peer) (rate(%s[%s]))"
                           % (m("erlang_vm_dist_recv_bytes", RMQ), RI), "{{rabbitmq_node}} <- {{peer}}"),
                    target("sum by (rabbitmq_node, peer) (rate(%s[%s]))"
                           % (m("erlang_vm_dist_send_bytes", RMQ), RI), "{{rabbitmq_node}} -> {{peer}}")],
                   unit="Bps", width=8),
                ts("Buffers per peer",
                   "Bytes queued for each peer: in the distribution port's queue and pending in "
                   "the send buffer. Growth means the link or the peer cannot keep up.",
                   [target("max by (rabbitmq_node, peer) (%s)" % m("erlang_vm_dist_node_queue_size_bytes", RMQ),
                           "{{rabbitmq_node}} -> {{peer}} queue"),
                    target("max by (rabbitmq_node, peer) (%s)" % m("erlang_vm_dist_send_pend_bytes", RMQ),
                           "{{rabbitmq_node}} -> {{peer}} pending")],
                   unit="bytes", width=8),
            ]),
            Row("Resource headroom",
                headroom("Memory used vs high watermark",
                         "Resident memory of each node against its memory high watermark. "
                         "Reaching the watermark raises the memory alarm and blocks publishers.",
                         "rabbitmq_process_resident_memory_bytes", "used",
                         "rabbitmq_resident_memory_limit_bytes", "watermark", "bytes",
                         "Memory used of watermark",
                         "Highest ratio of resident memory to the high watermark over the "
                         "selected nodes. 100% is the memory alarm.", (0.7, 0.9))
                + headroom("Disk free vs limit",
                           "Free disk space on each node's data directory partition against the "
                           "free disk limit. Going below the limit raises the disk alarm and "
                           "blocks publishers.",
                           "rabbitmq_disk_space_available_bytes", "free",
                           "rabbitmq_disk_space_available_limit_bytes", "limit", "bytes",
                           "Disk limit of free space",
                           "Highest ratio of the free disk limit to the free space over the "
                           "selected nodes. 100% is the disk alarm; lower is better.", (0.5, 0.8),
                           inverted=True)
                + headroom("File descriptors used vs max",
                           "Open file descriptors of each node against the process limit. Every "
                           "connection uses one; at the limit new connections are refused.",
                           "rabbitmq_process_open_fds", "used", "rabbitmq_process_max_fds", "max",
                           "short", "File descriptors used of max",
                           "Highest ratio of open file descriptors to the limit over the "
                           "selected nodes.", (0.7, 0.9))
                + headroom("Erlang processes used vs limit",
                           "Erlang processes on each node against the VM's process limit. Every "
                           "connection, channel and queue is at least one process.",
                           "rabbitmq_erlang_processes_used", "used",
                           "rabbitmq_erlang_processes_limit", "limit", "short",
                           "Erlang processes used of limit",
                           "Highest ratio of Erlang processes to the VM limit over the selected "
                           "nodes. At the limit the node cannot open connections or queues.",
                           (0.7, 0.9))),
        ],
    }


def queues():
    by_queue = {"legend": "{{vhost}} / {{queue}}"}
    return {
        "uid": "warren-queues",
        "title": "warren / RabbitMQ queues",
        "description": "Per-queue backlog, growth and consumers from the rabbitmq_detailed job.",
        "variables": [
            var_datasource(),
            var_cluster('rabbitmq_identity_info{job="rabbitmq"}'),
            var_query("vhost", "Vhost",
                      'label_values(rabbitmq_detailed_queue_messages{%s}, vhost)' % DET,
                      multi=True, include_all=True, all_value=".*"),
            var_query("queue", "Queue",
                      'label_values(rabbitmq_detailed_queue_messages{%s, vhost=~"$vhost"}, queue)'
                      % DET, multi=True, include_all=True, all_value=".*"),
        ],
        "rows": [
            Row("Queues", [
                table("Selected queues",
                      "Each selected queue with its messages (ready + unacked), ready, unacked "
                      "and consumers, and the node reporting it (the node of a classic queue, "
                      "the leader of a quorum queue).",
                      ["max by (vhost, queue, rabbitmq_node) (%s)" % m("rabbitmq_detailed_queue_messages", QSEL),
                       "max by (vhost, queue, rabbitmq_node) (%s)" % m("rabbitmq_detailed_queue_messages_ready", QSEL),
                       "max by (vhost, queue, rabbitmq_node) (%s)" % m("rabbitmq_detailed_queue_messages_unacked", QSEL),
                       "max by (vhost, queue, rabbitmq_node) (%s)" % m("rabbitmq_detailed_queue_consumers", QSEL)],
                      columns=["messages", "ready", "unacked", "consumers"], height=9),
                stat("Queues with messages and no consumer",
                     "Selected queues holding messages while nobody consumes from them. Such "
                     "backlogs only grow; 0 when every queue with messages is consumed.",
                     [target("count((max by (vhost, queue) (%s) > 0) unless on (vhost, queue) "
                             "(max by (vhost, queue) (%s) > 0)) or vector(0)"
                             % (m("rabbitmq_detailed_queue_messages", QSEL),
                                m("rabbitmq_detailed_queue_consumers", QSEL)))],
                     thresholds=[(1, "orange")], decimals=0),
                stat("Messages in selected queues",
                     "Sum of ready and unacknowledged messages over the selected queues.",
                     [target("sum(%s)" % m("rabbitmq_detailed_queue_messages", QSEL))],
                     decimals=0),
                stat("Consumers on selected queues",
                     "Sum of consumers over the selected queues.",
                     [target("sum(%s)" % m("rabbitmq_detailed_queue_consumers", QSEL))],
                     decimals=0),
                table("Deepest queues in the cluster",
                      "The ten queues with the most messages in the cluster, whatever the "
                      "vhost and queue selection.",
                      ["topk(10, max by (vhost, queue) (%s))" % m("rabbitmq_detailed_queue_messages", DET)],
                      columns=["messages"], width=6, height=4),
            ]),
            Row("Per queue", [
                ts("Ready messages",
                   "Messages waiting for a consumer, per queue.",
                   [target("max by (vhost, queue) (%s)" % m("rabbitmq_detailed_queue_messages_ready", QSEL), **by_queue)]),
                ts("Unacknowledged messages",
                   "Messages delivered and not yet acknowledged, per queue. Bounded by the "
                   "consumers' prefetch when they are healthy.",
                   [target("max by (vhost, queue) (%s)" % m("rabbitmq_detailed_queue_messages_unacked", QSEL), **by_queue)]),
                ts("Growth rate",
                   "Change of the queue depth (ready + unacked) per second over 5 minutes, per "
                   "queue: positive means publishers outpace consumers. The max over the nodes "
                   "reporting the queue, never the sum (a leader move briefly shows it twice).",
                   [target("max by (vhost, queue) (deriv(%s[5m]))" % m("rabbitmq_detailed_queue_messages", QSEL), **by_queue)],
                   unit=MSG_RATE, minimum=None),
                ts("Consumers",
                   "Consumers attached to each queue.",
                   [target("max by (vhost, queue) (%s)" % m("rabbitmq_detailed_queue_consumers", QSEL), **by_queue)]),
                ts("Queue work (reductions / s)",
                   "Erlang reductions per second spent by each queue's process: a proxy for "
                   "how busy a queue is. Per-queue publish rates need the detailed "
                   "queue_exchange_metrics family, which the scrape does not request.",
                   [target("sum by (vhost, queue) (rate(%s[%s]))"
                           % (m("rabbitmq_detailed_queue_process_reductions_total", QSEL), RI), **by_queue)],
                   unit="ops", width=24),
            ]),
        ],
    }


def quorum():
    qq = 'queue!=""'
    return {
        "uid": "warren-quorum",
        "title": "warren / RabbitMQ quorum queues and Raft",
        "description": "Quorum queue leaders and members per node, and Raft log progress.",
        "variables": [var_datasource(), var_cluster('rabbitmq_identity_info{job="rabbitmq"}'),
                      var_nodes()],
        "rows": [
            Row("Leaders and members", [
                ts("Quorum queue leaders per node",
                   "Quorum queues led by each node: a quorum queue's metrics come from its "
                   "leader only, so counting the queues that also have Raft members gives the "
                   "leaders. A node with no leaders after a restart can be rebalanced with "
                   "rabbitmq-queues rebalance quorum.",
                   [target("count by (rabbitmq_node) (%s and on (vhost, queue) %s)"
                           % (m("rabbitmq_detailed_queue_messages", DET),
                              m("rabbitmq_detailed_raft_term_total", DET, qq)), "{{rabbitmq_node}}")],
                   stack=True, decimals=0),
                ts("Quorum queue members per node",
                   "Raft members of quorum queues (leaders and followers) running on each "
                   "node. A node that drops out loses all its members here.",
                   [target("count by (rabbitmq_node) (%s)" % m("rabbitmq_detailed_raft_term_total", DET, qq),
                           "{{rabbitmq_node}}")],
                   stack=True, decimals=0),
                table("Members per quorum queue",
                      "Raft members reporting for each quorum queue, and the spread of their "
                      "commit indexes (entries the slowest member is behind the fastest). "
                      "Fewer members than the replication factor means members are down.",
                      ["count by (vhost, queue) (%s)" % m("rabbitmq_detailed_raft_term_total", DET, qq),
                       "max by (vhost, queue) (%s) - min by (vhost, queue) (%s)"
                       % (m("rabbitmq_detailed_raft_log_commit_index", DET, qq),
                          m("rabbitmq_detailed_raft_log_commit_index", DET, qq))],
                      columns=["members", "commit index spread"], height=8),
            ]),
            Row("Raft log (sum over the Raft members on each node)", [
                ts("Raft entries committed / s",
                   "Growth of each Raft member's commit index per second, then summed per "
                   "node: quorum queue (and metadata store) write throughput as Raft sees it. "
                   "Rates are taken per member first, so a deleted queue does not read as a "
                   "counter reset.",
                   [target("sum by (rabbitmq_node) (rate(%s[5m]))" % m("rabbitmq_detailed_raft_log_commit_index", DET),
                           "{{rabbitmq_node}}")], unit="ops"),
                ts("Raft entry commit latency",
                   "Mean time for an entry to be committed, over the Raft members on each "
                   "node. Rises with slow disks (fsync) or a slow network between members.",
                   [target("max by (rabbitmq_node) (%s)" % m("rabbitmq_raft_entry_commit_latency_seconds", RMQ),
                           "{{rabbitmq_node}}")], unit="s"),
                ts("Entries written but not committed",
                   "Last written index minus commit index, summed per node: entries waiting "
                   "for a majority of members. Near 0 when members keep up.",
                   [target("max by (rabbitmq_node) (%s - %s)"
                           % (m("rabbitmq_raft_log_last_written_index", RMQ),
                              m("rabbitmq_raft_log_commit_index", RMQ)), "{{rabbitmq_node}}")]),
                ts("Entries committed but not applied",
                   "Commit index minus last applied index, summed per node: committed "
                   "entries the queue state machine has not processed yet. Near 0 when "
                   "healthy.",
                   [target("max by (rabbitmq_node) (%s - %s)"
                           % (m("rabbitmq_raft_log_commit_index", RMQ),
                              m("rabbitmq_raft_log_last_applied_index", RMQ)), "{{rabbitmq_node}}")]),
                ts("Entries since last snapshot",
                   "Last applied index minus snapshot index, summed per node: log entries "
                   "kept on disk and in memory until the next snapshot. Grows with "
                   "long backlogs in quorum queues.",
                   [target("max by (rabbitmq_node) (%s - %s)"
                           % (m("rabbitmq_raft_log_last_applied_index", RMQ),
                              m("rabbitmq_raft_log_snapshot_index", RMQ)), "{{rabbitmq_node}}")]),
                ts("Raft term changes (elections)",
                   "Increase of each Raft member's term over 5 minutes, then summed per node. "
                   "Every leader election bumps a term; 0 on a quiet, healthy cluster. Per "
                   "member first: with the per-node sum, deleting one of 3000 queues read as "
                   "2997 elections.",
                   [target("sum by (rabbitmq_node) (increase(%s[5m]))" % m("rabbitmq_detailed_raft_term_total", DET),
                           "{{rabbitmq_node}}")], decimals=0),
            ]),
        ],
    }


def hosts():
    by_host = {"legend": "{{host}}"}
    cpus = "count by (host) (%s)" % m("node_cpu_seconds_total", NODE, 'mode="idle"')
    return {
        "uid": "warren-hosts",
        "title": "warren / hosts",
        "description": "node_exporter view of every host: brokers and the monitoring host.",
        "variables": [
            var_datasource(),
            var_query("rabbitmq_cluster", "Cluster",
                      'label_values(node_uname_info{job="node"}, rabbitmq_cluster)',
                      multi=True, include_all=True, all_value=".*"),
            var_query("host", "Host",
                      'label_values(node_uname_info{job="node", rabbitmq_cluster=~"$rabbitmq_cluster"}, host)',
                      multi=True, include_all=True, all_value=".*"),
        ],
        "rows": [
            Row("Hosts", [
                table("Hosts",
                      "Every selected host: node_exporter scrape status (1 up) and kernel "
                      "release. With cluster All, hosts outside any cluster (the monitoring "
                      "host) are listed too.",
                      ["max by (host) (up{%s})" % NODE,
                       "max by (host, release) (%s)" % m("node_uname_info", NODE)],
                      columns=["up", "uname"], height=6,
                      overrides=[{"matcher": {"id": "byName", "options": "uname"},
                                  "properties": [{"id": "custom.hidden", "value": True}]}]),
            ]),
            Row("CPU and load", [
                ts("CPU busy",
                   "Share of CPU time not idle, averaged over each host's CPUs.",
                   [target("1 - avg by (host) (rate(%s[%s]))" % (m("node_cpu_seconds_total", NODE, 'mode="idle"'), RI), **by_host)],
                   unit="percentunit", minimum=0, maximum=1, thresholds=[(0.8, "orange")]),
                ts("CPU iowait and steal",
                   "Share of CPU time waiting for I/O or taken by the hypervisor, per host. "
                   "High iowait slows fsync and so quorum queue commits.",
                   [target("avg by (host, mode) (rate(%s[%s]))"
                           % (m("node_cpu_seconds_total", NODE, 'mode=~"iowait|steal"'), RI),
                           "{{host}} {{mode}}")],
                   unit="percentunit", minimum=0),
                ts("Load per CPU",
                   "1-minute load average divided by the number of CPUs. Above 1 means "
                   "runnable work waits for a CPU.",
                   [target("%s / on (host) %s" % (m("node_load1", NODE), cpus), **by_host)],
                   thresholds=[(1, "orange")]),
                ts("Load average",
                   "1, 5 and 15-minute load averages per host.",
                   [target(m("node_load1", NODE), "{{host}} 1m"),
                    target(m("node_load5", NODE), "{{host}} 5m"),
                    target(m("node_load15", NODE), "{{host}} 15m")]),
            ]),
            Row("Memory and disk", [
                ts("Memory available",
                   "Memory the kernel can hand out without swapping, as a share of total, per "
                   "host.",
                   [target("%s / %s" % (m("node_memory_MemAvailable_bytes", NODE),
                                        m("node_memory_MemTotal_bytes", NODE)), **by_host)],
                   unit="percentunit", minimum=0, maximum=1),
                ts("Memory used",
                   "Total minus available memory, per host.",
                   [target("%s - %s" % (m("node_memory_MemTotal_bytes", NODE),
                                        m("node_memory_MemAvailable_bytes", NODE)), **by_host)],
                   unit="bytes"),
                ts("Filesystem space used",
                   "Used share of each real filesystem (tmpfs, overlay and similar left out), "
                   "per host and mount point.",
                   [target("1 - %s / %s" % (m("node_filesystem_avail_bytes", NODE, FS),
                                            m("node_filesystem_size_bytes", NODE, FS)),
                           "{{host}} {{mountpoint}}")],
                   unit="percentunit", minimum=0, maximum=1, thresholds=[(0.85, "orange")]),
                ts("Disk busy",
                   "Share of time each block device had I/O in flight, per host.",
                   [target("rate(%s[%s])" % (m("node_disk_io_time_seconds_total", NODE), RI),
                           "{{host}} {{device}}")],
                   unit="percentunit", minimum=0),
                ts("Disk throughput",
                   "Bytes read and written per second, per host and device.",
                   [target("rate(%s[%s])" % (m("node_disk_read_bytes_total", NODE), RI), "{{host}} {{device}} read"),
                    target("rate(%s[%s])" % (m("node_disk_written_bytes_total", NODE), RI), "{{host}} {{device}} written")],
                   unit="Bps", width=24),
            ]),
            Row("Network and time", [
                ts("Network traffic",
                   "Bytes received and transmitted per second on each interface except "
                   "loopback, per host.",
                   [target("rate(%s[%s])" % (m("node_network_receive_bytes_total", NODE, 'device!="lo"'), RI), "{{host}} {{device}} in"),
                    target("rate(%s[%s])" % (m("node_network_transmit_bytes_total", NODE, 'device!="lo"'), RI), "{{host}} {{device}} out")],
                   unit="Bps"),
                ts("Clock offset",
                   "Offset of the system clock from its time source as the kernel reports "
                   "it, per host. Erlang distribution and TLS tolerate little drift.",
                   [target(m("node_timex_offset_seconds", NODE), **by_host)], unit="s",
                   minimum=None, thresholds=[(0.05, "orange")]),
                stat("Clock synchronised",
                     "Hosts whose kernel reports the clock as synchronised (1) to a time "
                     "source, out of the selected hosts. Containers often report 0.",
                     [target("sum(%s)" % m("node_timex_sync_status", NODE), "synchronised"),
                      target("count(%s)" % m("node_timex_sync_status", NODE), "hosts")],
                     decimals=0, width=12),
                stat("Uptime",
                     "Time since each host booted.",
                     [target("time() - %s" % m("node_boot_time_seconds", NODE), **by_host)],
                     unit="s", width=12),
            ]),
        ],
    }


def canary_slo():
    ok = m("warren_canary_probes_total", CAN, 'result="ok"')
    every = m("warren_canary_probes_total", CAN)

    def availability(window):
        return "sum(increase(%s[%s])) / sum(increase(%s[%s]))" % (ok, window, every, window)

    def quantile(q, metric, window="5m"):
        return ("histogram_quantile(%s, sum by (le) (rate(%s[%s])))"
                % (q, m(metric + "_bucket", CAN), window))

    budget = "1 - (1 - (%s)) / (1 - $slo_objective)"
    # 30 days come from a recording rule evaluated every 5 minutes (canary-slo.yml, group
    # warren.canary.slo.long), never recomputed over 30 days of raw samples per panel point.
    long30 = "1 - %s" % m("rabbitmq_cluster:warren_canary_probe_errors:ratio_rate30d",
                          'rabbitmq_cluster="$rabbitmq_cluster"')
    return {
        "uid": "warren-canary-slo",
        "title": "warren / canary SLO",
        "description": "The AMQP canary's probes as an SLI: availability against a 99.9% "
                       "objective over 30 days, error budget and latency.",
        "variables": [var_datasource(), var_cluster('warren_canary_build_info{job="canary"}'),
                      var_constant("slo_objective", SLO_OBJECTIVE)],
        "rows": [
            Row("Objective: 99.9% of probes ok over 30 days", [
                stat("Availability, 30 days (or since data starts)",
                     "Share of canary probes with result ok over the last 30 days, from the "
                     "recording rule rabbitmq_cluster:warren_canary_probe_errors:ratio_rate30d. "
                     "A full 30 days needs prometheus_retention_time of at least 31d (the "
                     "default); with less (the lab keeps 2d) it covers the data there is. Red "
                     "below the 99.9% objective.",
                     [target(long30)], unit="percentunit", decimals=3,
                     thresholds=[(0.999, "green")], base="red", width=6),
                stat("Error budget remaining, 30 days (or since data starts)",
                     "Share of the 30-day error budget (0.1% of probes) not yet spent. Red when "
                     "spent (0 or negative: the objective is missed), orange below half.",
                     [target(budget % long30)], unit="percentunit", decimals=1,
                     thresholds=[(0.0001, "orange"), (0.5, "green")], base="red", width=6),
                stat("Availability, dashboard range",
                     "Share of canary probes with result ok over the time range picked in "
                     "Grafana. Red below the 99.9% objective.",
                     [target(availability("$__range"))], unit="percentunit", decimals=3,
                     thresholds=[(0.999, "green")], base="red", width=6),
                stat("Since last ok probe",
                     "Seconds since the canary last completed a probe end to end. More than a "
                     "few probe intervals means the cluster fails the canary right now.",
                     [target("time() - max(%s)" % m("warren_canary_last_success_timestamp_seconds", CAN))],
                     unit="s", thresholds=[(30, "orange"), (120, "red")], width=6),
            ]),
            Row("Availability and budget burn", [
                ts("Availability",
                   "Share of ok probes over sliding 5-minute and 1-hour windows.",
                   [target(availability("5m"), "5m window"), target(availability("1h"), "1h window")],
                   unit="percentunit", maximum=1, minimum=None, thresholds=[(0.999, "green")],
                   base="red"),
                ts("Error budget burn rate",
                   "How fast the error budget burns: the failed-probe ratio divided by the "
                   "budget (0.1%). 1 spends it in exactly 30 days. Both page thresholds are "
                   "here: 14.4 over 1 h (with 5 m) and 6 over 6 h (with 30 m) page "
                   "(RabbitMQCanaryErrorBudgetFastBurn); the tickets are 3 over 1 d and 1 over "
                   "3 d.",
                   [target("(1 - (%s)) / (1 - $slo_objective)" % availability("1h"), "1h"),
                    target("(1 - (%s)) / (1 - $slo_objective)" % availability("6h"), "6h")],
                   thresholds=[(6, "orange"), (14.4, "red")]),
                ts("Error budget remaining (30 days, or since data starts)",
                   "Error budget left over the 30 days ending at each point in time, from the "
                   "5-minute recording of the 30-day ratio (no 30-day recomputation per point). "
                   "Red below 0: the objective is missed.",
                   [target(budget % long30, "remaining")],
                   unit="percentunit", minimum=None, maximum=1, thresholds=[(0.0001, "green")],
                   base="red", width=24),
            ]),
            Row("Latency", [
                ts("End-to-end latency",
                   "Time from publish to delivery back to the canary (confirmed, routed, "
                   "replicated and delivered), percentiles over 5 minutes of ok probes. The "
                   "objective: 99% within 250 ms (RabbitMQCanaryLatencyBudgetFastBurn pages). "
                   "The load generator's latencies are not here: it writes HdrHistogram logs "
                   "and a report per run, and exports nothing to Prometheus.",
                   [target(quantile(q, "warren_canary_end_to_end_seconds"), "p%s" % int(float(q) * 100))
                    for q in ("0.5", "0.9", "0.99")], unit="s"),
                ts("Publish-confirm latency",
                   "Time from publish to the broker's publisher confirm (the message is on a "
                   "majority of quorum queue members), percentiles over 5 minutes.",
                   [target(quantile(q, "warren_canary_publish_confirm_seconds"), "p%s" % int(float(q) * 100))
                    for q in ("0.5", "0.9", "0.99")], unit="s"),
            ]),
            Row("Per node (the canary probes through every broker)", [
                ts("Probe ok through each node",
                   "1 when the canary's last probe through that broker was ok (it connects to "
                   "every node and publishes to a queue led elsewhere). 0 for 30 s pages "
                   "(RabbitMQCanaryNodeProbeFailing): that node accepts connections but cannot "
                   "serve.",
                   [target("max by (node) (%s)" % m("warren_canary_node_up", CAN), "{{node}}")],
                   minimum=0, maximum=1, decimals=0,
                   empty_reason="exported by canaries with per-node probing (contract 6) only"),
                ts("Probe results per node",
                   "Probes per second through each broker by result; failures are 0 on a "
                   "healthy cluster.",
                   [target("sum by (node, result) (rate(%s[%s]))"
                           % (m("warren_canary_node_probes_total", CAN), RI), "{{node}} {{result}}")],
                   unit="ops", empty_reason="exported by canaries with per-node probing (contract 6) only"),
            ]),
            Row("Probes", [
                ts("Probe results",
                   "Probes per second by result: ok, publish_failed, confirm_timeout, "
                   "consume_timeout, connection_failed, payload_mismatch. Failures are 0 on a "
                   "healthy cluster.",
                   [target("sum by (result) (rate(%s[%s]))" % (every, RI), "{{result}}")],
                   unit="ops", stack=True),
                ts("Reconnects and stale messages",
                   "Connections the canary had to reopen, and leftover messages (from probes "
                   "that timed out) it acked and dropped, per 5 minutes.",
                   [target("sum(increase(%s[5m]))" % m("warren_canary_reconnects_total", CAN), "reconnects"),
                    target("sum(increase(%s[5m]))" % m("warren_canary_stale_messages_total", CAN), "stale messages")],
                   decimals=0),
                table("Canary",
                      "The broker node each canary is connected to (1) and its version.",
                      ["max by (host, node) (%s)" % m("warren_canary_connected", CAN),
                       "max by (host, version, pika, python) (%s)" % m("warren_canary_build_info", CAN)],
                      columns=["connected", "build"], height=6,
                      overrides=[{"matcher": {"id": "byName", "options": "build"},
                                  "properties": [{"id": "custom.hidden", "value": True}]}]),
            ]),
        ],
    }


DASHBOARDS = (overview, queues, quorum, hosts, canary_slo)


# --------------------------------------------------------------------------------------------
# assembly
# --------------------------------------------------------------------------------------------


def layout(rows):
    """Rows and panels with ids in definition order and gridPos filling 24 columns."""
    panels, next_id, y = [], 1, 0
    for row in rows:
        panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(panel.render(next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def build(spec):
    return {
        "id": None,
        "uid": spec["uid"],
        "title": spec["title"],
        "description": spec["description"],
        "tags": ["warren", "rabbitmq"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "weekStart": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"asDropdown": True, "icon": "external link", "includeVars": True,
                   "keepTime": True, "tags": ["warren"], "targetBlank": False,
                   "title": "warren", "type": "dashboards"}],
        "templating": {"list": spec["variables"]},
        "panels": layout(spec["rows"]),
    }


def render_all():
    """{file name: JSON text} for every dashboard."""
    files = {}
    for make in DASHBOARDS:
        spec = make()
        files[spec["uid"] + ".json"] = json.dumps(build(spec), indent=2, sort_keys=True) + "\n"
    return files


def empty_reasons():
    """{(uid, panel title): reason} for panels allowed to return no data on a healthy cluster."""
    reasons = {}
    for make in DASHBOARDS:
        spec = make()
        for row in spec["rows"]:
            for panel in row.panels:
                if panel.empty_reason:
                    reasons[(spec["uid"], panel.title)] = panel.empty_reason
    return reasons


BUILTINS = {"__rate_interval": "1m", "__range": "1h", "__interval": "30s",
            "slo_objective": SLO_OBJECTIVE}


def resolve(expr, values):
    """Replace Grafana variables so that Prometheus can run the expression."""
    def matcher(match):
        label, op, name = match.group(1), match.group(2), match.group(3)
        if name in values:
            return '%s%s"%s"' % (label, op, values[name])
        return '%s=~".*"' % label

    expr = re.sub(r'([a-zA-Z_]\w*)\s*(=~|=)\s*"\$(\w+)"', matcher, expr)
    merged = dict(BUILTINS)
    merged.update(values)
    return re.sub(r"\$(\w+)", lambda mt: merged.get(mt.group(1), mt.group(0)), expr)


def list_queries(values):
    out = []
    reasons = empty_reasons()
    for name, text in sorted(render_all().items()):
        dashboard = json.loads(text)
        for panel in dashboard["panels"]:
            for t in panel.get("targets", []):
                out.append({"dashboard": dashboard["uid"], "panel": panel["title"],
                            "refId": t["refId"], "expr": t["expr"],
                            "resolved": resolve(t["expr"], values),
                            "empty_reason": reasons.get((dashboard["uid"], panel["title"]))})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files; exit 1 on any difference")
    parser.add_argument("--list-queries", action="store_true",
                        help="print every panel query as JSON")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="variable value for --list-queries' resolved expressions")
    parser.add_argument("--out", default=OUT_DIR, help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.list_queries:
        values = dict(item.split("=", 1) for item in args.set)
        print(json.dumps(list_queries(values), indent=2, sort_keys=True))
        return 0
    files = render_all()
    if args.check:
        problems = []
        for name, text in sorted(files.items()):
            path = os.path.join(args.out, name)
            try:
                with open(path, encoding="utf-8") as handle:
                    if handle.read() != text:
                        problems.append("%s differs from the generator's output" % path)
            except OSError:
                problems.append("%s is missing" % path)
        present = set(os.listdir(args.out)) if os.path.isdir(args.out) else set()
        for extra in sorted(n for n in present - set(files) if n.endswith(".json")):
            problems.append("%s is not produced by the generator" % os.path.join(args.out, extra))
        for problem in problems:
            print("build.py --check: " + problem, file=sys.stderr)
        if problems:
            print("run: python3 tools/dashboards/build.py", file=sys.stderr)
            return 1
        print("dashboards up to date: %s" % ", ".join(sorted(files)))
        return 0
    os.makedirs(args.out, exist_ok=True)
    for name, text in sorted(files.items()):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    print("wrote %d dashboards to %s" % (len(files), os.path.relpath(args.out, ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
