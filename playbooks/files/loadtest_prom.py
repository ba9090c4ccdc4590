#!/usr/bin/env python3
"""Per-node resource and broker metrics from Prometheus over a load-test window.

Runs on the monitoring host (playbooks/loadtest.yml copies it there with
ansible.builtin.script), so it only needs the Python standard library and reaches
Prometheus on its own loopback address. It prints one JSON document on stdout:

    {"prometheus": URL, "start": T0, "end": T1, "step": S, "window": "30s",
     "queries": {KEY: {"title", "unit", "resource", "use", "promql",
                       "series": {HOST: [[t, v], ...]}, "error": null}}}

The query catalogue below is the single list of what the report shows per node. Every metric
name in it exists on RabbitMQ 4.0.5 with node_exporter 1.9 (tests/unit/test_loadtest_prom.py
checks them against tests/unit/fixtures/metric-names-4.0.5.txt).

Lab caveat, repeated in every report: node_exporter inside a lab container reads the shared
kernel's /proc/stat and block devices, so machine CPU and disk figures are the whole 2-core
machine's, the same on every host. Per-broker figures come from RabbitMQ's own metrics
(Erlang runtime, rabbitmq_io_*, Raft) and from each container's own network namespace.
"""
import argparse
import json
import math
import sys
import urllib.error
import urllib.parse
import urllib.request

