"""Unit tests for playbooks/files/loadtest_report.py: histogram merging across hosts, the step
rules (invalid step, SLO, achieved ratio), the knee, the USE verdict, and a whole report built
from synthetic generator output (report.json, report.md and the three plots)."""

import json
import os
import random

import pytest
from utils import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
rep = load_file("loadtest_report", os.path.join(ROOT, "playbooks", "files", "loadtest_report.py"))
hist = rep.client_module("hist")
RULES = {"slo_p99_ms": 50.0, "min_achieved_ratio": 0.99, "lag_bound_ms": 5.0}


def encoded(values_ms):
    h = hist.new()
    for v in values_ms:
        hist.record(h, v / 1000.0)
    return hist.encode(h)


# ----------------------------------------------------------------------------- merging
def test_merge_across_hosts_is_the_histogram_of_all_values_not_an_average():
    rnd = random.Random(7)
    fast = [rnd.uniform(1, 2) for _ in range(990)]     # host A: 990 fast confirms
    slow = [rnd.uniform(200, 300) for _ in range(10)]  # host B: 10 slow ones
    merged = rep.hist_stats(rep.merge_encoded([encoded(fast), encoded(slow)]))
    every = sorted(fast + slow)
    assert merged["count"] == 1000
    # nearest-rank p99 of all 1000 values is the 990th: a fast one; p99.9 is a slow one
    assert merged["p99"] == pytest.approx(every[989], rel=1e-3)
    assert merged["p99_9"] == pytest.approx(every[998], rel=1e-3)
    assert merged["max"] == pytest.approx(max(slow), rel=1e-3)
    # averaging the hosts' p99s would have said ~150 ms: far from the truth
    a = rep.hist_stats(rep.merge_encoded([encoded(fast)]))["p99"]
    b = rep.hist_stats(rep.merge_encoded([encoded(slow)]))["p99"]
    assert abs((a + b) / 2 - merged["p99"]) > 100


def test_merge_of_nothing_is_empty():
    stats = rep.hist_stats(rep.merge_encoded([None, ""]))
    assert stats["count"] == 0 and stats["p99"] is None and stats["max"] is None


def engine_step(index, rate, start, seconds, confirmed, lat_ms, lag_ms, cpu=0.5):
    return {"index": index, "target_rate": rate, "start": start, "end": start + seconds,
            "published": confirmed, "confirmed": confirmed, "nacked": 0, "indeterminate": 0,
            "delivered": confirmed, "cpu_seconds": cpu * seconds, "cores": 2,
            "hist": {"confirm_latency_ms": [encoded(lat_ms)], "confirm_from_sent_ms": [],
                     "end_to_end_ms": [encoded(lat_ms)], "schedule_lag_ms": [encoded(lag_ms)]}}


def test_merge_steps_adds_counts_and_rates_of_hosts():
    a = {"steps": [engine_step(1, 100, 1000.0, 10, 1000, [1] * 100, [0.1] * 100)]}
    b = {"steps": [engine_step(1, 100, 1000.5, 10, 990, [2] * 100, [0.2] * 100)]}
    (step,) = rep.merge_steps([a, b])
    assert step["target_rate"] == 200          # two hosts at 100 each
    assert step["confirmed"] == 1990
    assert step["duration_s"] == pytest.approx(10.5)
    assert step["achieved_rate"] == pytest.approx(1990 / 10.5, rel=1e-3)
    assert step["confirm_latency_ms"]["count"] == 200
    assert step["generator_cpu_cores"] == pytest.approx(10 / 10.5, rel=1e-3)
    assert step["generator_cores_available"] == 4


# ----------------------------------------------------------------------------- step rules
def step(rate, achieved, p99, lag_p99, index=1):
    return {"index": index, "target_rate": rate, "achieved_rate": achieved,
            "confirm_latency_ms": {"p99": p99}, "generator_lag_ms": {"p99": lag_p99}}


