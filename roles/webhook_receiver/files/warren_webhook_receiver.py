#!/usr/bin/python3
"""warren-webhook-receiver: records Alertmanager webhook notifications, for labs and tests.

POST <any path>   the body (Alertmanager's webhook JSON) is appended as one line to the
                  JSON-lines file, wrapped as {"received_at": <unix time>, "payload": <body>}.
                  Answers 200, or 400 when the body is not JSON.
GET /alerts       the recorded lines, as one JSON list (oldest first).
GET /deadman      the lab's dead man's switch: 200 while Watchdog heartbeats (notifications
                  whose alerts include alertname="Watchdog", firing) arrive, 503 once the
                  newest is older than --deadman-after seconds (or none came yet). The body
                  says how old the newest heartbeat is. Prometheus down, Alertmanager down or
                  a silenced Watchdog all turn it to 503.
GET /healthz      "ok".

Not for production: no authentication, no rotation. Standard library only.
Usage: warren_webhook_receiver.py --listen ADDRESS --port PORT --file PATH [--deadman-after S]
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1024 * 1024
DEADMAN_ALERT = "Watchdog"


def is_heartbeat(entry):
    """True when a recorded line carries the firing Watchdog alert."""
    payload = entry.get("payload") or {}
    return any(a.get("labels", {}).get("alertname") == DEADMAN_ALERT and a.get("status") == "firing"
               for a in payload.get("alerts") or [])


def deadman_status(entries, now, max_age):
    """(HTTP status, body) of the dead man's switch for the recorded entries at time now."""
    beats = [e["received_at"] for e in entries if is_heartbeat(e)]
    if not beats:
        return 503, {"status": "no heartbeat yet", "heartbeats": 0, "max_age_seconds": max_age}
    age = now - max(beats)
    body = {"heartbeats": len(beats), "last_heartbeat_at": max(beats),
            "age_seconds": round(age, 1), "max_age_seconds": max_age}
    if age > max_age:
        body["status"] = "heartbeats stopped: Prometheus, Alertmanager or the Watchdog route is down or silenced"
        return 503, body
    body["status"] = "ok"
    return 200, body


class Handler(BaseHTTPRequestHandler):
    server_version = "warren-webhook-receiver/1.0"
    lock = threading.Lock()
    path_file = None
    deadman_after = 180.0

    def _reply(self, code, body, content_type="application/json"):
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self._reply(400, '{"error": "body missing or too large"}')
            return
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw)
        except ValueError:
            self._reply(400, '{"error": "body is not JSON"}')
            return
        line = json.dumps({"received_at": time.time(), "path": self.path, "payload": payload},
                          sort_keys=True, separators=(",", ":"))
        with self.lock, open(self.path_file, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        self._reply(200, '{"status": "recorded"}')

    def do_GET(self):  # noqa: N802
        if self.path == "/healthz":
            self._reply(200, "ok\n", "text/plain")
        elif self.path == "/alerts":
            self._reply(200, json.dumps(self._entries()))
        elif self.path == "/deadman":
            code, body = deadman_status(self._entries(), time.time(), self.deadman_after)
            self._reply(code, json.dumps(body, sort_keys=True))
        else:
            self._reply(404, '{"error": "not found"}')

    def _entries(self):
        with self.lock:
            try:
                with open(self.path_file, encoding="utf-8") as handle:
                    return [json.loads(line) for line in handle if line.strip()]
            except FileNotFoundError:
                return []

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--file", required=True, help="JSON-lines file to append to")
    parser.add_argument("--deadman-after", type=float, default=180.0,
                        help="GET /deadman answers 503 when the newest Watchdog heartbeat is older (s)")
    args = parser.parse_args(argv)
    Handler.path_file = args.file
    Handler.deadman_after = args.deadman_after
    server = ThreadingHTTPServer((args.listen, args.port), Handler)
    server.daemon_threads = True
    print(f"listening on {args.listen}:{args.port}, recording to {args.file}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
