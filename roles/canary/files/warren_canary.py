#!/usr/bin/python3
"""warren-canary: a synthetic AMQP client that measures a RabbitMQ cluster the way a user sees it.

What it does
------------
Every ``interval`` seconds it runs one *probe*:

1. publish one persistent message (``delivery_mode=2``, ``mandatory``) with a unique
   ``message_id`` to a quorum queue in its own vhost, on a channel in publisher-confirm mode,
   and time publish -> broker confirm;
2. wait for that message on a long-lived consumer (manual acks, prefetch 10), ack it, and time
   publish -> delivery (end to end);
3. count the probe under exactly one ``result`` (see below).

The consumer is idempotent: a delivery whose ``message_id`` is not the one in flight (a
leftover of a probe that timed out, or of a crash) is acked and counted as *stale*, not as an
error. A delivery with the right id but a different body is a ``payload_mismatch``.

Results (``warren_canary_probes_total{result=...}``)
-------------------------------------------------------
``ok``                  published, confirmed, consumed back intact.
``connection_failed``   no connection could be opened to any node (or the canary is waiting out
                        its reconnect backoff: a probe that falls due then is counted here, so
                        the SLI stays weighted by time even during an outage).
``publish_failed``      the channel or queue could not be set up, the broker nacked or returned
                        the message, or the connection broke while publishing.
``confirm_timeout``     no confirm within ``confirm_timeout`` (e.g. a quorum queue without a
                        leader, or a memory/disk alarm blocking publishers).
``consume_timeout``     confirmed, but not delivered back within ``consume_timeout`` (or the
                        connection broke while waiting for it).
``payload_mismatch``    the message came back with its id but a different body.

Metrics (Prometheus text format 0.0.4 on ``http://listen_address:listen_port/metrics``)
--------------------------------------------------------------------------------------
``warren_canary_probes_total{result}``               counter, every result pre-set to 0
``warren_canary_publish_confirm_seconds``            histogram (confirmed probes)
``warren_canary_end_to_end_seconds``                 histogram (``ok`` probes)
``warren_canary_last_success_timestamp_seconds``     gauge, Unix time of the last ``ok`` (0: none)
``warren_canary_stale_messages_total``               counter
``warren_canary_connected{node="host:port"}``        gauge, 1 on the node in use, 0 on the others
``warren_canary_reconnects_total``                   counter, connections opened after the first
``warren_canary_build_info{version,pika,python}``    gauge, always 1

Histogram buckets: 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 (+Inf).

Labels: the canary adds no ``rabbitmq_cluster`` (or ``host``) label itself. Prometheus attaches
both as target labels of the ``canary`` scrape job, as it does for the brokers; exposing them
here too would only produce ``exported_rabbitmq_cluster`` duplicates. One canary process probes
one cluster; a monitoring host watching several clusters runs one canary per cluster, each with
its own config file and port, each a separate scrape target. The ``rabbitmq_cluster`` config
key names the cluster in logs, in the AMQP connection name and in ``--once`` output.

Port: 9491 by default. Nothing else warren deploys uses it (9090 Prometheus, 9093/9094
Alertmanager, 9100 node_exporter, 3000 Grafana, 15692 RabbitMQ's Prometheus endpoint); 9419,
the port the community rabbitmq_exporter uses, is avoided on purpose.

Configuration (``--config FILE``, JSON object or INI section ``[canary]``)
-------------------------------------------------------------------------
Required: ``nodes`` (list of ``host:port``; in INI comma or whitespace separated), ``vhost``,
``user``, and exactly one of ``password`` / ``password_file``.
Optional (default): ``queue`` (warren.canary), ``interval`` (5), ``connect_timeout`` (5),
``confirm_timeout`` (5), ``consume_timeout`` (5), ``heartbeat`` (30),
``reconnect_backoff_initial`` (1), ``reconnect_backoff_max`` (10), ``tls`` (false),
``tls_ca_file`` (system CAs), ``tls_verify_hostname`` (true), ``tls_server_name`` (the node's
host), ``tls_cert_file`` / ``tls_key_file`` (no client certificate), ``listen_address``
(0.0.0.0), ``listen_port`` (9491), ``rabbitmq_cluster`` (empty). Unknown keys are errors.
A port may be left out of a node (5672, or 5671 with TLS); IPv6 literals go in brackets.

Queue: passively declared first; if missing, declared durable with ``x-queue-type: quorum``.
The user therefore needs configure, write and read permission on that queue in its vhost.

Reconnection
------------
Nodes are tried in order, starting from the one last used; a failed or lost node moves the
start to the next one, so a node failure costs one probe, not an outage. When every node fails,
the next sweep waits an exponential backoff with equal jitter: attempt *n* waits a random time
in [d/2, d] with d = min(reconnect_backoff_max, reconnect_backoff_initial * 2**(n-1)). Probes
falling due meanwhile count as ``connection_failed``. A successful connection resets it.

Bounded by construction: at most one message per interval (ticks missed during a slow probe
are skipped, never caught up), every broker call runs under a deadline, and no failure path
loops without waiting. Any broker or network error is caught and becomes a counted result;
the process does not exit on them.

Running
-------
Meant to run under systemd as an unprivileged user (``Type=simple``,
``ExecStart=/usr/bin/python3 /usr/local/lib/warren/warren_canary.py --config FILE``,
``Restart=on-failure``). Needs python3 and Debian's ``python3-pika`` (pika 1.3 or 1.4), nothing
else. SIGTERM or SIGINT stop it within about a second: a broker call in progress is cut short
and not counted. Logs go to stderr, one line per state change (connected, lost, result kind
changed, recovered), not one per probe.

``--once`` runs a single probe without the HTTP server, prints a JSON result on stdout and
exits 0 if the probe was ``ok``, 1 otherwise (2 for a configuration error).

Deadlines use SIGALRM, so the probe loop must run in the main thread (it does).

Prometheus exposition is a small hand-written text-format writer: the canary then needs
nothing but pika, and the format is simple enough to test by parsing it back.
"""

