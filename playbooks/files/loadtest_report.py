#!/usr/bin/env python3
"""warren load-test report: merge the generator's results, judge every step, find the knee,
add the broker's resource metrics from Prometheus, write report.json, report.md and plots.

Run on the controller by playbooks/loadtest.yml (with the Python that runs Ansible: it has
hdrhistogram and matplotlib)::

    loadtest_report.py --results DIR --meta meta.json [--prom prom.json] --out REPORT_DIR

``--results`` holds one folder per generator run (``<run name>/<loadgen host>/``, the
``--out`` folders of ``python3 -m warren_amqp.traffic``); ``--meta`` is written by the playbook
(profile, runs, SLO, command line, lab description); ``--prom`` is loadtest_prom.py's output.

Rules (also written into every report):
* Histograms are merged across processes and hosts (HdrHistogram ``add``) before any
  percentile is read; percentiles are never averaged.
* A step is **invalid** when the generator's schedule lag p99 passes ``lag_bound_ms``: the
  generator was the limit, not the broker; an invalid step is not a broker result.
* A step **meets the SLO** when it is valid, achieved >= ``min_achieved_ratio`` x target and
  the p99 confirm latency (from the intended send time) is <= ``slo_p99_ms``.
* The **knee** is the highest target rate of the leading run of steps that meet the SLO
  (the first failing step ends the search).
"""
import argparse
import glob
import json
import os
import sys
import time

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9), ("max", 100.0))
LAB_NOTE = (
    "The lab is one 2-core machine: the three brokers, the load generator and the monitoring "
    "host are containers sharing its CPUs and its disk (and other work may run beside them). "
    "Compare figures as ratios within one run (quorum against classic, before against after a "
    "change), never as absolutes or against other machines.")

# What "saturated" means per resource for the USE verdict: (query key, threshold, label).
# A resource's score is the highest value/threshold of its indicators; >= 1 is saturated.
SATURATION_RULES = {
    "cpu": [("machine_cpu_busy", 0.90, "machine CPU busy"),
            ("cpu_pressure", 0.25, "CPU pressure (PSI some)"),
            ("scheduler_utilisation", 0.90, "Erlang scheduler utilisation")],
    "disk": [("disk_busy", 0.80, "disk busy"),
             ("io_pressure", 0.25, "I/O pressure (PSI some)"),
             ("disk_write_latency", 0.010, "disk write latency (s)"),
             ("broker_fsync_latency", 0.010, "RabbitMQ fsync latency (s)")],
    "raft": [("raft_commit_latency", 0.025, "Raft commit latency (s)"),
             ("raft_apply_backlog", 10000, "Raft apply backlog (entries)")],
    "memory": [("broker_memory_limit_ratio", 0.90, "memory / watermark"),
               ("memory_alarm", 1.0, "memory alarm")],
    "network": [("dist_port_queue_bytes", 1_000_000, "distribution buffer (bytes)"),
                ("net_drops", 1.0, "drops/s")],
    "flow": [("disk_alarm", 1.0, "disk alarm"),
             ("connection_pending_packets", 1000, "pending packets")],
}


class ReportError(Exception):
    """The inputs cannot make a report; the message says which file and why."""


# ---------------------------------------------------------------------------------------------
# Histograms: the client package's own (warren_amqp.hist: microseconds, 1 us..1 h, 3 digits)
CLIENT_LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "roles",
                          "amqp_client", "files")


def client_module(name, path=CLIENT_LIB):
    """warren_amqp.<name> from the client package shipped in the collection."""
    import importlib
    if os.path.isdir(path) and path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("warren_amqp." + name)


def merge_encoded(blobs):
    """Merge encoded HdrHistograms (any process, any host) into one histogram."""
    return client_module("hist").merge([b for b in blobs if b])


def hist_stats(hist):
    """count, mean, p50, p90, p99, p99.9, max in ms, rounded to the microsecond."""
    stats = client_module("hist").summary(hist)
    return {k: (v if k == "count" or v is None else round(v, 3)) for k, v in stats.items()}


