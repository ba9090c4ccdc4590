"""The lab webhook receiver's dead man's switch (roles/webhook_receiver): GET /deadman turns 503
when the Watchdog heartbeats stop, e.g. because someone silenced the Watchdog."""

import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest
from utils import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
receiver = load_file("warren_webhook_receiver",
                     os.path.join(ROOT, "roles", "webhook_receiver", "files", "warren_webhook_receiver.py"))


def entry(at, alertname="Watchdog", status="firing"):
    return {"received_at": at, "path": "/deadman",
            "payload": {"alerts": [{"labels": {"alertname": alertname}, "status": status}]}}


def test_no_heartbeat_yet_is_an_alarm():
    code, body = receiver.deadman_status([], now=1000.0, max_age=180)
    assert code == 503 and body["heartbeats"] == 0


def test_fresh_heartbeat_is_ok():
    code, body = receiver.deadman_status([entry(900.0), entry(960.0)], now=1000.0, max_age=180)
    assert code == 200 and body["age_seconds"] == 40.0 and body["heartbeats"] == 2


def test_a_silenced_watchdog_is_noticed():
    """Heartbeats every minute, then the Watchdog is silenced: none after t=600."""
    beats = [entry(float(t)) for t in range(0, 601, 60)]
    assert receiver.deadman_status(beats, now=700.0, max_age=180)[0] == 200
    code, body = receiver.deadman_status(beats, now=781.0, max_age=180)
    assert code == 503 and "stopped" in body["status"] and body["age_seconds"] == 181.0


def test_other_alerts_and_resolved_watchdogs_are_no_heartbeat():
    entries = [entry(990.0, alertname="RabbitMQNodeDown"), entry(995.0, status="resolved")]
    assert receiver.deadman_status(entries, now=1000.0, max_age=180)[0] == 503


def test_http_endpoint(tmp_path):
    path = tmp_path / "alerts.jsonl"
    receiver.Handler.path_file = str(path)
    receiver.Handler.deadman_after = 180.0
    server = receiver.ThreadingHTTPServer(("127.0.0.1", 0), receiver.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = "http://127.0.0.1:%d" % server.server_address[1]
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/deadman", timeout=5)
        assert err.value.code == 503
        body = json.dumps({"alerts": [{"labels": {"alertname": "Watchdog"}, "status": "firing"}]}).encode()
        request = urllib.request.Request(base + "/deadman", data=body, headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(request, timeout=5).status == 200
        with urllib.request.urlopen(base + "/deadman", timeout=5) as response:
            assert response.status == 200 and json.load(response)["heartbeats"] == 1
        # An old heartbeat only: the switch trips.
        path.write_text(json.dumps(entry(time.time() - 600)) + "\n")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/deadman", timeout=5)
        assert err.value.code == 503
    finally:
        server.shutdown()
        server.server_close()
