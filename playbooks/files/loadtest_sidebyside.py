"""Locust beside warren's open-loop generator: what each one reports, on the same lab, at the
same time, through the same stall. Used by loadtest_report.py for runs that carry ``locust``.

Inputs, per load host folder of a run:
* the generator's full history ``ops-*.jsonl`` (``record_ops: true``): one line per message
  with its *intended* send time, its actual send time and its confirm time;
* Locust's ``locust/locust-*.jsonl`` written by playbooks/files/locustfile.py: one line per
  request exactly as reported to Locust's statistics (start = actual send, ms = response time).
* ``fault.json`` next to the host folders when the run killed a node.

Coordinated omission, measured: during a stall a closed-loop Locust user sits inside one
request, so Locust sends (and records) almost nothing; the generator keeps its schedule and
every message that was due carries the stall in its latency. The numbers below count both:
messages each tool *should* have sent in the stall window (rate x window) against what it did
send, and the latency percentiles each tool reports for the whole run.
"""
import glob
import json
import os



def _checker():
    """warren_amqp.checker (loadtest_report.py puts the client package on sys.path)."""
    from warren_amqp import checker  # noqa: PLC0415
    return checker


def exact_percentiles(values):
    """Nearest-rank percentiles of raw values: the drill checker's own rule."""
    stats = _checker().percentiles(values)
    return {k: (v if k == "count" or v is None else round(v, 3)) for k, v in stats.items()}


def read_generator(host_dirs):
    """[(intended, sent, confirmed, outcome)] of every published message."""
    rows = []
    for d in host_dirs:
        for path in sorted(glob.glob(os.path.join(d, "ops-*.jsonl"))):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a torn last line
                    if rec.get("t") == "pub":
                        rows.append((rec.get("intended"), rec.get("sent"), rec.get("confirmed"),
                                     rec.get("outcome")))
    return rows


def read_locust(host_dirs, name="publish-confirm"):
    """[(start, ms, outcome)] of every Locust request of that name."""
    rows = []
    for d in host_dirs:
        for path in sorted(glob.glob(os.path.join(d, "locust", "locust-*.jsonl"))):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("t") == name:
                        rows.append((rec["start"], rec["ms"], rec.get("outcome")))
    return rows


def longest_gap(times):
    """Longest time without an event between the first and the last one (checker's rule)."""
    times = [t for t in times if t is not None]
    if not times:
        return {"seconds": 0.0, "from": None}
    gap = _checker().longest_gap(times, min(times), max(times))
    return {"seconds": gap["longest_s"], "from": gap["from"]}


def compare(host_dirs, fault=None, stall_window=None):
    """Both tools' view of one run: percentiles, send counts in the stall window, gaps."""
    gen = read_generator(host_dirs)
    loc = read_locust(host_dirs)
    if not gen or not loc:
        return None
    g_conf = [(i, s, c) for i, s, c, o in gen if o == "confirmed" and c is not None]
    gen_from_intended = [(c - i) * 1000.0 for i, s, c in g_conf]
    gen_from_sent = [(c - s) * 1000.0 for i, s, c in g_conf if s is not None]
    loc_ok = [(t, ms) for t, ms, o in loc if o == "confirmed"]
    start = max(min(i for i, _, _, _ in gen), min(t for t, _, _ in loc))
    end = min(max(i for i, _, _, _ in gen), max(t for t, _, _ in loc))
    span = max(end - start, 1e-9)
    out = {
        "window": {"start": start, "end": end, "seconds": round(span, 3)},
        "generator": {
            "messages": len(gen), "confirmed": len(g_conf),
            "latency_from_intended_ms": exact_percentiles(gen_from_intended),
            "latency_from_sent_ms": exact_percentiles(gen_from_sent),
            "rate": round(sum(1 for i, *_ in gen if start <= i <= end) / span, 2),
            "longest_send_gap": longest_gap([s for _, s, _, _ in gen if s is not None]),
        },
        "locust": {
            "requests": len(loc), "confirmed": len(loc_ok),
            "latency_ms": exact_percentiles([ms for _, ms in loc_ok]),
            "rate": round(sum(1 for t, _, _ in loc if start <= t <= end) / span, 2),
            "longest_send_gap": longest_gap([t for t, _, _ in loc]),
        },
    }
    if fault and fault.get("at"):
        w0 = float(fault["at"])
        w1 = w0 + float(stall_window or 30.0)
        g_due = sum(1 for i, *_ in gen if w0 <= i < w1)
        l_sent = sum(1 for t, _, _ in loc if w0 <= t < w1)
        # messages due in the window: the generator's schedule says; Locust's nominal rate is
        # its rate over the whole run (same target as the generator's by construction)
        l_due = out["locust"]["rate"] * (w1 - w0)
        slow = lambda xs: sum(1 for x in xs if x > 1000.0)  # noqa: E731
        out["stall"] = {
            "fault": fault, "window": [w0, w1],
            "generator_due": g_due,
            "generator_recorded": sum(1 for i, s, c in g_conf if w0 <= i < w1),
            "locust_expected": round(l_due, 1), "locust_sent": l_sent,
            "locust_share_of_expected": round(l_sent / l_due, 3) if l_due else None,
            "generator_over_1s": slow([(c - i) * 1000.0 for i, s, c in g_conf if w0 <= i < w1]),
            "locust_over_1s": slow([ms for t, ms in loc_ok if w0 <= t < w1]),
            "generator_max_ms": max([(c - i) * 1000.0 for i, s, c in g_conf if w0 <= i < w1],
                                    default=None),
            "locust_max_ms": max([ms for t, ms in loc_ok if w0 <= t < w1], default=None),
        }
    out["_series"] = {
        "generator": sorted((i, (c - i) * 1000.0) for i, s, c in g_conf),
        "generator_from_sent": sorted((s, (c - s) * 1000.0) for i, s, c in g_conf
                                      if s is not None),
        "locust": sorted(loc_ok),
    }
    return out