import argparse
import configparser
import contextlib
import json
import logging
import math
import os
import random
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn

try:  # pragma: no cover - exercised on the monitoring host
    import pika
    import pika.exceptions
except ImportError:  # pragma: no cover - config checks and tests work without it
    pika = None

__version__ = "1.0.0"

LOG = logging.getLogger("warren-canary")

RESULTS = (
    "ok",
    "publish_failed",
    "confirm_timeout",
    "consume_timeout",
    "connection_failed",
    "payload_mismatch",
)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DEFAULT_PORT = 9491
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFETCH = 10
IDLE_SLICE = 0.25  # seconds; how often the idle wait looks at the stop flag
CONSUME_SLICE = 0.1  # seconds; the consumer generator's inactivity timeout


# --------------------------------------------------------------------------------------------
# Prometheus text exposition
# --------------------------------------------------------------------------------------------


def _escape_label_value(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value):
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value)) if isinstance(value, float) else str(value)


def _label_block(pairs):
    pairs = list(pairs)
    if not pairs:
        return ""
    return "{" + ",".join('%s="%s"' % (k, _escape_label_value(v)) for k, v in pairs) + "}"


class _Metric:
    kind = "untyped"

    def __init__(self, name, documentation, labelnames=()):
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values = {}
        self._lock = threading.Lock()

    def _key(self, labels):
        if set(labels) != set(self.labelnames):
            raise ValueError("%s takes labels %s, got %s" % (self.name, self.labelnames, sorted(labels)))
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self):
        doc = self.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        return ["# HELP %s %s" % (self.name, doc), "# TYPE %s %s" % (self.name, self.kind)]


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount=1.0, **labels):
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def touch(self, **labels):
        """Create the series at 0 so that rate() and absent() see it from the first scrape."""
        self.inc(0.0, **labels)

    def value(self, **labels):
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def lines(self):
        with self._lock:
            items = sorted(self._values.items())
        return [
            "%s%s %s" % (self.name, _label_block(zip(self.labelnames, k)), _format_value(v))
            for k, v in items
        ]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value, **labels):
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount=1.0, **labels):
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, documentation, buckets=BUCKETS):
        super().__init__(name, documentation)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._count = 0

    def observe(self, value):
        with self._lock:
            for i, bound in enumerate(self.bounds):
                if value <= bound:
                    self._counts[i] += 1
                    break
            self._sum += value
            self._count += 1

    def lines(self):
        with self._lock:
            counts, total, count = list(self._counts), self._sum, self._count
        out, running = [], 0
        for bound, n in zip(self.bounds, counts):
            running += n
            out.append('%s_bucket{le="%s"} %d' % (self.name, _format_value(bound), running))
        out.append('%s_bucket{le="+Inf"} %d' % (self.name, count))
        out.append("%s_sum %s" % (self.name, _format_value(total)))
        out.append("%s_count %d" % (self.name, count))
        return out