def test_step_meeting_everything():
    s = rep.judge_step(step(100, 99.5, 10, 0.5), **_rules())
    assert s["valid"] and s["meets_slo"] and s["reasons"] == []
    assert s["achieved_ratio"] == pytest.approx(0.995)


def test_invalid_step_when_the_generator_lagged():
    s = rep.judge_step(step(100, 100, 10, 7.5), **_rules())
    assert not s["valid"] and not s["meets_slo"]
    assert "INVALID" in s["reasons"][0] and "generator" in s["reasons"][0]


def test_step_without_lag_data_is_invalid():
    s = rep.judge_step({"index": 1, "target_rate": 100, "achieved_rate": 100,
                        "confirm_latency_ms": {"p99": 1}}, **_rules())
    assert not s["valid"] and not s["meets_slo"]


def test_step_below_99_percent_of_target_misses():
    s = rep.judge_step(step(1000, 989, 10, 0.5), **_rules())
    assert s["valid"] and not s["meets_slo"]
    assert "98.90% of target" in s["reasons"][0]
    assert rep.judge_step(step(1000, 990, 10, 0.5), **_rules())["meets_slo"]


def test_step_over_the_slo_misses():
    s = rep.judge_step(step(100, 100, 50.1, 0.5), **_rules())
    assert not s["meets_slo"] and "SLO 50.0 ms" in s["reasons"][0]
    assert rep.judge_step(step(100, 100, 50.0, 0.5), **_rules())["meets_slo"]


def _rules():
    return {"slo_p99_ms": RULES["slo_p99_ms"], "min_ratio": RULES["min_achieved_ratio"],
            "lag_bound_ms": RULES["lag_bound_ms"]}


# ----------------------------------------------------------------------------- knee
def judged(*specs):
    return [rep.judge_step(step(r, a, p, l, i), **_rules()) for i, (r, a, p, l) in
            enumerate(specs, 1)]


def test_knee_is_the_last_step_before_the_first_miss():
    steps = judged((100, 100, 5, 0.2), (200, 200, 9, 0.2), (400, 380, 80, 0.3),
                   (800, 790, 10, 0.2))  # a later "ok" step does not move the knee
    knee = rep.find_knee(steps)
    assert knee["rate"] == 200 and knee["step"] == 2 and knee["found"]
    assert knee["stopped_by"]["target_rate"] == 400


def test_knee_not_reached_when_every_step_passes():
    knee = rep.find_knee(judged((100, 100, 5, 0.2), (200, 200, 9, 0.2)))
    assert knee["rate"] == 200 and not knee["found"] and knee["stopped_by"] is None


def test_no_knee_when_the_first_step_fails():
    knee = rep.find_knee(judged((100, 50, 500, 0.2), (200, 200, 9, 0.2)))
    assert knee["rate"] is None and knee["stopped_by"]["target_rate"] == 100


# ----------------------------------------------------------------------------- resources / USE
PROM = {"prometheus": "http://mon1:9090", "start": 1000.0, "end": 1100.0, "step": 5,
        "window": "30s", "queries": {
            "machine_cpu_busy": {"series": {"rmq1": [[1000, 0.5], [1010, 0.97], [1020, 0.99],
                                                     [1090, 0.1]]}, "error": None,
                                 "promql": "x", "unit": "ratio"},
            "disk_busy": {"series": {"rmq1": [[1010, 0.2], [1020, 0.4]]}, "error": None,
                          "promql": "y", "unit": "ratio"},
            "broker_cpu_cores": {"series": {"rmq1": [[1000, 0.4], [1050, 0.6]],
                                            "rmq2": [[1000, 0.3]]}, "error": None,
                                 "promql": "z", "unit": "cores"},
            "broker_fsync_rate": {"series": {}, "error": "boom", "promql": "w", "unit": "ops/s"},
        }}


def test_window_stats_only_counts_points_inside():
    assert rep.window_stats([[1, 1.0], [5, 3.0], [9, 100.0]], 0, 6) == {
        "mean": 2.0, "max": 3.0, "n": 2}
    assert rep.window_stats([[1, 1.0]], 2, 3) is None


