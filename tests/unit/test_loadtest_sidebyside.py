"""Unit tests for playbooks/files/loadtest_sidebyside.py: Locust beside the open-loop generator.

A synthetic stall: both tools target 10 msg/s for 60 s and the broker answers nothing from
t=20 s to t=30 s. The generator keeps its schedule (every message due in the stall is confirmed
late, measured from its intended time); the closed-loop Locust user sits in one request and
sends nothing else meanwhile. The comparison must show exactly that.
"""

import json
import os

import pytest
from utils import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FILES = os.path.join(ROOT, "playbooks", "files")
rep = load_file("loadtest_report", os.path.join(FILES, "loadtest_report.py"))
rep.client_module("checker")  # the client package on sys.path, as the report does
sbs = load_file("loadtest_sidebyside", os.path.join(FILES, "loadtest_sidebyside.py"))

T0 = 1000.0
STALL = (T0 + 20.0, T0 + 30.0)


def broker_answer(sent):
    """Confirm time for a message sent at `sent`: 5 ms, or at the end of the stall."""
    if STALL[0] <= sent < STALL[1]:
        return STALL[1] + 0.005
    return sent + 0.005


def write_history(host_dir):
    os.makedirs(os.path.join(host_dir, "locust"))
    with open(os.path.join(host_dir, "ops-load1-0.jsonl"), "w", encoding="utf-8") as f:
        for seq in range(600):  # open loop: 10 msg/s whatever happens
            intended = T0 + seq * 0.1
            f.write(json.dumps({"t": "pub", "run": "r", "pub": "load1-p0", "seq": seq,
                                "intended": intended, "sent": intended,
                                "confirmed": broker_answer(intended), "outcome": "confirmed"})
                    + "\n")
    with open(os.path.join(host_dir, "locust", "locust-x-1.jsonl"), "w", encoding="utf-8") as f:
        t = T0
        while t < T0 + 60.0:  # closed loop: the next request only after the answer
            done = broker_answer(t)
            f.write(json.dumps({"t": "publish-confirm", "start": t, "ms": (done - t) * 1000.0,
                                "outcome": "confirmed"}) + "\n")
            t = max(t + 0.1, done)


@pytest.fixture(name="result")
def fixture_result(tmp_path):
    host = tmp_path / "load1"
    write_history(str(host))
    return sbs.compare([str(host)], {"at": STALL[0], "host": "rmq1", "kind": "kill -9"}, 10.0)


def test_the_generator_records_every_message_due_in_the_stall(result):
    stall = result["stall"]
    assert stall["generator_due"] == 100           # 10 s at 10 msg/s
    assert stall["generator_recorded"] == 100
    assert stall["generator_over_1s"] == 91        # intended 20.0 .. 29.0 s: confirmed >= 1 s late
    assert stall["generator_max_ms"] == pytest.approx(10005, abs=1)


def test_locust_sends_once_and_waits(result):
    stall = result["stall"]
    assert stall["locust_sent"] == 1               # one request, stuck for the whole stall
    assert stall["locust_over_1s"] == 1
    assert stall["locust_share_of_expected"] < 0.05
    assert result["locust"]["longest_send_gap"]["seconds"] == pytest.approx(10.0, abs=0.01)


def test_percentiles_show_the_omission(result):
    gen = result["generator"]["latency_from_intended_ms"]
    loc = result["locust"]["latency_ms"]
    assert gen["count"] == 600
    # 1 slow request among ~500 hides below Locust's p99; 90+ slow messages of 600 do not
    assert loc["p99"] < 10 and gen["p99"] > 5000
    assert loc["max"] == pytest.approx(gen["max"], rel=1e-3)


def test_markdown_and_plot(result, tmp_path):
    text = "\n".join(sbs.render_md("sbs-failover", result))
    assert "coordinated omission, measured" in text and "Locust should have sent" in text
    path = tmp_path / "sbs.png"
    sbs.plot(result, str(path), "test")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_nothing_to_compare_without_locust(tmp_path):
    host = tmp_path / "load1"
    write_history(str(host))
    os.remove(os.path.join(str(host), "locust", "locust-x-1.jsonl"))
    assert sbs.compare([str(host)]) is None