# ---------------------------------------------------------------------------------------------
# Steps, verdicts, knee
def judge_step(step, slo_p99_ms, min_ratio, lag_bound_ms):
    """Add valid/meets_slo/reasons to a merged step dict and return it."""
    reasons = []
    # The generator's own lag (ready to send, window open, connection up, but too busy): the
    # engine's invalid-step rule. schedule_lag_ms (stalls included) is reported beside it.
    lag_p99 = (step.get("generator_lag_ms") or {}).get("p99")
    valid = client_module("schedule").step_valid(lag_p99, lag_bound_ms)
    if lag_p99 is None:
        reasons.append("no schedule-lag data: cannot tell the generator kept up")
    elif not valid:
        reasons.append("INVALID: generator lag p99 %.3f ms > %.3f ms (the generator "
                       "was the limit)" % (lag_p99, lag_bound_ms))
    target = step.get("target_rate") or 0.0
    achieved = step.get("achieved_rate") or 0.0
    ratio = achieved / target if target else None
    step["achieved_ratio"] = None if ratio is None else round(ratio, 4)
    if ratio is not None and ratio < min_ratio:
        reasons.append("achieved %.1f msg/s = %.2f%% of target %.1f (< %.0f%%)"
                       % (achieved, 100 * ratio, target, 100 * min_ratio))
    p99 = (step.get("confirm_latency_ms") or {}).get("p99")
    if p99 is None:
        reasons.append("no confirm latency recorded")
    elif p99 > slo_p99_ms:
        reasons.append("p99 confirm latency %.1f ms > SLO %.1f ms" % (p99, slo_p99_ms))
    step["valid"] = bool(valid)
    step["meets_slo"] = not reasons
    step["reasons"] = reasons
    return step


def find_knee(steps):
    """The highest target rate of the leading steps that meet the SLO, and what ended it."""
    knee = None
    stop = None
    for step in sorted(steps, key=lambda s: s.get("target_rate") or 0):
        if step.get("meets_slo"):
            knee = step
            continue
        stop = step
        break
    return {
        "rate": knee["target_rate"] if knee else None,
        "achieved_rate": knee["achieved_rate"] if knee else None,
        "step": knee["index"] if knee else None,
        "stopped_by": ({"step": stop["index"], "target_rate": stop["target_rate"],
                        "reasons": stop["reasons"]} if stop else None),
        "found": bool(knee and stop),
    }


# ---------------------------------------------------------------------------------------------
# Prometheus series
def window_stats(points, start, end):
    """mean and max of the [t, v] points inside [start, end]; None when there are none."""
    vals = [v for t, v in points if start <= t <= end]
    if not vals:
        return None
    return {"mean": sum(vals) / len(vals), "max": max(vals), "n": len(vals)}


def resource_window(prom, start, end):
    """The part of a step its resource figures are read from: a rate() point at time t covers
    [t - window, t], so the first rate window of a step still mixes in the step before it.
    Skip it (at most half the step), so a step's resources are its own."""
    try:
        window = float(str((prom or {}).get("window", "0")).rstrip("s") or 0)
    except ValueError:
        window = 0.0
    settle = min(window, (end - start) / 2.0)
    return [start + settle, end]


def step_resources(prom, start, end):
    """{query key: {host: {mean, max, n}}} for one step window."""
    out = {}
    for key, entry in (prom or {}).get("queries", {}).items():
        per_host = {}
        for host, points in entry.get("series", {}).items():
            stats = window_stats(points, start, end)
            if stats:
                per_host[host] = {k: (round(v, 6) if isinstance(v, float) else v)
                                  for k, v in stats.items()}
        out[key] = per_host
    return out


# An indicator already past its threshold before the traffic counts for a step only when the
# step reads at least this many times its value from before.
STALE_RISE = 1.5


def saturation(resources, generator, baseline=None):
    """USE verdict at one step: every resource's score (value / threshold), highest first.

    ``baseline`` is step_resources() over the time before the run's traffic: an indicator that
    was already past its threshold there (a stale gauge, e.g. rabbitmq_raft_entry_commit_latency
    keeps the last value of an idle Raft member) says nothing about this load and is listed with
    ``"before_the_run": true`` but never named as what saturated first, unless the step reads at
    least STALE_RISE times its value from before (then the load did raise it)."""
    scores = []
    stale = []
    baseline = baseline or {}
    for resource, rules in SATURATION_RULES.items():
        best = None
        for key, threshold, label in rules:
            per_host = resources.get(key) or {}
            for host, stats in per_host.items():
                before = (baseline.get(key) or {}).get(host)
                if threshold and before and before["mean"] >= threshold \
                        and stats["mean"] < STALE_RISE * before["mean"]:
                    stale.append({"resource": resource, "indicator": label, "host": host,
                                  "value": stats["mean"], "before_run": before["mean"],
                                  "threshold": threshold, "before_the_run": True})
                    continue
                score = stats["mean"] / threshold if threshold else 0.0
                if best is None or score > best["score"]:
                    best = {"resource": resource, "score": round(score, 3), "indicator": label,
                            "host": host, "value": stats["mean"], "threshold": threshold}
        if best:
            scores.append(best)
    if generator:
        lag = generator.get("lag_p99_ms")
        bound = generator.get("lag_bound_ms")
        cpu = generator.get("cpu_cores")
        cores = generator.get("cores_available")
        cand = []
        if lag is not None and bound:
            cand.append({"resource": "generator", "score": round(lag / bound, 3),
                         "indicator": "generator lag p99 (ms)", "host": "loadgen",
                         "value": lag, "threshold": bound})
        if cpu is not None and cores:
            cand.append({"resource": "generator", "score": round(cpu / (0.9 * cores), 3),
                         "indicator": "generator CPU (cores)", "host": "loadgen",
                         "value": cpu, "threshold": 0.9 * cores})
        if cand:
            scores.append(max(cand, key=lambda c: c["score"]))
    scores.sort(key=lambda s: s["score"], reverse=True)
    first = scores[0] if scores and scores[0]["score"] >= 1.0 else None
    return {"ranked": scores, "saturated_first": first, "past_threshold_before_the_run": stale}