def test_saturation_names_the_resource_past_its_threshold():
    res = rep.step_resources(PROM, 1005, 1025)
    assert res["machine_cpu_busy"]["rmq1"]["mean"] == pytest.approx(0.98)
    use = rep.saturation(res, {"lag_p99_ms": 0.5, "lag_bound_ms": 5, "cpu_cores": 0.4,
                               "cores_available": 2})
    assert use["saturated_first"]["resource"] == "cpu"
    assert [s["resource"] for s in use["ranked"]][0] == "cpu"
    quiet = rep.saturation(rep.step_resources(PROM, 1085, 1095), None)
    assert quiet["saturated_first"] is None


def test_saturation_blames_the_generator_when_it_lagged():
    use = rep.saturation({}, {"lag_p99_ms": 12.0, "lag_bound_ms": 5, "cpu_cores": 0.2,
                              "cores_available": 2})
    assert use["saturated_first"]["resource"] == "generator"


# ----------------------------------------------------------------------------- whole report
def engine_summary(host, steps, warmup=True):
    """A warren-traffic-summary/1 document as warren_amqp.traffic writes it."""
    out = []
    if warmup:  # the warm-up: wildly slow, must be left out
        out.append({"index": 0, "name": "warmup", "warmup": True, "target_rate": 50,
                    "start": 990.0, "end": 1000.0, "counts": {"confirmed": 1},
                    "cpu_seconds": 1.0, "histograms": {"confirm_from_intended":
                                                       encoded([9000.0])}})
    for st in steps:
        out.append({"index": st["index"], "name": "step%d" % st["index"], "warmup": False,
                    "target_rate": st["target_rate"], "start": st["start"], "end": st["end"],
                    "counts": {"sent": st["published"], "confirmed": st["confirmed"],
                               "delivered": st["delivered"]},
                    "cpu_seconds": st["cpu_seconds"],
                    "histograms": {name: st["hist"][key][0] for key, name in
                                   rep.HIST_NAMES.items() if st["hist"].get(key)}})
    return {"format": "warren-traffic-summary/1", "mode": "run", "host": host,
            "run_id": "r-" + host, "steps": out, "failovers": [{"t": "failover"}],
            "blocked_events": [], "errors": [], "interrupted": []}


def synthetic(tmp_path):
    results = tmp_path / "results"
    t = 1000.0
    for run, slow_at in (("knee-quorum", 300), ("knee-classic", 10_000)):
        for host in ("load1", "load2"):
            steps = []
            for i, rate in enumerate((100, 200, 300), 1):
                lat = [80.0] * 100 if rate >= slow_at else [3.0] * 100
                st = engine_step(i, rate / 2, t + 10 * i, 10, rate * 5, lat, [0.3] * 50)
                st["hist"]["generator_lag_ms"] = st["hist"]["schedule_lag_ms"]
                steps.append(st)
            d = results / run / host
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps(engine_summary(host, steps)))
    meta = {"profile": "knee", "started_utc": "20261203T084000Z", "command": "ansible-playbook",
            "slo_p99_ms": 50, "min_achieved_ratio": 0.99, "lag_bound_ms": 5,
            "loadgen_cores": {"load1": 2, "load2": 2},
            "runs": [{"name": "knee-quorum", "params": {"queue_type": "quorum"}},
                     {"name": "knee-classic", "params": {"queue_type": "classic"}}],
            "compare": [["knee-quorum", "knee-classic"]]}
    return str(results), meta