class Registry:
    def __init__(self):
        self._metrics = []

    def add(self, metric):
        self._metrics.append(metric)
        return metric

    def render(self):
        lines = []
        for metric in self._metrics:
            lines.extend(metric.header())
            lines.extend(metric.lines())
        return "\n".join(lines) + "\n"


class CanaryMetrics:
    """The canary's metric families, with every label value that is known up front set to 0."""

    def __init__(self, nodes):
        r = self.registry = Registry()
        self.probes = r.add(Counter(
            "warren_canary_probes_total", "Canary probes by result.", ["result"]))
        self.confirm = r.add(Histogram(
            "warren_canary_publish_confirm_seconds",
            "Time from publish to the broker's publisher confirm, confirmed probes only."))
        self.end_to_end = r.add(Histogram(
            "warren_canary_end_to_end_seconds",
            "Time from publish to delivery back to the canary, ok probes only."))
        self.last_success = r.add(Gauge(
            "warren_canary_last_success_timestamp_seconds",
            "Unix time of the last ok probe, 0 before the first."))
        self.stale = r.add(Counter(
            "warren_canary_stale_messages_total",
            "Deliveries that were not the message in flight (leftovers), acked and dropped."))
        self.connected = r.add(Gauge(
            "warren_canary_connected", "1 on the broker node the canary is connected to.", ["node"]))
        self.reconnects = r.add(Counter(
            "warren_canary_reconnects_total", "Connections opened after the first one."))
        self.build_info = r.add(Gauge(
            "warren_canary_build_info", "Canary version, always 1.", ["version", "pika", "python"]))
        for result in RESULTS:
            self.probes.touch(result=result)
        self.last_success.set(0)
        self.stale.touch()
        self.reconnects.touch()
        for node in nodes:
            self.connected.set(0, node=node)
        self.build_info.set(
            1, version=__version__,
            pika=getattr(pika, "__version__", "none") if pika else "none",
            python="%d.%d.%d" % sys.version_info[:3])

    def set_connected(self, current):
        for (node,) in list(self.connected._values):
            self.connected.set(1 if node == current else 0, node=node)


class _ThreadingHTTPServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_http_server(registry, address, port):
    """Serve ``/metrics`` from a daemon thread; returns the server (``.shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, code = registry.render().encode("utf-8"), CONTENT_TYPE, 200
            elif path == "/":
                body = b"warren-canary: metrics at /metrics\n"
                ctype, code = "text/plain; charset=utf-8", 200
            else:
                body, ctype, code = b"not found\n", "text/plain; charset=utf-8", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # scrapes are not state changes
            LOG.debug("http: " + fmt, *args)

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server_cls = type("CanaryHTTPServer", (_ThreadingHTTPServer,), {"address_family": family})
    server = server_cls((address, port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="metrics-http", daemon=True)
    thread.start()
    return server


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


class ConfigError(Exception):
    pass


_DEFAULTS = {
    "queue": "warren.canary",
    "interval": 5.0,
    "connect_timeout": 5.0,
    "confirm_timeout": 5.0,
    "consume_timeout": 5.0,
    "heartbeat": 30,
    "reconnect_backoff_initial": 1.0,
    "reconnect_backoff_max": 10.0,
    "tls": False,
    "tls_ca_file": None,
    "tls_verify_hostname": True,
    "tls_server_name": None,
    "tls_cert_file": None,
    "tls_key_file": None,
    "listen_address": "0.0.0.0",
    "listen_port": DEFAULT_PORT,
    "rabbitmq_cluster": "",
    "password": None,
    "password_file": None,
}
_REQUIRED = ("nodes", "vhost", "user")
_FLOATS = ("interval", "connect_timeout", "confirm_timeout", "consume_timeout",
           "reconnect_backoff_initial", "reconnect_backoff_max")
_INTS = ("heartbeat", "listen_port")
_BOOLS = ("tls", "tls_verify_hostname")
_STRINGS = ("queue", "vhost", "user", "password", "password_file", "tls_ca_file",
            "tls_server_name", "tls_cert_file", "tls_key_file", "listen_address",
            "rabbitmq_cluster")
KNOWN_KEYS = frozenset(_DEFAULTS) | frozenset(_REQUIRED)


class Config:
    """Validated settings; attributes are the config keys, plus ``nodes`` as (host, port) pairs
    and ``node_names`` as normalised ``host:port`` strings."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def public(self):
        """The settings without secrets, for ``--once`` output and logs."""
        return {k: v for k, v in sorted(self.__dict__.items()) if k not in ("password", "nodes")}