# KEY -> (title, unit, resource, USE column, PromQL). "{w}" is the rate window.
# resource groups the report's USE table; use is utilisation / saturation / errors / work.
CATALOGUE = {
    # CPU
    "broker_cpu_cores": (
        "RabbitMQ CPU (Erlang runtime)", "cores", "cpu", "utilisation",
        'sum by (host) (rate(erlang_vm_statistics_runtime_milliseconds{job="rabbitmq"}[{w}])) / 1000'),
    "scheduler_utilisation": (
        "Erlang scheduler utilisation (runtime / online schedulers)", "ratio", "cpu", "utilisation",
        'sum by (host) (rate(erlang_vm_statistics_runtime_milliseconds{job="rabbitmq"}[{w}])) / 1000'
        ' / sum by (host) (erlang_vm_schedulers_online{job="rabbitmq"})'),
    "run_queue": (
        "Erlang run queue length", "processes", "cpu", "saturation",
        'sum by (host) (erlang_vm_statistics_run_queues_length{job="rabbitmq"})'),
    "machine_cpu_busy": (
        "Machine CPU busy (node_exporter, whole machine in the lab)", "ratio", "cpu", "utilisation",
        '1 - avg by (host) (rate(node_cpu_seconds_total{job="node",mode="idle"}[{w}]))'),
    "cpu_pressure": (
        "CPU pressure: time some task waited for a CPU (PSI)", "ratio", "cpu", "saturation",
        'sum by (host) (rate(node_pressure_cpu_waiting_seconds_total{job="node"}[{w}]))'),
    # Memory
    "broker_memory_bytes": (
        "RabbitMQ resident memory", "bytes", "memory", "utilisation",
        'sum by (host) (rabbitmq_process_resident_memory_bytes{job="rabbitmq"})'),
    "broker_memory_limit_ratio": (
        "RabbitMQ memory / high watermark", "ratio", "memory", "utilisation",
        'sum by (host) (rabbitmq_process_resident_memory_bytes{job="rabbitmq"})'
        ' / sum by (host) (rabbitmq_resident_memory_limit_bytes{job="rabbitmq"})'),
    "memory_alarm": (
        "Memory alarm (publishers blocked)", "bool", "memory", "errors",
        'max by (host) (rabbitmq_alarms_memory_used_watermark{job="rabbitmq"})'),
    "memory_pressure": (
        "Memory pressure (PSI)", "ratio", "memory", "saturation",
        'sum by (host) (rate(node_pressure_memory_waiting_seconds_total{job="node"}[{w}]))'),
    # Disk
    "disk_write_bytes": (
        "Disk writes (node_exporter, whole machine in the lab)", "bytes/s", "disk", "work",
        'sum by (host) (rate(node_disk_written_bytes_total{job="node"}[{w}]))'),
    "disk_busy": (
        "Disk busy time", "ratio", "disk", "utilisation",
        'max by (host) (rate(node_disk_io_time_seconds_total{job="node"}[{w}]))'),
    "disk_queue": (
        "Disk average queue (weighted I/O time)", "requests", "disk", "saturation",
        'sum by (host) (rate(node_disk_io_time_weighted_seconds_total{job="node"}[{w}]))'),
    "disk_write_latency": (
        "Disk write latency (write time / writes)", "seconds", "disk", "saturation",
        'sum by (host) (rate(node_disk_write_time_seconds_total{job="node"}[{w}]))'
        ' / sum by (host) (rate(node_disk_writes_completed_total{job="node"}[{w}]))'),
    "io_pressure": (
        "I/O pressure: time some task waited for I/O (PSI)", "ratio", "disk", "saturation",
        'sum by (host) (rate(node_pressure_io_waiting_seconds_total{job="node"}[{w}]))'),
    "broker_write_bytes": (
        "RabbitMQ file writes (rabbitmq_io)", "bytes/s", "disk", "work",
        'sum by (host) (rate(rabbitmq_io_write_bytes_total{job="rabbitmq"}[{w}]))'),
    "broker_fsync_rate": (
        "RabbitMQ fsyncs (rabbitmq_io)", "ops/s", "disk", "work",
        'sum by (host) (rate(rabbitmq_io_sync_ops_total{job="rabbitmq"}[{w}]))'),
    "broker_fsync_latency": (
        "RabbitMQ fsync latency (sync time / syncs)", "seconds", "disk", "saturation",
        'sum by (host) (rate(rabbitmq_io_sync_time_seconds_total{job="rabbitmq"}[{w}]))'
        ' / sum by (host) (rate(rabbitmq_io_sync_ops_total{job="rabbitmq"}[{w}]))'),
    "disk_alarm": (
        "Disk alarm (publishers blocked)", "bool", "disk", "errors",
        'max by (host) (rabbitmq_alarms_free_disk_space_watermark{job="rabbitmq"})'),
    # Network (each lab container has its own network namespace: per node)
    "net_rx_bytes": (
        "Network received", "bytes/s", "network", "work",
        'sum by (host) (rate(node_network_receive_bytes_total{job="node",device!="lo"}[{w}]))'),
    "net_tx_bytes": (
        "Network sent", "bytes/s", "network", "work",
        'sum by (host) (rate(node_network_transmit_bytes_total{job="node",device!="lo"}[{w}]))'),
    "dist_port_queue_bytes": (
        "Inter-node distribution buffer (busy dist port)", "bytes", "network", "saturation",
        'sum by (host) (erlang_vm_dist_port_queue_size_bytes{job="rabbitmq"})'),
    "net_drops": (
        "Network drops (rx + tx)", "packets/s", "network", "errors",
        'sum by (host) (rate(node_network_receive_drop_total{job="node",device!="lo"}[{w}])'
        ' + rate(node_network_transmit_drop_total{job="node",device!="lo"}[{w}]))'),
    # Raft / WAL and queue depth
    "raft_commit_latency": (
        "Raft entry commit latency (max over the node's Raft members)", "seconds", "raft", "saturation",
        'max by (host) (rabbitmq_raft_entry_commit_latency_seconds{job="rabbitmq"})'),
    "raft_commits": (
        "Raft commits (commit index rate)", "entries/s", "raft", "work",
        'sum by (host) (rate(rabbitmq_raft_log_commit_index{job="rabbitmq"}[{w}]))'),
    "raft_wal_writes": (
        "Raft log writes (last written index rate: WAL throughput)", "entries/s", "raft", "work",
        'sum by (host) (rate(rabbitmq_raft_log_last_written_index{job="rabbitmq"}[{w}]))'),
    "raft_apply_backlog": (
        "Raft entries written but not yet applied", "entries", "raft", "saturation",
        'sum by (host) (rabbitmq_raft_log_last_written_index{job="rabbitmq"}'
        ' - rabbitmq_raft_log_last_applied_index{job="rabbitmq"})'),
    "queue_messages": (
        "Queue depth (ready + unacked)", "messages", "queues", "saturation",
        'sum by (host) (rabbitmq_queue_messages{job="rabbitmq"})'),
    "queue_messages_unacked": (
        "Unacknowledged messages", "messages", "queues", "saturation",
        'sum by (host) (rabbitmq_queue_messages_unacked{job="rabbitmq"})'),
    # Message rates
    "publish_rate": (
        "Published (received by the node)", "msg/s", "rates", "work",
        'sum by (host) (rate(rabbitmq_global_messages_received_total{job="rabbitmq"}[{w}]))'),
    "confirm_rate": (
        "Confirmed to publishers", "msg/s", "rates", "work",
        'sum by (host) (rate(rabbitmq_global_messages_confirmed_total{job="rabbitmq"}[{w}]))'),
    "deliver_rate": (
        "Delivered to consumers", "msg/s", "rates", "work",
        'sum by (host) (rate(rabbitmq_global_messages_delivered_total{job="rabbitmq"}[{w}]))'),
    "ack_rate": (
        "Acknowledged by consumers", "msg/s", "rates", "work",
        'sum by (host) (rate(rabbitmq_global_messages_acknowledged_total{job="rabbitmq"}[{w}]))'),
    # Flow control and blocking. RabbitMQ 4.0.5 exports no per-connection flow state; the
    # signs are unconfirmed messages piling up on channels, packets pending on connections,
    # and the alarms above (which block every publishing connection).
    "unconfirmed": (
        "Unconfirmed messages on channels", "messages", "flow", "saturation",
        'sum by (host) (rabbitmq_channel_messages_unconfirmed{job="rabbitmq"})'),
    "connection_pending_packets": (
        "Packets pending on client connections", "packets", "flow", "saturation",
        'sum by (host) (rabbitmq_connection_pending_packets{job="rabbitmq"})'),
}


