"""Unit tests for bench/bench_load.py: the summary `make bench-load` prints from a knee report
(knee per queue type, quorum/classic ratio, generator cost, the aims below the knee)."""

import os

import pytest
from utils import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
bench = load_file("bench_load", os.path.join(ROOT, "bench", "bench_load.py"))


def step(rate, achieved, lag, valid=True):
    return {"target_rate": rate, "achieved_rate": achieved, "achieved_ratio": achieved / rate,
            "valid": valid, "generator_lag_ms": {"p99": lag}}


def run(name, qtype, knee, steps, per_core=900.0):
    return {"name": name, "params": {"queue_type": qtype}, "steps": steps,
            "knee": {"rate": knee, "found": True,
                     "stopped_by": {"target_rate": 400, "reasons": ["p99 too high"]}},
            "generator": {"msg_per_s_per_core": per_core},
            "correctness": {"counts": {"lost": 0}}}


REPORT = {"rules": {"slo_p99_ms": 50}, "runs": [
    run("knee-quorum", "quorum", 100, [step(50, 50.0, 0.4), step(100, 99.5, 0.9),
                                        step(200, 150.0, 3.0)]),
    run("knee-classic", "classic", 200, [step(50, 50.0, 0.2), step(100, 98.0, 0.3),
                                          step(200, 200.0, 2.5), step(400, 390.0, 8.0, False)],
        per_core=1200.0),
]}


def test_knees_and_ratio():
    s = bench.summarise(REPORT)
    assert s["queue_types"]["quorum"]["knee_msg_s"] == 100
    assert s["queue_types"]["classic"]["knee_msg_s"] == 200
    assert s["ratio_quorum_classic_knee"] == pytest.approx(0.5)
    # the invalid 400 msg/s step never counts as the classic queues' best
    assert s["queue_types"]["classic"]["max_valid_achieved_msg_s"] == 200.0
    assert s["ratio_quorum_classic_max_achieved"] == pytest.approx(150.0 / 200.0)
    assert s["generator_msg_s_per_core"] == 1200.0


def test_aims_only_look_below_the_knee():
    q = bench.summarise(REPORT)["queue_types"]["quorum"]["aims_below_knee"]
    assert q["steps"] == 2                       # 50 and 100, not 200
    assert q["achieved_min_ratio"] == pytest.approx(0.995)
    assert q["generator_lag_p99_max_ms"] == pytest.approx(0.9)
    assert q["achieved_aim_met"] and q["lag_aim_met"]
    c = bench.summarise(REPORT)["queue_types"]["classic"]["aims_below_knee"]
    assert c["achieved_min_ratio"] == pytest.approx(0.98) and not c["achieved_aim_met"]
    assert c["lag_aim_met"] is False            # 2.5 ms at 200 msg/s


def test_no_knee_means_no_aims():
    r = run("knee-quorum", "quorum", None, [step(50, 20.0, 0.4)])
    a = bench.aims(r)
    assert a["steps"] == 0 and not a["achieved_aim_met"] and not a["lag_aim_met"]


def test_print_summary(capsys):
    bench.print_summary(dict(bench.summarise(REPORT), report="reports/load/knee-x"))
    out = capsys.readouterr().out
    assert "quorum   knee 100 msg/s" in out and "quorum / classic: knee 0.500" in out
    assert "1200 msg/s per generator core" in out
    assert "- at the steps that kept up" in out   # no kept-up figure in this report


def test_provisional_knee_leaves_only_the_lag_rule_out():
    def st(rate, achieved, p99):
        return {"target_rate": rate, "achieved_rate": achieved, "achieved_ratio": achieved / rate,
                "valid": False, "confirm_latency_ms": {"p99": p99}}
    r = {"steps": [st(100, 100.0, 40.0), st(200, 199.5, 49.0), st(300, 299.0, 80.0),
                   st(400, 400.0, 10.0)]}
    assert bench.knee_ignoring_lag(r, 50.0) == 200          # stops at the first miss
    r["steps"][1]["achieved_rate"], r["steps"][1]["achieved_ratio"] = 150.0, 0.75
    assert bench.knee_ignoring_lag(r, 50.0) == 100          # short of the target: a miss too
