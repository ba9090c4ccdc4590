"""warren.rabbitmq.alertmanager_silence against a fake Alertmanager v2 API (open_url mocked)."""

import io
import json
from urllib.error import HTTPError, URLError

import pytest
from utils import run_fail, run_ok

from ansible_collections.warren.rabbitmq.plugins.module_utils import alertmanager
from ansible_collections.warren.rabbitmq.plugins.modules import alertmanager_silence

URL = "http://mon1:9093"
NODE = ['rabbitmq_node="rabbit@rmq2"', 'alertname=~"RabbitMQ.*"']


class FakeAlertmanager:
    """Just enough of /api/v2/silences: list, create, expire; records every call."""

    def __init__(self):
        self.silences = {}
        self.calls = []
        self.down = False

    def open_url(self, url, method="GET", data=None, headers=None, **kw):
        self.calls.append((method, url))
        if self.down:
            raise URLError("connection refused")
        path = url.split("/api/v2", 1)[1]
        if method == "GET" and path == "/silences":
            return io.BytesIO(json.dumps(list(self.silences.values())).encode())
        if method == "POST" and path == "/silences":
            body = json.loads(data)
            sid = "s%d" % (len(self.silences) + 1)
            self.silences[sid] = dict(body, id=sid, status={"state": "active"})
            return io.BytesIO(json.dumps({"silenceID": sid}).encode())
        if method == "DELETE" and path.startswith("/silence/"):
            sid = path.rsplit("/", 1)[1]
            if sid not in self.silences:
                raise HTTPError(url, 404, "not found", {}, io.BytesIO(b"silence not found"))
            self.silences[sid]["status"] = {"state": "expired"}
            return io.BytesIO(b"")
        raise AssertionError((method, url))

    def writes(self):
        return [c for c in self.calls if c[0] != "GET"]


@pytest.fixture
def am(monkeypatch):
    fake = FakeAlertmanager()
    monkeypatch.setattr(alertmanager, "open_url", fake.open_url)
    return fake


def present(**kw):
    args = {"url": URL, "matchers": NODE, "duration": "20m", "comment": "rolling restart of rmq2",
            "created_by": "test"}
    args.update(kw)
    return args


def test_creates_a_silence_with_parsed_matchers(am):
    result = run_ok(alertmanager_silence.main, present())
    assert result["changed"] and result["silence_id"] == "s1"
    silence = am.silences["s1"]
    assert sorted(silence["matchers"], key=lambda m: m["name"]) == [
        {"name": "alertname", "value": "RabbitMQ.*", "isRegex": True, "isEqual": True},
        {"name": "rabbitmq_node", "value": "rabbit@rmq2", "isRegex": False, "isEqual": True}]
    assert silence["createdBy"] == "test" and silence["comment"] == "rolling restart of rmq2"
    start, end = (alertmanager_silence.parse_time(silence[k]) for k in ("startsAt", "endsAt"))
    assert (end - start).total_seconds() == 20 * 60


def test_idempotent_matchers_in_any_order(am):
    run_ok(alertmanager_silence.main, present())
    again = run_ok(alertmanager_silence.main, present(matchers=list(reversed(NODE))))
    assert not again["changed"] and again["silence_id"] == "s1"
    assert len(am.silences) == 1


def test_check_mode_creates_nothing(am):
    result = run_ok(alertmanager_silence.main, present(), check_mode=True)
    assert result["changed"] and result["silence_id"] is None
    assert am.writes() == []


def test_expire_by_id_and_by_matchers(am):
    first = run_ok(alertmanager_silence.main, present())["silence_id"]
    result = run_ok(alertmanager_silence.main, {"url": URL, "silence_id": first, "state": "absent"})
    assert result["changed"] and result["expired"] == [first]
    assert am.silences[first]["status"]["state"] == "expired"
    # expired silences are not active any more: a second run changes nothing
    assert not run_ok(alertmanager_silence.main, {"url": URL, "silence_id": first, "state": "absent"})["changed"]
    second = run_ok(alertmanager_silence.main, present())["silence_id"]
    other = run_ok(alertmanager_silence.main, present(created_by="someone-else"))["silence_id"]
    result = run_ok(alertmanager_silence.main, {"url": URL, "matchers": NODE, "created_by": "test", "state": "absent"})
    assert result["expired"] == [second]
    assert am.silences[other]["status"]["state"] == "active"


def test_absent_in_check_mode_expires_nothing(am):
    sid = run_ok(alertmanager_silence.main, present())["silence_id"]
    result = run_ok(alertmanager_silence.main, {"url": URL, "silence_id": sid, "state": "absent"}, check_mode=True)
    assert result["changed"] and am.silences[sid]["status"]["state"] == "active"


def test_extend_replaces_a_silence_that_ends_too_early(am):
    short = run_ok(alertmanager_silence.main, present(duration="5m"))["silence_id"]
    assert not run_ok(alertmanager_silence.main, present(duration="5m", extend=True))["changed"]
    longer = run_ok(alertmanager_silence.main, present(duration="2h", extend=True))
    assert longer["changed"] and longer["silence_id"] != short
    assert am.silences[short]["status"]["state"] == "expired"


@pytest.mark.parametrize("matcher", ['rabbitmq_node=rabbit@rmq2', 'node ~ "x"', '="x"'])
def test_malformed_matcher_fails_clearly(am, matcher):
    result = run_fail(alertmanager_silence.main, present(matchers=[matcher]))
    assert "must look like" in result["msg"] and am.calls == []


def test_refuses_to_silence_the_watchdog(am):
    result = run_fail(alertmanager_silence.main, present(matchers=['alertname="Watchdog"']))
    assert "dead man" in result["msg"] and am.writes() == []


def test_unreachable_alertmanager_fails_with_the_url(am):
    am.down = True
    result = run_fail(alertmanager_silence.main, present())
    assert "cannot reach Alertmanager" in result["msg"] and URL in result["msg"]


def test_absent_needs_an_id_or_matchers(am):
    result = run_fail(alertmanager_silence.main, {"url": URL, "state": "absent"})
    assert "silence_id" in result["msg"]


@pytest.mark.parametrize("text, seconds", [("90", 90), ("20m", 1200), ("2h", 7200), ("30d", 2592000)])
def test_durations(text, seconds):
    assert alertmanager_silence.parse_duration(text) == seconds


def test_bad_duration_fails(am):
    assert "duration" in run_fail(alertmanager_silence.main, present(duration="soon"))["msg"]


def test_alertmanager_nanosecond_timestamps_parse():
    moment = alertmanager_silence.parse_time("2026-12-03T10:00:00.123456789Z")
    assert moment.microsecond == 123456 and moment.utcoffset().total_seconds() == 0


def test_extend_is_idempotent_within_half_the_duration(am):
    run_ok(alertmanager_silence.main, present(duration="30d", extend=True))
    assert not run_ok(alertmanager_silence.main, present(duration="30d", extend=True))["changed"]