def plot(result, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ser = result["_series"]
    t0 = result["window"]["start"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.4]})
    ax.scatter([t - t0 for t, _ in ser["generator"]], [v for _, v in ser["generator"]], s=3,
               alpha=0.5, label="warren generator: confirm latency from the INTENDED send",
               color="tab:blue")
    ax.scatter([t - t0 for t, _ in ser["locust"]], [v for _, v in ser["locust"]], s=10,
               alpha=0.8, marker="x", label="Locust: response time from the ACTUAL send",
               color="tab:orange")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _pos: "%g" % v))
    ax.set_ylabel("publish-to-confirm latency (ms, log)")
    ax.grid(True, which="both", alpha=0.3)
    # sends per second: what each tool actually put on the wire
    for key, label, color in (("generator_from_sent", "generator sends/s", "tab:blue"),
                              ("locust", "Locust sends/s", "tab:orange")):
        buckets = {}
        for t, _ in ser[key]:
            buckets[int(t - t0)] = buckets.get(int(t - t0), 0) + 1
        xs = sorted(buckets)
        ax2.plot(xs, [buckets[x] for x in xs], label=label, color=color, drawstyle="steps-mid")
    ax2.set_ylabel("confirmed sends\nper second")
    ax2.set_xlabel("seconds since both tools started")
    ax2.grid(True, alpha=0.3)
    stall = result.get("stall")
    for a in (ax, ax2):
        if stall:
            a.axvline(stall["fault"]["at"] - t0, color="red", linestyle="--", linewidth=1,
                      label="kill -9 of the queue leader (%s)" % stall["fault"].get("host"))
        a.legend(fontsize=7, loc="upper right")
    g = result["generator"]["latency_from_intended_ms"]
    lo = result["locust"]["latency_ms"]
    ax.set_title("%s\ngenerator p99 %s ms, max %s ms (n=%d) | Locust p99 %s ms, max %s ms (n=%d)"
                 % (title, g["p99"], g["max"], g["count"], lo["p99"], lo["max"], lo["count"]),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_md(name, result):
    g, lo = result["generator"], result["locust"]
    gi, gs, ll = g["latency_from_intended_ms"], g["latency_from_sent_ms"], lo["latency_ms"]
    row = "| %s | %s | %s | %s | %s | %s | %s |"
    lines = ["### Locust beside the generator: run `%s`" % name, "",
             "Both ran at the same time against the same cluster, at the same target rate "
             "(generator %.1f msg/s, Locust %.1f msg/s measured over the common window of "
             "%.0f s)." % (g["rate"], lo["rate"], result["window"]["seconds"]), "",
             "| tool, what it measures | n | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
             "|---|---|---|---|---|---|---|",
             row % ("generator, from the intended send (open loop)", gi["count"], gi["p50"],
                    gi["p90"], gi["p99"], gi["p99_9"], gi["max"]),
             row % ("generator, from the actual send", gs["count"], gs["p50"], gs["p90"],
                    gs["p99"], gs["p99_9"], gs["max"]),
             row % ("Locust (closed loop, from the actual send)", ll["count"], ll["p50"],
                    ll["p90"], ll["p99"], ll["p99_9"], ll["max"]), "",
             "Longest time without a send: generator %.2f s, Locust %.2f s." % (
                 g["longest_send_gap"]["seconds"], lo["longest_send_gap"]["seconds"])]
    st = result.get("stall")
    if st:
        lines += ["", "Stall after `%s` on %s at t=%.0f, window %.0f s: the generator had %d "
                  "messages due and recorded %d of them (%d over 1 s, worst %.0f ms); Locust "
                  "should have sent %.0f and sent %d (%.0f%%; %d over 1 s, worst %s ms). "
                  "That gap is coordinated omission, measured." % (
                      st["fault"].get("kind", "fault"), st["fault"].get("host"),
                      st["fault"]["at"] - result["window"]["start"],
                      st["window"][1] - st["window"][0], st["generator_due"],
                      st["generator_recorded"], st["generator_over_1s"],
                      st["generator_max_ms"] or 0, st["locust_expected"], st["locust_sent"],
                      100 * (st["locust_share_of_expected"] or 0), st["locust_over_1s"],
                      "%.0f" % st["locust_max_ms"] if st["locust_max_ms"] else "-")]
    lines += ["", "![side by side](sidebyside-%s.png)" % name, ""]
    return lines