def _parse_bool(key, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off"):
        return False
    raise ConfigError("%r must be true or false, got %r" % (key, value))


def _parse_number(key, value, kind):
    if isinstance(value, bool):
        raise ConfigError("%r must be a number, got %r" % (key, value))
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError("%r must be a%s number, got %r"
                          % (key, "n integer" if kind is int else "", value)) from None
    return number


def parse_node(text, tls=False):
    """``host:port`` -> (host, port); ``[v6]:port``, and a bare host (default AMQP port)."""
    raw = str(text).strip()
    default = 5671 if tls else 5672
    if not raw:
        raise ConfigError("empty entry in 'nodes'")
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not host:
            raise ConfigError("node %r: unterminated IPv6 bracket" % raw)
        port_text = rest[1:] if rest.startswith(":") else (None if not rest else "!")
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    elif ":" in raw:
        raise ConfigError("node %r: write IPv6 addresses as [addr]:port" % raw)
    else:
        host, port_text = raw, None
    if not host:
        raise ConfigError("node %r: missing host" % raw)
    if port_text is None:
        port = default
    else:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError("node %r: port must be 1-65535" % raw)
        port = int(port_text)
    return host, port


def format_node(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def _read_raw(path):
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror or exc)) from None
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError("%s: invalid JSON: %s" % (path, exc)) from None
        if not isinstance(data, dict):
            raise ConfigError("%s: the JSON top level must be an object" % path)
        return data
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise ConfigError("%s: invalid INI: %s" % (path, exc)) from None
    if not parser.has_section("canary"):
        raise ConfigError("%s: no [canary] section (nor a JSON object)" % path)
    data = dict(parser.items("canary"))
    if "nodes" in data:
        data["nodes"] = data["nodes"].replace(",", " ").split()
    return data


def validate(raw, source="config"):
    """Check and normalise a mapping of settings; raise ConfigError naming the offending key."""
    try:
        return _validate(raw)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (source, exc)) from None


def _validate(raw):
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise ConfigError("unknown key(s) %s; valid keys: %s"
                          % (", ".join(unknown), ", ".join(sorted(KNOWN_KEYS))))
    missing = [k for k in _REQUIRED if raw.get(k) in (None, "", [])]
    if missing:
        raise ConfigError("missing required key(s): %s" % ", ".join(missing))
    values = dict(_DEFAULTS)
    values.update({k: v for k, v in raw.items() if v is not None})
    for key in _BOOLS:
        values[key] = _parse_bool(key, values[key])
    for key in _FLOATS:
        values[key] = _parse_number(key, values[key], float)
        if not values[key] > 0 or math.isinf(values[key]):
            raise ConfigError("%r must be a positive number of seconds, got %r"
                              % (key, raw.get(key)))
    for key in _INTS:
        values[key] = _parse_number(key, values[key], int)
    for key in _STRINGS:
        if values[key] is not None and not isinstance(values[key], str):
            raise ConfigError("%r must be a string, got %r" % (key, values[key]))
    if not 0 < values["listen_port"] < 65536:
        raise ConfigError("'listen_port' must be 1-65535, got %r" % values["listen_port"])
    if values["heartbeat"] < 0:
        raise ConfigError("'heartbeat' must be 0 (off) or a number of seconds")
    if values["interval"] < 0.5:
        raise ConfigError("'interval' must be at least 0.5 seconds")
    if values["reconnect_backoff_max"] < values["reconnect_backoff_initial"]:
        raise ConfigError("'reconnect_backoff_max' must not be below 'reconnect_backoff_initial'")
    nodes = values["nodes"]
    if isinstance(nodes, str) or not isinstance(nodes, list) or not nodes:
        raise ConfigError("'nodes' must be a non-empty list of host:port, got %r" % (nodes,))
    pairs = [parse_node(n, values["tls"]) for n in nodes]
    values["nodes"] = pairs
    values["node_names"] = [format_node(h, p) for h, p in pairs]
    if len(set(values["node_names"])) != len(pairs):
        raise ConfigError("'nodes' lists a node twice")
    if (values["password"] is None) == (values["password_file"] is None):
        raise ConfigError("set exactly one of 'password' and 'password_file'")
    if values["password_file"] is not None:
        try:
            with open(values["password_file"], encoding="utf-8") as handle:
                values["password"] = handle.read().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError("cannot read password_file %s: %s"
                              % (values["password_file"], exc.strerror or exc)) from None
        if not values["password"]:
            raise ConfigError("password_file %s is empty" % values["password_file"])
    if (values["tls_cert_file"] is None) != (values["tls_key_file"] is None):
        raise ConfigError("set both 'tls_cert_file' and 'tls_key_file', or neither")
    if not values["tls"]:
        for key in ("tls_ca_file", "tls_server_name", "tls_cert_file"):
            if values[key]:
                raise ConfigError("%r is set but 'tls' is false" % key)
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        if values[key] and not os.path.isfile(values[key]):
            raise ConfigError("%r: no such file %s" % (key, values[key]))
    if not values["queue"]:
        raise ConfigError("'queue' must not be empty")
    return Config(**values)