# ---------------------------------------------------------------------------------------------
# Reading the generator's output
def load_runs(results_dir, loader):
    """{run name: [host dirs]} under results_dir/<run>/<host>/."""
    runs = {}
    for run_dir in sorted(glob.glob(os.path.join(results_dir, "*"))):
        if not os.path.isdir(run_dir):
            continue
        hosts = sorted(d for d in glob.glob(os.path.join(run_dir, "*")) if os.path.isdir(d))
        if hosts:
            runs[os.path.basename(run_dir)] = loader(hosts)
    return runs


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ReportError("%s: %s" % (path, exc)) from exc


def summarise_run(run_name, host_dirs, run_meta, rules, prom=None, checker=None, cores=None,
                  baseline_end=None):
    """Merge the hosts of one run step by step, judge every step, find the knee.
    ``baseline_end``: when the report's first traffic started (the USE baseline ends there)."""
    cores = cores or {}
    per_host = [read_engine_summary(d, cores.get(os.path.basename(d))) for d in host_dirs]
    steps = merge_steps(per_host)
    # What the indicators read before any traffic of this run (from the query window's start
    # to the first step, warm-up included in neither): the baseline of the USE verdict.
    baseline = None
    if prom and steps:
        first = min(s["start"] for s in steps)
        warm = [h.get("warmup_start") for h in per_host if h.get("warmup_start")]
        baseline = step_resources(prom, prom["start"], baseline_end or min(warm + [first]))
    for step in steps:
        judge_step(step, rules["slo_p99_ms"], rules["min_achieved_ratio"], rules["lag_bound_ms"])
        if prom:
            step["resources_window"] = resource_window(prom, step["start"], step["end"])
            step["resources"] = step_resources(prom, *step["resources_window"])
            step["use"] = saturation(step["resources"], {
                "lag_p99_ms": (step.get("generator_lag_ms") or {}).get("p99"),
                "lag_bound_ms": rules["lag_bound_ms"],
                "cpu_cores": step.get("generator_cpu_cores"),
                "cores_available": step.get("generator_cores_available")}, baseline)
    knee = find_knee(steps)
    out = {"name": run_name, "params": run_meta.get("params", {}), "hosts": [
        os.path.basename(d) for d in host_dirs], "steps": steps, "knee": knee,
        "client_events": {key: sum(len(h.get(key) or []) if isinstance(h.get(key), list)
                                   else h.get(key) or 0 for h in per_host)
                          for key in ("failovers", "blocked_events", "errors", "interrupted")}}
    if checker is not None:
        try:
            out["correctness"] = checker.check(host_dirs)
        except Exception as exc:  # noqa: BLE001 - reported in the report, never hidden
            out["correctness"] = {"error": str(exc)}
    out["generator"] = generator_ceiling(steps, rules["min_achieved_ratio"])
    fault_path = os.path.join(os.path.dirname(host_dirs[0]), "fault.json")
    out["fault"] = _read_json(fault_path) if os.path.exists(fault_path) else None
    if any(os.path.isdir(os.path.join(d, "locust")) for d in host_dirs):
        client_module("checker")  # puts the client package on sys.path for the module below
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import loadtest_sidebyside  # noqa: PLC0415 - next to this file
        side = loadtest_sidebyside.compare(host_dirs, out["fault"],
                                           run_meta.get("stall_window_seconds", 30))
        if side:
            out["_sidebyside_series"] = side.pop("_series")
            out["sidebyside"] = side
    return out