def promql(key, window):
    """The catalogue query KEY with its rate window filled in."""
    return CATALOGUE[key][4].replace("{w}", window)


def rate_window(scrape_interval, step):
    """A rate window that always spans at least two scrapes: max(2 x scrape, step), in s."""
    return "%ds" % int(max(2 * scrape_interval, step))


def parse_matrix(payload):
    """Prometheus query_range JSON -> {host: [[t, v], ...]}; NaN/Inf points are dropped."""
    if payload.get("status") != "success":
        raise ValueError(payload.get("error", "query failed"))
    data = payload.get("data", {})
    if data.get("resultType") != "matrix":
        raise ValueError("expected a matrix, got %r" % data.get("resultType"))
    series = {}
    for result in data.get("result", []):
        host = result.get("metric", {}).get("host")
        if not host:  # not one of warren's targets (e.g. Debian's stock localhost job)
            continue
        points = []
        for t, v in result.get("values", []):
            value = float(v)
            if math.isfinite(value):
                points.append([float(t), value])
        series.setdefault(host, []).extend(points)
    return series


def query_range(base_url, expr, start, end, step, timeout=20.0):
    """One /api/v1/query_range call; returns the parsed JSON payload."""
    params = urllib.parse.urlencode(
        {"query": expr, "start": "%.3f" % start, "end": "%.3f" % end, "step": "%gs" % step})
    url = base_url.rstrip("/") + "/api/v1/query_range?" + params
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:  # Prometheus explains bad queries in the body
        body = exc.read().decode("utf-8", "replace")
        try:
            return json.loads(body)
        except ValueError:
            raise ValueError("HTTP %s: %s" % (exc.code, body[:200])) from exc


def collect(base_url, start, end, step, scrape_interval, fetch=query_range):
    """Run the whole catalogue; a failing query is recorded, not fatal."""
    window = rate_window(scrape_interval, step)
    out = {"prometheus": base_url, "start": start, "end": end, "step": step,
           "window": window, "queries": {}}
    for key, (title, unit, resource, use, _expr) in CATALOGUE.items():
        expr = promql(key, window)
        entry = {"title": title, "unit": unit, "resource": resource, "use": use,
                 "promql": expr, "series": {}, "error": None}
        try:
            entry["series"] = parse_matrix(fetch(base_url, expr, start, end, step))
        except (OSError, ValueError) as exc:
            entry["error"] = str(exc)
        out["queries"][key] = entry
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:9090")
    parser.add_argument("--start", type=float, required=True, help="epoch seconds")
    parser.add_argument("--end", type=float, required=True, help="epoch seconds")
    parser.add_argument("--step", type=float, default=5.0, help="query resolution, s")
    parser.add_argument("--scrape-interval", type=float, default=15.0)
    args = parser.parse_args(argv)
    if args.end <= args.start:
        parser.error("--end must be after --start")
    result = collect(args.url, args.start, args.end, args.step, args.scrape_interval)
    json.dump(result, sys.stdout)
    failed = [k for k, v in result["queries"].items() if v["error"]]
    print("%d queries, %d failed%s" % (len(result["queries"]), len(failed),
                                        (": " + ", ".join(failed)) if failed else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