def load_config(path):
    return validate(_read_raw(path), source=path)


# --------------------------------------------------------------------------------------------
# Backoff and deadlines
# --------------------------------------------------------------------------------------------


def backoff_delay(attempt, initial, maximum, rand=random.random):
    """Seconds to wait before reconnect sweep number ``attempt + 1`` after ``attempt`` failures.

    Exponential with equal jitter: with d = min(maximum, initial * 2**(attempt-1)) the delay is
    uniform in [d/2, d]. It never exceeds ``maximum`` and never drops to 0, so a broker that is
    down is not hammered and a broker that is back is found again within ``maximum`` seconds.
    """
    attempt = max(1, int(attempt))
    ceiling = min(float(maximum), float(initial) * (2.0 ** min(attempt - 1, 62)))
    return ceiling / 2.0 + rand() * ceiling / 2.0


class DeadlineExceeded(Exception):
    """A broker call ran past its deadline (raised from the SIGALRM handler)."""


class Deadlines:
    """Wall-clock deadlines for blocking pika calls, via SIGALRM (main thread only).

    pika's BlockingConnection has no timeout for publisher confirms; an alarm that raises
    inside the blocking call is the only way to bound it with public API. A connection whose
    call was cut short this way is thrown away, never reused.
    """

    def __init__(self):
        self.armed = None
        self.enabled = (hasattr(signal, "setitimer")
                        and threading.current_thread() is threading.main_thread())
        if self.enabled:
            signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_alarm(self, signum, frame):
        if self.armed is not None:
            what, self.armed = self.armed, None
            raise DeadlineExceeded(what)

    @contextlib.contextmanager
    def limit(self, seconds, what):
        if not self.enabled:
            yield
            return
        self.armed = what
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
        try:
            yield
        finally:
            self.armed = None
            signal.setitimer(signal.ITIMER_REAL, 0)

    def cut_short(self):
        """Make a running ``limit`` block end now (used on SIGTERM)."""
        if self.enabled and self.armed is not None:
            signal.setitimer(signal.ITIMER_REAL, 0.001)


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


class ProbeResult:
    def __init__(self, result, detail="", node=None, confirm_seconds=None, end_to_end_seconds=None,
                 stale=0, message_id=None):
        self.result = result
        self.detail = detail
        self.node = node
        self.confirm_seconds = confirm_seconds
        self.end_to_end_seconds = end_to_end_seconds
        self.stale = stale
        self.message_id = message_id
        self.aborted = False

    def as_dict(self):
        return {
            "result": self.result,
            "detail": self.detail,
            "node": self.node,
            "publish_confirm_seconds": self.confirm_seconds,
            "end_to_end_seconds": self.end_to_end_seconds,
            "stale_messages": self.stale,
            "message_id": self.message_id,
        }


def _describe(exc):
    text = str(exc)
    if not text:  # pika's connection errors keep the cause in args; their repr names it
        return repr(exc)
    name = exc.__class__.__name__
    return text if text.startswith(name) else "%s: %s" % (name, text)


def _pika_errors(pika_module):
    """Exception classes that mean 'the broker or the network failed', never a canary bug."""
    classes = [OSError, EOFError, DeadlineExceeded]
    exceptions = getattr(pika_module, "exceptions", None)
    if exceptions is not None:
        classes.append(exceptions.AMQPError)
    return tuple(classes)


