#!/usr/bin/python3
"""warren-webhook-receiver: records Alertmanager webhook notifications, for labs and tests.

POST <any path>   the body (Alertmanager's webhook JSON) is appended as one line to the
                  JSON-lines file, wrapped as {"received_at": <unix time>, "payload": <body>}.
                  Answers 200, or 400 when the body is not JSON.
GET /alerts       the recorded lines, as one JSON list (oldest first).
GET /healthz      "ok".

Not for production: no authentication, no rotation. Standard library only.
Usage: warren_webhook_receiver.py --listen ADDRESS --port PORT --file PATH
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    server_version = "warren-webhook-receiver/1.0"
    lock = threading.Lock()
    path_file = None

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
            with self.lock:
                try:
                    with open(self.path_file, encoding="utf-8") as handle:
                        lines = [json.loads(line) for line in handle if line.strip()]
                except FileNotFoundError:
                    lines = []
            self._reply(200, json.dumps(lines))
        else:
            self._reply(404, '{"error": "not found"}')

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--file", required=True, help="JSON-lines file to append to")
    args = parser.parse_args(argv)
    Handler.path_file = args.file
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