def generator_ceiling(steps, min_ratio=0.99):
    """The generator's cost: messages per second per core of CPU it used (getrusage, so CPU it
    really consumed, whatever else ran on the machine). ``msg_per_s_per_core``: at the valid
    steps; ``msg_per_s_per_core_kept_up``: at every step whose achieved rate was >= min_ratio of
    the target (the broker was not the limit), valid or not - on a shared machine the
    generator's lag comes from waiting for a CPU, which costs it no CPU time."""
    per_core = [s["achieved_rate"] / s["generator_cpu_cores"] for s in steps
                if s.get("valid") and s.get("generator_cpu_cores")]
    kept_up = [s["achieved_rate"] / s["generator_cpu_cores"] for s in steps
               if s.get("generator_cpu_cores") and s.get("target_rate")
               and s["achieved_rate"] >= min_ratio * s["target_rate"]]
    return {"msg_per_s_per_core": round(max(per_core), 1) if per_core else None,
            "steps_measured": len(per_core),
            "msg_per_s_per_core_kept_up": round(max(kept_up), 1) if kept_up else None,
            "steps_kept_up": len(kept_up)}


# The engine adapter: warren_amqp.traffic writes summary.json per load host (format
# warren-traffic-summary/1): steps with target_rate, start/end, counts, cpu_seconds, validity
# and the step's HdrHistograms merged over that host's processes (encode() strings). Here the
# hosts are added together: counts add up, histograms merge, percentiles are read last.
HIST_NAMES = {"confirm_latency_ms": "confirm_from_intended",
              "confirm_from_sent_ms": "confirm_from_sent",
              "end_to_end_ms": "end_to_end",
              "schedule_lag_ms": "schedule_lag",
              "generator_lag_ms": "generator_lag"}
SUMMARY_FORMAT = "warren-traffic-summary/1"


def read_engine_summary(host_dir, cores=None):
    path = os.path.join(host_dir, "summary.json")
    if not os.path.exists(path):
        raise ReportError("%s: no summary.json (did the generator run and finish?)" % host_dir)
    return engine_summary_to_steps(_read_json(path), path, cores)


def engine_summary_to_steps(doc, where="summary.json", cores=None):
    """One host's summary.json -> {"steps": [...], "failovers", "blocked_events", ...}; the
    warm-up step is left out."""
    if doc.get("format") != SUMMARY_FORMAT:
        raise ReportError("%s: not a %s document" % (where, SUMMARY_FORMAT))
    steps = []
    warmup_start = None
    for st in doc.get("steps", []):
        if st.get("warmup"):
            warmup_start = float(st["start"])
            continue
        counts = st.get("counts") or {}
        blobs = st.get("histograms") or {}
        steps.append({
            "index": int(st["index"]), "name": st.get("name"),
            "target_rate": float(st["target_rate"]),
            "start": float(st["start"]), "end": float(st["end"]),
            "published": int(counts.get("sent", 0)),
            "confirmed": int(counts.get("confirmed", 0)),
            "nacked": int(counts.get("nacked", 0)),
            "indeterminate": int(counts.get("indeterminate", 0)),
            "delivered": int(counts.get("delivered", 0)),
            "cpu_seconds": float(st.get("cpu_seconds", 0.0)),
            "cores": int(cores or 0),
            "hist": {key: [blobs[name]] if blobs.get(name) else []
                     for key, name in HIST_NAMES.items()},
        })
    if not steps:
        raise ReportError("%s: no measured steps (only a warm-up?)" % where)
    return {"steps": steps, "host": doc.get("host"), "run_id": doc.get("run_id"),
            "warmup_start": warmup_start,
            "failovers": len(doc.get("failovers") or []),
            "blocked_events": len(doc.get("blocked_events") or []),
            "errors": list(doc.get("errors") or []),
            "interrupted": list(doc.get("interrupted") or []),
            "config": doc.get("config") or {}}


def merge_steps(per_host):
    """Add the hosts' steps (same index = same step): counts add, histograms merge."""
    by_index = {}
    for host in per_host:
        for st in host["steps"]:
            by_index.setdefault(st["index"], []).append(st)
    merged = []
    for index in sorted(by_index):
        parts = by_index[index]
        start = min(p["start"] for p in parts)
        end = max(p["end"] for p in parts)
        duration = max(end - start, 1e-9)
        step = {"index": index, "start": start, "end": end, "duration_s": round(duration, 3),
                "target_rate": sum(p["target_rate"] for p in parts), "hosts": len(parts)}
        for key in ("published", "confirmed", "nacked", "indeterminate", "delivered"):
            step[key] = sum(p[key] for p in parts)
        step["achieved_rate"] = round(step["confirmed"] / duration, 3)
        step["delivered_rate"] = round(step["delivered"] / duration, 3)
        cpu = sum(p["cpu_seconds"] for p in parts)
        step["generator_cpu_cores"] = round(cpu / duration, 4) if cpu else None
        step["generator_cores_available"] = sum(p["cores"] for p in parts) or None
        for key in HIST_NAMES:
            blobs = [b for p in parts for b in p["hist"].get(key, [])]
            step[key] = hist_stats(merge_encoded(blobs)) if blobs else None
        merged.append(step)
    return merged