class Canary:
    """One probe per ``probe()`` call; ``run()`` loops until ``stop()``.

    ``connect`` is a callable (host, port) -> BlockingConnection-like object; tests give a
    fake one. The default builds pika connection parameters from the config.
    """

    def __init__(self, config, metrics=None, connect=None, pika_module=None, deadlines=None,
                 rand=random.random):
        self.cfg = config
        self.pika = pika_module if pika_module is not None else pika
        self.metrics = metrics or CanaryMetrics(config.node_names)
        self._connect_fn = connect or self._pika_connect
        self.deadlines = deadlines or Deadlines()
        self.rand = rand
        self.errors = _pika_errors(self.pika)
        self.conn = None
        self.channel = None
        self.consumer = None
        self.node_index = 0
        self.current_node = None
        self.connections_opened = 0
        self.failed_sweeps = 0
        self.next_sweep_at = 0.0
        self.stopping = False
        self.last_kind = None
        self.failing_since = None
        self.failures_in_row = 0

    # -- connections -------------------------------------------------------------------------

    def _pika_connect(self, host, port):
        cfg, pk = self.cfg, self.pika
        if pk is None:
            raise RuntimeError("python3-pika is not installed")
        ssl_options = None
        if cfg.tls:
            context = ssl.create_default_context(cafile=cfg.tls_ca_file)
            context.check_hostname = cfg.tls_verify_hostname
            if cfg.tls_cert_file:
                context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
            ssl_options = pk.SSLOptions(context, server_hostname=cfg.tls_server_name or host)
        name = "warren-canary@%s" % socket.gethostname()
        if cfg.rabbitmq_cluster:
            name += " (%s)" % cfg.rabbitmq_cluster
        params = pk.ConnectionParameters(
            host=host, port=port, virtual_host=cfg.vhost,
            credentials=pk.PlainCredentials(cfg.user, cfg.password),
            heartbeat=cfg.heartbeat, ssl_options=ssl_options,
            socket_timeout=cfg.connect_timeout, stack_timeout=cfg.connect_timeout,
            connection_attempts=1, retry_delay=0,
            client_properties={"connection_name": name, "product": "warren-canary",
                               "version": __version__})
        return pk.BlockingConnection(params)

    def _sweep(self):
        """Try every node once, starting with the preferred one. True when connected."""
        count = len(self.cfg.nodes)
        errors = []
        for step in range(count):
            if self.stopping:
                return False
            index = (self.node_index + step) % count
            host, port = self.cfg.nodes[index]
            name = self.cfg.node_names[index]
            try:
                with self.deadlines.limit(self.cfg.connect_timeout + 1.0, "connect"):
                    conn = self._connect_fn(host, port)
            except self.errors + (RuntimeError,) as exc:
                LOG.debug("connect to %s failed: %s", name, _describe(exc))
                errors.append("%s: %s" % (name, _describe(exc)))
                continue
            self.conn, self.node_index, self.current_node = conn, index, name
            self.connections_opened += 1
            if self.connections_opened > 1:
                self.metrics.reconnects.inc()
            self.metrics.set_connected(name)
            self.failed_sweeps = 0
            self.next_sweep_at = 0.0
            LOG.log(self._chatter(logging.INFO), "connected to %s%s", name,
                     " after trying %s" % "; ".join(errors) if errors else "")
            return True
        self.failed_sweeps += 1
        delay = backoff_delay(self.failed_sweeps, self.cfg.reconnect_backoff_initial,
                              self.cfg.reconnect_backoff_max, self.rand)
        self.next_sweep_at = time.monotonic() + delay
        self.sweep_errors = "; ".join(errors)
        if self.failed_sweeps == 1:
            LOG.warning("no node reachable (%s); retrying with backoff up to %gs",
                        self.sweep_errors, self.cfg.reconnect_backoff_max)
        return False

    def _chatter(self, level):
        """Connection churn is news while probes are ok; while they fail, the failing state was
        already logged once, so each reconnect of a failing streak goes to debug."""
        return level if self.last_kind in (None, "ok") else logging.DEBUG

    def _drop(self, reason):
        """Forget the connection (closing it if that is quick) and prefer the next node."""
        conn, name = self.conn, self.current_node
        self.conn = self.channel = self.consumer = None
        self.current_node = None
        self.metrics.set_connected(None)
        if conn is None:
            return
        self.node_index = (self.node_index + 1) % len(self.cfg.nodes)
        LOG.log(self._chatter(logging.WARNING), "dropping connection to %s: %s", name, reason)
        try:
            with self.deadlines.limit(1.0, "close"):
                if getattr(conn, "is_open", False):
                    conn.close()
        except self.errors + (Exception,) as exc:  # closing a broken connection may fail any way
            LOG.debug("close of %s failed: %s", name, _describe(exc))

    def _reset_channel(self):
        channel, self.channel, self.consumer = self.channel, None, None
        try:
            with self.deadlines.limit(1.0, "channel close"):
                channel.close()
        except self.errors + (Exception,) as exc:
            LOG.debug("channel close failed: %s", _describe(exc))

    def _setup_channel(self):
        """Channel in confirm mode, queue present (declared if missing), consumer started."""
        pk = self.pika
        channel = self.conn.channel()
        try:
            channel.queue_declare(queue=self.cfg.queue, passive=True)
        except pk.exceptions.ChannelClosedByBroker as exc:
            if getattr(exc, "reply_code", None) != 404:
                raise
            channel = self.conn.channel()
            channel.queue_declare(queue=self.cfg.queue, durable=True,
                                  arguments={"x-queue-type": "quorum"})
            LOG.info("declared quorum queue %r in vhost %r", self.cfg.queue, self.cfg.vhost)
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=PREFETCH)
        self.consumer = channel.consume(self.cfg.queue, auto_ack=False,
                                        inactivity_timeout=CONSUME_SLICE)
        self.channel = channel

    # -- one probe ---------------------------------------------------------------------------

    def probe(self):
        if self.conn is None:
            if time.monotonic() < self.next_sweep_at:
                return ProbeResult("connection_failed", "waiting out reconnect backoff (%s)"
                                   % getattr(self, "sweep_errors", ""))
            if not self._sweep():
                return ProbeResult("connection_failed", getattr(self, "sweep_errors", "stopping"))
        node = self.current_node
        cfg, pk = self.cfg, self.pika
        if self.channel is None:
            try:
                with self.deadlines.limit(cfg.connect_timeout, "channel setup"):
                    self._setup_channel()
            except self.errors as exc:
                self._drop("channel setup failed: %s" % _describe(exc))
                return ProbeResult("publish_failed", "channel/queue setup: %s" % _describe(exc), node)

        message_id = uuid.uuid4().hex
        body = json.dumps({"id": message_id, "sent_at": time.time(), "canary": "warren"},
                          sort_keys=True).encode("utf-8")
        props = pk.BasicProperties(delivery_mode=2, message_id=message_id,
                                   timestamp=int(time.time()), content_type="application/json")
        started = time.monotonic()
        try:
            with self.deadlines.limit(cfg.confirm_timeout, "confirm"):
                self.channel.basic_publish(exchange="", routing_key=cfg.queue, body=body,
                                           properties=props, mandatory=True)
        except DeadlineExceeded:
            self._drop("no publisher confirm within %gs" % cfg.confirm_timeout)
            return ProbeResult("confirm_timeout", "no confirm within %gs" % cfg.confirm_timeout,
                               node, message_id=message_id)
        except pk.exceptions.UnroutableError:
            self._reset_channel()  # the queue is gone: declare it again next time
            return ProbeResult("publish_failed", "message returned as unroutable", node,
                               message_id=message_id)
        except pk.exceptions.NackError:
            return ProbeResult("publish_failed", "broker nacked the message", node,
                               message_id=message_id)
        except self.errors as exc:
            self._drop("publish failed: %s" % _describe(exc))
            return ProbeResult("publish_failed", _describe(exc), node, message_id=message_id)
        confirm_seconds = time.monotonic() - started
        self.metrics.confirm.observe(confirm_seconds)

        result = self._await_delivery(message_id, body, started, confirm_seconds, node)
        result.message_id = message_id
        return result

    def _await_delivery(self, message_id, body, started, confirm_seconds, node):
        cfg = self.cfg
        stale = 0
        end = time.monotonic() + cfg.consume_timeout
        try:
            with self.deadlines.limit(cfg.consume_timeout + 2.0, "consume"):
                while True:
                    if time.monotonic() >= end:
                        return ProbeResult("consume_timeout", "not delivered within %gs"
                                           % cfg.consume_timeout, node, confirm_seconds,
                                           stale=stale)
                    method, props, received = next(self.consumer)
                    if method is None:
                        continue
                    arrived = time.monotonic()
                    self.channel.basic_ack(delivery_tag=method.delivery_tag)
                    if getattr(props, "message_id", None) != message_id:
                        stale += 1
                        self.metrics.stale.inc()
                        continue
                    if received != body:
                        return ProbeResult("payload_mismatch", "body differs from what was sent",
                                           node, confirm_seconds, stale=stale)
                    e2e = arrived - started
                    self.metrics.end_to_end.observe(e2e)
                    return ProbeResult("ok", "", node, confirm_seconds, e2e, stale=stale)
        except (self.errors + (StopIteration,)) as exc:
            self._drop("consume failed: %s" % _describe(exc))
            return ProbeResult("consume_timeout", "connection failed while waiting: %s"
                               % _describe(exc), node, confirm_seconds, stale=stale)

    # -- accounting and the loop -------------------------------------------------------------

    def record(self, res):
        """Count a finished probe and log if the kind of result changed."""
        self.metrics.probes.inc(result=res.result)
        if res.result == "ok":
            self.metrics.last_success.set(time.time())
        if res.stale:
            LOG.info("acked and dropped %d stale message(s)", res.stale)
        if res.result == self.last_kind:
            self.failures_in_row += res.result != "ok"
            return
        if res.result == "ok":
            if self.last_kind is not None:
                LOG.info("probes ok again after %d failed probe(s) over %.1fs", self.failures_in_row,
                         time.monotonic() - (self.failing_since or time.monotonic()))
            else:
                LOG.info("first probe ok (confirm %.1f ms, end to end %.1f ms)",
                         res.confirm_seconds * 1e3, res.end_to_end_seconds * 1e3)
            self.failing_since, self.failures_in_row = None, 0
        else:
            LOG.warning("probe failing: %s (%s)", res.result, res.detail)
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            self.failures_in_row += 1
        self.last_kind = res.result

    def stop(self):
        self.stopping = True
        self.deadlines.cut_short()

    def _idle(self, seconds):
        end = time.monotonic() + seconds
        while not self.stopping:
            left = end - time.monotonic()
            if left <= 0:
                return
            step = min(IDLE_SLICE, left)
            if self.conn is None:
                time.sleep(step)
                continue
            try:  # keeps heartbeats flowing and notices a lost connection early
                with self.deadlines.limit(step + 2.0, "idle"):
                    self.conn.process_data_events(time_limit=step)
            except self.errors as exc:
                if self.stopping:
                    return  # cut short by stop(); close() follows
                self._drop("connection lost: %s" % _describe(exc))

    def run(self):
        next_tick = time.monotonic()
        while not self.stopping:
            try:
                res = self.probe()
            except DeadlineExceeded:  # cut short by stop() between two guarded calls
                res = ProbeResult("aborted")
                res.aborted = True
            if self.stopping:
                break  # a probe interrupted by shutdown is not a broker failure
            self.record(res)
            next_tick += self.cfg.interval
            now = time.monotonic()
            if next_tick < now:
                next_tick = now  # skip missed ticks, never catch up in a burst
            self._idle(next_tick - now)
        self.close()

    def close(self):
        if self.conn is not None:
            conn, self.conn, self.channel, self.consumer = self.conn, None, None, None
            try:
                with self.deadlines.limit(1.0, "close"):
                    conn.close()
            except self.errors + (Exception,):
                pass
        LOG.info("stopped")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _setup_logging(verbose):
    fmt = "%(levelname)s %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):  # journald timestamps lines itself
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format=fmt)
    # pika logs every failed connect and close at ERROR: that is one line per probe during an
    # outage. The canary logs state changes itself.
    logging.getLogger("pika").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="warren_canary", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON or INI ([canary]) settings file")
    parser.add_argument("--once", action="store_true",
                        help="run one probe, print a JSON result, exit 0 if ok else 1")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config file and exit")
    parser.add_argument("--verbose", action="store_true", help="debug logging, pika's included")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print("warren_canary: config error: %s" % exc, file=sys.stderr)
        return 2
    if args.check_config:
        print(json.dumps(cfg.public(), sort_keys=True))
        return 0
    if pika is None:
        print("warren_canary: python3-pika is not installed", file=sys.stderr)
        return 2

    canary = Canary(cfg)
    if args.once:
        res = canary.probe()
        canary.record(res)
        out = res.as_dict()
        out.update(rabbitmq_cluster=cfg.rabbitmq_cluster, version=__version__)
        print(json.dumps(out, sort_keys=True))
        canary.close()
        return 0 if res.result == "ok" else 1

    def on_signal(signum, frame):
        LOG.info("signal %d: stopping", signum)
        canary.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = start_http_server(canary.metrics.registry, cfg.listen_address, cfg.listen_port)
    except OSError as exc:
        print("warren_canary: cannot listen on %s:%d: %s"
              % (cfg.listen_address, cfg.listen_port, exc), file=sys.stderr)
        return 2
    LOG.info("warren-canary %s: probing %s every %gs, metrics on %s:%d", __version__,
             ", ".join(cfg.node_names), cfg.interval, cfg.listen_address, cfg.listen_port)
    try:
        canary.run()
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