def test_build_report_end_to_end(tmp_path):
    results, meta = synthetic(tmp_path)
    report = rep.build_report(results, meta, PROM, checker=None)
    quorum, classic = report["runs"]
    assert [quorum["name"], classic["name"]] == ["knee-quorum", "knee-classic"]
    assert quorum["knee"]["rate"] == 200 and quorum["knee"]["found"]
    assert classic["knee"]["rate"] == 300 and not classic["knee"]["found"]
    assert [s["index"] for s in quorum["steps"]] == [1, 2, 3]  # warm-up left out
    assert quorum["steps"][0]["confirm_latency_ms"]["max"] == pytest.approx(3.0, rel=1e-3)
    assert quorum["client_events"]["failovers"] == 2
    assert report["comparisons"]["knee knee-quorum / knee-classic"] == pytest.approx(200 / 300)
    # 300 msg/s confirmed at the last valid step, 2 hosts x 0.5 cores of generator CPU
    assert quorum["generator"]["msg_per_s_per_core"] == pytest.approx(300 / 1.0, rel=1e-3)
    out = tmp_path / "report"
    rep.write_report(report, PROM, str(out))
    doc = json.loads((out / "report.json").read_text())
    assert doc["format"] == "warren-loadtest-report/1"
    assert doc["prometheus"]["failed_queries"] == ["broker_fsync_rate"]
    md = (out / "report.md").read_text()
    assert "**Knee: 200 msg/s**" in md and "2-core machine" in md
    assert "Saturates first" in md
    for png in ("rates.png", "latency.png", "resources.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_summary_of_another_format_is_refused(tmp_path):
    d = tmp_path / "results" / "run" / "load1"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"format": "something-else", "steps": []}))
    with pytest.raises(rep.ReportError, match="not a warren-traffic-summary/1"):
        rep.build_report(str(tmp_path / "results"), {"runs": []})


def test_report_without_results_is_a_clear_error(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(rep.ReportError, match="no generator results"):
        rep.build_report(str(tmp_path / "results"), {"runs": []})


def test_resources_skip_the_first_rate_window_of_a_step():
    # a 30 s rate window: a 60 s step is read from its last 30 s, a 20 s step from its last half
    assert rep.resource_window(PROM, 1000.0, 1060.0) == [1030.0, 1060.0]
    assert rep.resource_window(PROM, 1000.0, 1020.0) == [1010.0, 1020.0]
    assert rep.resource_window({"window": "bogus"}, 5.0, 9.0) == [5.0, 9.0]


def test_generator_cost_counts_steps_that_kept_up_even_when_invalid():
    steps = [{"target_rate": 100, "achieved_rate": 100.0, "generator_cpu_cores": 0.05,
              "valid": True},
             {"target_rate": 300, "achieved_rate": 299.0, "generator_cpu_cores": 0.1,
              "valid": False},                         # lagged (waited for a CPU), kept up
             {"target_rate": 600, "achieved_rate": 400.0, "generator_cpu_cores": 0.1,
              "valid": False}]                         # the broker was the limit: left out
    g = rep.generator_ceiling(steps)
    assert g["msg_per_s_per_core"] == pytest.approx(2000.0)
    assert g["msg_per_s_per_core_kept_up"] == pytest.approx(2990.0)
    assert g["steps_measured"] == 1 and g["steps_kept_up"] == 2


def test_an_indicator_past_its_threshold_before_the_run_is_never_what_saturated():
    # rabbitmq_raft_entry_commit_latency_seconds keeps an idle member's last value: 2.5 s on
    # rmq1 before any traffic and during it; the CPU is what this load saturated.
    prom = {"start": 0.0, "window": "30s", "queries": {
        "raft_commit_latency": {"series": {"rmq1": [[t, 2.5] for t in range(0, 200, 5)]}},
        "machine_cpu_busy": {"series": {"rmq1": [[t, 0.3 if t < 100 else 0.99]
                                                 for t in range(0, 200, 5)]}}}}
    base = rep.step_resources(prom, 0, 90)
    use = rep.saturation(rep.step_resources(prom, 120, 190), None, base)
    assert use["saturated_first"]["resource"] == "cpu"
    assert [s["host"] for s in use["past_threshold_before_the_run"]] == ["rmq1"]
    # without the baseline the stale gauge wins: the guard is what makes the difference
    assert rep.saturation(rep.step_resources(prom, 120, 190), None)["saturated_first"][
        "resource"] == "raft"