# ---------------------------------------------------------------------------------------------
# Plots
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_rates(report, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    top = 0.0
    for run in report["runs"]:
        xs = [s["target_rate"] for s in run["steps"]]
        ys = [s["achieved_rate"] for s in run["steps"]]
        top = max([top] + xs + ys)
        ax.plot(xs, ys, marker="o", label="%s achieved" % run["name"])
        bad = [(s["target_rate"], s["achieved_rate"]) for s in run["steps"] if not s["meets_slo"]]
        if bad:
            ax.scatter(*zip(*bad), marker="x", color="red", zorder=5, s=60)
        if run["knee"]["rate"]:
            ax.axvline(run["knee"]["rate"], linestyle=":", color="grey")
    ax.plot([0, top], [0, top], linestyle="--", color="black", linewidth=1, label="target")
    ax.set_xlabel("target rate (msg/s, all publishers)")
    ax.set_ylabel("achieved rate (confirmed msg/s)")
    ax.set_title("Target against achieved rate per step (x: step misses the SLO; dotted: knee)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latency(report, path, metric="confirm_latency_ms"):
    plt = _plt()
    runs = report["runs"]
    # one y scale for every run, so that runs compare at a glance (quorum against classic)
    fig, axes = plt.subplots(1, len(runs), figsize=(max(8, 5 * len(runs)), 4.5), squeeze=False,
                             sharey=True)
    slo = report["rules"]["slo_p99_ms"]
    for ax, run in zip(axes[0], runs):
        xs = [s["target_rate"] for s in run["steps"]]
        for key, _pct in PERCENTILES:
            ys = [(s.get(metric) or {}).get(key) for s in run["steps"]]
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None and y > 0]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=key.replace("_", "."))
        ax.axhline(slo, color="red", linestyle="--", linewidth=1, label="SLO p99 %g ms" % slo)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _pos: "%g" % v))
        if run["knee"]["rate"]:
            ax.axvline(run["knee"]["rate"], linestyle=":", color="grey", label="knee")
        ax.set_xlabel("target rate (msg/s)")
        ax.set_ylabel("confirm latency from intended send (ms, log)")
        ax.set_title(run["name"], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Confirm latency percentiles per step (merged HdrHistograms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_resources(report, prom, path):
    plt = _plt()
    # rabbitmq_io_sync_* do not count the Raft WAL's fsyncs (quorum queues), so the disk is
    # shown as bytes written and the WAL as Raft entries written per second.
    panels = [("broker_cpu_cores", "RabbitMQ CPU\n(cores)", 1.0),
              ("cpu_pressure", "CPU pressure\n(PSI some, share)", 1.0),
              ("broker_memory_bytes", "RabbitMQ memory\n(MiB)", 1 / 2**20),
              ("disk_write_bytes", "disk writes\n(MiB/s, machine)", 1 / 2**20),
              ("raft_wal_writes", "Raft log writes\n(entries/s)", 1.0)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.4 * len(panels)), sharex=True)
    t0 = prom["start"]
    for ax, (key, label, scale) in zip(axes, panels):
        entry = prom["queries"].get(key, {})
        for host, points in sorted(entry.get("series", {}).items()):
            if points:
                ax.plot([t - t0 for t, _ in points], [v * scale for _, v in points], label=host,
                        marker="." if len(points) < 30 else None)
        if entry.get("error"):
            ax.text(0.01, 0.5, "query failed: %s" % entry["error"][:80], transform=ax.transAxes)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(True, alpha=0.3)
        if entry.get("series"):
            ax.legend(fontsize=6, loc="upper left", ncol=4)
        for run in report["runs"]:
            for s in run["steps"]:
                ax.axvspan(s["start"] - t0, s["end"] - t0, alpha=0.08,
                           color="green" if s["meets_slo"] else "red")
    for run in report["runs"]:
        for i, s in enumerate(run["steps"]):
            axes[0].text(s["start"] - t0, axes[0].get_ylim()[1],
                         ("%s: %g" % (run["name"], s["target_rate"])) if i == 0
                         else "%g" % s["target_rate"], fontsize=6, va="top")
    axes[-1].set_xlabel("seconds since the run started (shaded: measured steps, green meets "
                        "the SLO, red does not; label: target msg/s)")
    fig.suptitle("Broker resources over the run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Markdown
def _f(value, fmt="%.1f"):
    return "-" if value is None else fmt % value


def render_md(report):
    r = report
    lines = ["# Load test: profile `%s`, %s" % (r["profile"], r["started_utc"]), "",
             r.get("description") or "", "",
             "> " + LAB_NOTE, "",
             "Command: `%s`" % r.get("command", ""), "",
             "Rules: SLO p99 confirm latency <= %g ms (from the intended send time), achieved >= "
             "%g%% of target, step invalid when the generator lag p99 > %g ms. Histograms merged "
             "across processes and hosts, never averaged."
             % (r["rules"]["slo_p99_ms"], 100 * r["rules"]["min_achieved_ratio"],
                r["rules"]["lag_bound_ms"]), ""]
    lines += ["## Results", ""]
    for run in r["runs"]:
        k = run["knee"]
        lines.append("### Run `%s`" % run["name"])
        lines.append("")
        if run.get("params"):
            lines.append("Parameters: " + ", ".join("%s=%s" % (a, b) for a, b in
                                                     sorted(run["params"].items())
                                                     if not isinstance(b, (list, dict))))
            lines.append("")
        if k["rate"] is not None:
            lines.append("**Knee: %g msg/s** (achieved %.1f msg/s)%s." % (
                k["rate"], k["achieved_rate"],
                "" if k["found"] else " - every step met the SLO: the knee is at or above "
                "the highest step"))
        else:
            lines.append("**No step met the SLO** (the first step already failed).")
        if k["stopped_by"]:
            lines.append("Next step (%g msg/s): %s." % (k["stopped_by"]["target_rate"],
                                                       "; ".join(k["stopped_by"]["reasons"])))
        lines.append("")
        lines.append("| step | target | achieved | ratio | p50 | p90 | p99 | p99.9 | max | "
                     "e2e p99 | gen lag p99 | sched lag p99 | gen CPU | verdict |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in run["steps"]:
            c = s.get("confirm_latency_ms") or {}
            lines.append("| %s | %g | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                s["index"], s["target_rate"], s["achieved_rate"],
                _f(s.get("achieved_ratio") and 100 * s["achieved_ratio"], "%.2f%%"),
                _f(c.get("p50"), "%.2f"), _f(c.get("p90"), "%.2f"), _f(c.get("p99"), "%.2f"),
                _f(c.get("p99_9"), "%.2f"), _f(c.get("max"), "%.1f"),
                _f((s.get("end_to_end_ms") or {}).get("p99"), "%.2f"),
                _f((s.get("generator_lag_ms") or {}).get("p99"), "%.3f"),
                _f((s.get("schedule_lag_ms") or {}).get("p99"), "%.3f"),
                _f(s.get("generator_cpu_cores"), "%.2f"),
                "ok" if s["meets_slo"] else ("INVALID" if not s["valid"] else "miss")))
        lines.append("")
        lines.append("Latencies in ms: confirm latency from the intended send time (open "
                     "loop), end-to-end from intended send to delivery; generator lag = late "
                     "sends that were the generator's own fault (decides validity), schedule "
                     "lag = every late send (broker back-pressure and stalls included); gen "
                     "CPU = cores the generator used.")
        ev = run.get("client_events") or {}
        lines.append("")
        lines.append("Client side: %d failover(s), %d connection.blocked/unblocked event(s) "
                     "(the broker's flow control), %d error(s)%s." % (
                         ev.get("failovers", 0), ev.get("blocked_events", 0),
                         ev.get("errors", 0),
                         ", INTERRUPTED" if ev.get("interrupted") else ""))
        lines.append("")
        corr = run.get("correctness") or {}
        if "counts" in corr:
            c = corr["counts"]
            lines.append("Correctness (warren_amqp.checker over every host's history): verdict "
                         "**%s**, published %d, confirmed %d, delivered %d, lost **%d**, "
                         "unexpected %d, duplicates %d, indeterminate %d, unsent %d." % (
                             corr.get("verdict"), c["published"], c["confirmed"],
                             c["delivered_messages"], c["lost"], c["unexpected"],
                             c["duplicates"], c["indeterminate"], c["unsent"]))
        elif corr.get("error"):
            lines.append("Correctness check failed to run: %s" % corr["error"])
        g = run.get("generator") or {}
        if g.get("msg_per_s_per_core") or g.get("msg_per_s_per_core_kept_up"):
            lines.append("")
            lines.append("Generator cost: up to %s msg/s per generator core at the valid "
                         "steps, %s at the steps that kept up (achieved >= %g%% of target, "
                         "valid or not; CPU the generator really used)." % (
                             _f(g.get("msg_per_s_per_core"), "%.0f"),
                             _f(g.get("msg_per_s_per_core_kept_up"), "%.0f"),
                             100 * r["rules"]["min_achieved_ratio"]))
        lines.append("")
        at = _use_step(run)
        if at and at.get("use"):
            lines += render_use(at)
        if run.get("sidebyside"):
            import loadtest_sidebyside  # noqa: PLC0415 - imported by summarise_run already
            lines += loadtest_sidebyside.render_md(run["name"], run["sidebyside"])
    if r.get("comparisons"):
        lines += ["## Comparisons (same run, ratios)", "",
                  "| comparison | value |", "|---|---|"]
        for name, value in r["comparisons"].items():
            lines.append("| %s | %s |" % (name, _f(value, "%.3f")))
        lines.append("")
    if r.get("prometheus_error"):
        lines += ["Prometheus: %s" % r["prometheus_error"], ""]
    lines += ["## Plots", "", "![target vs achieved](rates.png)", "",
              "![latency percentiles](latency.png)", ""]
    if r.get("has_resources"):
        lines += ["![broker resources](resources.png)", ""]
    return "\n".join(lines) + "\n"


def _use_step(run):
    """The step the USE table describes: the first failing step, else the knee's."""
    k = run["knee"]
    index = k["stopped_by"]["step"] if k["stopped_by"] else k["step"]
    for s in run["steps"]:
        if s["index"] == index:
            return s
    return run["steps"][-1] if run["steps"] else None


def render_use(step):
    use = step["use"]
    first = use["saturated_first"]
    lines = ["USE at step %s (%g msg/s), every resource's worst indicator "
             "(score = value / threshold; >= 1 saturated):" % (step["index"], step["target_rate"]),
             "", "| resource | indicator | host | value | threshold | score |",
             "|---|---|---|---|---|---|"]
    for s in use["ranked"]:
        lines.append("| %s | %s | %s | %.4g | %.4g | %.2f |" % (
            s["resource"], s["indicator"], s["host"], s["value"], s["threshold"], s["score"]))
    lines.append("")
    for s in use.get("past_threshold_before_the_run") or []:
        lines.append("Not counted: %s on %s read %.4g during the step but already %.4g (threshold "
                     "%.4g) before the run's traffic: a stale gauge or another cause, not this "
                     "load." % (s["indicator"], s["host"], s["value"], s["before_run"],
                                s["threshold"]))
    if use.get("past_threshold_before_the_run"):
        lines.append("")
    lines.append("Saturates first: **%s**" % (
        "%s (%s %.4g on %s)" % (first["resource"], first["indicator"], first["value"], first["host"])
        if first else "no resource past its threshold"))
    lines.append("")
    return lines


# ---------------------------------------------------------------------------------------------
def load_checker(path):
    """warren_amqp.checker (the drills' checker: lost/unexpected/duplicates), or None."""
    try:
        return client_module("checker", path)
    except ImportError:
        return None


def build_report(results_dir, meta, prom=None, checker=None):
    rules = {"slo_p99_ms": float(meta.get("slo_p99_ms", 50.0)),
             "min_achieved_ratio": float(meta.get("min_achieved_ratio", 0.99)),
             "lag_bound_ms": float(meta.get("lag_bound_ms", 5.0))}
    run_meta = {r["name"]: r for r in meta.get("runs", [])}
    runs = []
    found = load_runs(results_dir, lambda hosts: hosts)
    baseline_end = first_traffic(found) if prom else None
    for name, host_dirs in found.items():
        runs.append(summarise_run(name, host_dirs, run_meta.get(name, {}), rules, prom, checker,
                                  meta.get("loadgen_cores"), baseline_end))
    if not runs:
        raise ReportError("%s: no generator results (<run>/<host>/summary.json)" % results_dir)
    order = [r["name"] for r in meta.get("runs", [])]
    runs.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    report = {"format": "warren-loadtest-report/1", "profile": meta.get("profile"),
              "description": meta.get("description", ""),
              "started_utc": meta.get("started_utc"), "command": meta.get("command"),
              "lab": meta.get("lab", LAB_NOTE), "rules": rules, "runs": runs,
              "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "has_resources": bool(prom)}
    report["comparisons"] = comparisons(runs, meta.get("compare", []))
    if prom:
        report["prometheus"] = {k: prom[k] for k in ("prometheus", "start", "end", "step",
                                                     "window")}
        report["prometheus"]["failed_queries"] = sorted(
            k for k, v in prom["queries"].items() if v.get("error"))
        report["prometheus"]["promql"] = {k: v["promql"] for k, v in prom["queries"].items()}
    return report


def first_traffic(runs):
    """When the report's first traffic started (warm-up included): the end of the baseline."""
    starts = []
    for host_dirs in runs.values():
        for d in host_dirs:
            h = read_engine_summary(d)
            starts += [h["warmup_start"]] if h.get("warmup_start") else []
            starts += [st["start"] for st in h["steps"]]
    return min(starts) if starts else None


def comparisons(runs, pairs):
    """Ratios between runs of the same report (a / b): knees, best valid achieved rate, and,
    at the first step both ran at the same target, achieved rate and p99 latencies."""
    by_name = {r["name"]: r for r in runs}
    out = {}

    def ratio(x, y):
        return (x / y) if x is not None and y else None

    for a, b in pairs:
        ra, rb = by_name.get(a), by_name.get(b)
        if not ra or not rb:
            continue
        tag = "%s / %s" % (a, b)
        out["knee " + tag] = ratio(ra["knee"]["rate"], rb["knee"]["rate"])
        ma = max((s["achieved_rate"] for s in ra["steps"] if s["valid"]), default=None)
        mb = max((s["achieved_rate"] for s in rb["steps"] if s["valid"]), default=None)
        out["best valid achieved " + tag] = ratio(ma, mb)
        steps_b = {s["target_rate"]: s for s in rb["steps"]}
        same = [(s, steps_b[s["target_rate"]]) for s in ra["steps"] if s["target_rate"] in steps_b]
        if same:
            sa, sb = same[0]
            at = " at %g msg/s" % sa["target_rate"]
            out["achieved " + tag + at] = ratio(sa["achieved_rate"], sb["achieved_rate"])
            for key, label in (("confirm_latency_ms", "confirm p99"),
                               ("end_to_end_ms", "end-to-end p99")):
                out[label + " " + tag + at] = ratio((sa.get(key) or {}).get("p99"),
                                                    (sb.get(key) or {}).get("p99"))
    return out


def write_report(report, prom, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    series = {r["name"]: r.pop("_sidebyside_series") for r in report["runs"]
              if "_sidebyside_series" in r}
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, sort_keys=True)
        f.write("\n")
    if series:
        import loadtest_sidebyside  # noqa: PLC0415 - imported by summarise_run already
        for run in report["runs"]:
            if run["name"] in series:
                side = dict(run["sidebyside"], _series=series[run["name"]])
                loadtest_sidebyside.plot(side, os.path.join(
                    out_dir, "sidebyside-%s.png" % run["name"]),
                    "Run %s: the same publishes seen by both tools" % run["name"])
    plot_rates(report, os.path.join(out_dir, "rates.png"))
    plot_latency(report, os.path.join(out_dir, "latency.png"))
    if prom:
        plot_resources(report, prom, os.path.join(out_dir, "resources.png"))
        with open(os.path.join(out_dir, "prometheus.json"), "w", encoding="utf-8") as f:
            json.dump(prom, f)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render_md(report))


def summary_lines(report):
    lines = []
    for run in report["runs"]:
        k = run["knee"]
        corr = (run.get("correctness") or {}).get("counts") or {}
        lines.append("run %-22s knee %s msg/s%s  steps ok %d/%d  lost %s  max p99 %s ms" % (
            run["name"], _f(k["rate"], "%g"), "" if k["found"] else " (not reached)",
            sum(1 for s in run["steps"] if s["meets_slo"]), len(run["steps"]),
            corr.get("lost", "?"),
            _f(max(((s.get("confirm_latency_ms") or {}).get("p99") or 0
                    for s in run["steps"]), default=None), "%.2f")))
    for name, value in report.get("comparisons", {}).items():
        lines.append("%s: %s" % (name, _f(value, "%.3f")))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description="warren load-test report")
    parser.add_argument("--results", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--prom")
    parser.add_argument("--out", required=True)
    parser.add_argument("--client-lib", default=CLIENT_LIB,
                        help="folder holding the warren_amqp package")
    args = parser.parse_args(argv)
    try:
        meta = _read_json(args.meta)
        prom = _read_json(args.prom) if args.prom and os.path.exists(args.prom) else None
        report = build_report(args.results, meta, prom, load_checker(args.client_lib))
        write_report(report, prom, args.out)
    except ReportError as exc:
        print("loadtest report: %s" % exc, file=sys.stderr)
        return 2
    for line in summary_lines(report):
        print(line)
    print("report: %s" % os.path.join(args.out, "report.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
