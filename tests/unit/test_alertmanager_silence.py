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
        self.kwargs = []
        self.down = False
        # alerts: list of (labels, silence IDs muting it); resolve_after: GETs of /alerts after
        # which they are gone (None: never)
        self.alerts = []
        self.resolve_after = None
        self.alert_reads = 0

    def open_url(self, url, method="GET", data=None, headers=None, **kw):
        self.calls.append((method, url))
        self.kwargs.append(kw)
        if self.down:
            raise URLError("connection refused")
        path = url.split("/api/v2", 1)[1]
        if method == "GET" and path.startswith("/alerts?"):
            assert "silenced=true" in path  # muted alerts are the ones asked about
            self.alert_reads += 1
            gone = self.resolve_after is not None and self.alert_reads > self.resolve_after
            body = [] if gone else [{"labels": labels, "status": {"state": "suppressed", "silencedBy": ids}}
                                    for labels, ids in self.alerts]
            return io.BytesIO(json.dumps(body).encode())
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


class FakeClock:
    """time.monotonic/time.sleep without waiting; records every sleep."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(alertmanager_silence.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(alertmanager_silence.time, "sleep", fake.sleep)
    return fake


NODE_DOWN = {"alertname": "RabbitMQNodeDown", "rabbitmq_cluster": "c", "rabbitmq_node": "rabbit@rmq2", "severity": "page"}


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


def test_expire_a_list_of_ids(am):
    first = run_ok(alertmanager_silence.main, present())["silence_id"]
    second = run_ok(alertmanager_silence.main, present(matchers=['address="rmq2"']))["silence_id"]
    third = run_ok(alertmanager_silence.main, present(matchers=['address="rmq3"']))["silence_id"]
    result = run_ok(alertmanager_silence.main, {"url": URL, "silence_ids": [first, second], "state": "absent"})
    assert sorted(result["expired"]) == sorted([first, second])
    assert [am.silences[i]["status"]["state"] for i in (first, second, third)] == ["expired", "expired", "active"]


def test_waits_until_muted_alerts_resolve_before_expiring(am, clock):
    sid = run_ok(alertmanager_silence.main, present())["silence_id"]
    am.alerts = [(NODE_DOWN, [sid])]
    am.resolve_after = 3  # resolved on the 4th look
    result = run_ok(alertmanager_silence.main, {"url": URL, "silence_id": sid, "state": "absent",
                                                 "settle": 30, "wait_timeout": 180, "wait_delay": 5})
    assert result["expired"] == [sid] and result["still_silenced"] == []
    assert clock.sleeps == [30, 5, 5, 5] and result["waited"] == 45
    # the silence was expired only after the alert was gone: its DELETE is the last call
    alert_gets = [i for i, c in enumerate(am.calls) if "/alerts?" in c[1]]
    delete = [i for i, c in enumerate(am.calls) if c[0] == "DELETE"]
    assert len(alert_gets) == 4 and delete == [len(am.calls) - 1] and delete[0] > alert_gets[-1]


def test_expires_anyway_when_the_alerts_do_not_resolve(am, clock, monkeypatch):
    warnings = []
    monkeypatch.setattr(alertmanager_silence.AnsibleModule, "warn", lambda self, msg: warnings.append(msg))
    sid = run_ok(alertmanager_silence.main, present())["silence_id"]
    am.alerts = [(NODE_DOWN, [sid])]
    result = run_ok(alertmanager_silence.main, {"url": URL, "silence_id": sid, "state": "absent",
                                                 "wait_timeout": 12, "wait_delay": 5})
    assert am.silences[sid]["status"]["state"] == "expired"
    assert result["still_silenced"] == ['RabbitMQNodeDown{rabbitmq_cluster="c",rabbitmq_node="rabbit@rmq2",severity="page"}']
    assert clock.sleeps == [5, 5, 2] and result["waited"] == 12
    assert len(warnings) == 1 and "notify now" in warnings[0] and "RabbitMQNodeDown" in warnings[0]


def test_alerts_muted_by_other_silences_do_not_hold_it(am, clock):
    sid = run_ok(alertmanager_silence.main, present())["silence_id"]
    # muted by another silence only, by ours and a standing one (stays quiet after ours ends), by none
    am.alerts = [(NODE_DOWN, ["someone-elses-silence"]),
                 ({"alertname": "HostClockNotSynchronising", "rabbitmq_node": "rabbit@rmq2"}, ["standing", sid]),
                 ({"alertname": "HostClockNotSynchronising"}, [])]
    result = run_ok(alertmanager_silence.main, {"url": URL, "silence_id": sid, "state": "absent", "wait_timeout": 60})
    assert result["still_silenced"] == [] and clock.sleeps == [] and am.silences[sid]["status"]["state"] == "expired"


def test_no_wait_in_check_mode_nor_without_a_silence(am, clock):
    sid = run_ok(alertmanager_silence.main, present())["silence_id"]
    am.alerts = [(NODE_DOWN, [sid])]
    run_ok(alertmanager_silence.main, {"url": URL, "silence_id": sid, "state": "absent", "settle": 30,
                                       "wait_timeout": 60}, check_mode=True)
    run_ok(alertmanager_silence.main, {"url": URL, "silence_id": "gone", "state": "absent", "settle": 30,
                                       "wait_timeout": 60})
    assert clock.sleeps == [] and am.alert_reads == 0


def test_basic_auth_is_sent_when_a_user_is_given(am):
    run_ok(alertmanager_silence.main, present(url_username="ops", url_password="s3cret"))
    assert all(kw.get("url_username") == "ops" and kw.get("url_password") == "s3cret" and kw.get("force_basic_auth")
               for kw in am.kwargs)
    am.kwargs.clear()
    run_ok(alertmanager_silence.main, present())
    assert not any("url_username" in kw for kw in am.kwargs)
