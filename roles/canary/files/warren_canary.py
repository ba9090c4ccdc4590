#!/usr/bin/python3
"""warren-canary: a synthetic AMQP client that measures a RabbitMQ cluster the way a user sees it.

Every ``interval`` seconds it runs one round of probes. A *probe* publishes one persistent,
mandatory message with a unique ``message_id`` on a channel in confirm mode, times publish ->
confirm, waits for the message on a manual-ack consumer, and times publish -> delivery. Each
probe ends in exactly one result: ok, connection_failed, publish_failed, confirm_timeout,
consume_timeout or payload_mismatch (docs/canary.md says what each means).

- The *cluster probe* is the SLI: one connection that fails over across all nodes, the quorum
  queue ``queue``. It feeds ``warren_canary_probes_total`` and the latency histograms, as it
  always has.
- The *node probes* (``node_probes``, on by default) go through EVERY broker: one connection
  per node (no failover), each publishing to and consuming from its own quorum queue
  ``<queue>.node.<host>``, declared through another node's connection with
  ``x-queue-leader-locator: client-local`` so that it is led by a different node where the
  cluster has one. A node that accepts connections but cannot reach the queue's leader (a
  partition shorter than net_ticktime) then fails its probe within one round. They feed
  ``warren_canary_node_probes_total{node,result}`` and ``warren_canary_node_up{node}``.

Connections, failover, backoff, confirm deadlines and consumers come from the ``warren_amqp``
package (roles/amqp_client); the metrics are ``prometheus_client``'s. Both come from Debian
(python3-pika, python3-prometheus-client); the role sets PYTHONPATH to the package's folder.

``--once`` runs one round without the HTTP server, prints the results as JSON and exits 0 when
every probe was ok, 1 otherwise (2 for a configuration error). ``--check-config`` validates the
configuration file. SIGTERM or SIGINT stop the process within about a second; a probe cut short
by shutdown is not counted. Deadlines use SIGALRM: the probe loop runs in the main thread.
"""

import argparse
import configparser
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import ssl
import sys
import time
import uuid

import pika
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from warren_amqp import __version__ as amqp_version
from warren_amqp.blocking import (ConfirmPublisher, Consumer, DeadlineExceeded, FailoverConnection,
                                  NoNodeAvailable, describe, shared_deadlines)
from warren_amqp.config import ClientConfig
from warren_amqp.config import ConfigError as ClientConfigError
from warren_amqp.config import read_secret

__version__ = "2.0.0"

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
PREFETCH = 10
IDLE_SLICE = 0.25  # seconds; how often the idle wait looks at the stop flag
CONSUME_SLICE = 0.1  # seconds; the consumer's inactivity timeout


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


class CanaryRegistry(CollectorRegistry):
    """prometheus_client's registry, plus ``render()`` (text format 0.0.4) for tests and tools."""

    def render(self):
        return prometheus_client.generate_latest(self).decode("utf-8")


class CanaryMetrics:
    """The canary's metric families, with every label value known up front present at 0.

    The names, labels, help texts and buckets are an interface: the SLO rules, the alerts and
    the warren-canary-slo dashboard read them (docs/canary.md lists them).
    """

    def __init__(self, nodes):
        # A <name>_created series per counter would be new series nobody asked for.
        prometheus_client.disable_created_metrics()
        r = self.registry = CanaryRegistry()
        self.nodes = list(nodes)
        self.probes = Counter(
            "warren_canary_probes_total", "Canary probes by result.", ["result"], registry=r)
        self.confirm = Histogram(
            "warren_canary_publish_confirm_seconds",
            "Time from publish to the broker's publisher confirm, confirmed probes only.",
            buckets=BUCKETS, registry=r)
        self.end_to_end = Histogram(
            "warren_canary_end_to_end_seconds",
            "Time from publish to delivery back to the canary, ok probes only.",
            buckets=BUCKETS, registry=r)
        self.last_success = Gauge(
            "warren_canary_last_success_timestamp_seconds",
            "Unix time of the last ok probe, 0 before the first.", registry=r)
        self.stale = Counter(
            "warren_canary_stale_messages_total",
            "Deliveries that were not the message in flight (leftovers), acked and dropped.",
            registry=r)
        self.connected = Gauge(
            "warren_canary_connected", "1 on the broker node the canary is connected to.", ["node"],
            registry=r)
        self.reconnects = Counter(
            "warren_canary_reconnects_total", "Connections opened after the first one.", registry=r)
        self.build_info = Gauge(
            "warren_canary_build_info", "Canary version, always 1.", ["version", "pika", "python"],
            registry=r)
        self.node_probes = Counter(
            "warren_canary_node_probes_total",
            "Probes through one broker node (its own connection, a queue led elsewhere) by result.",
            ["node", "result"], registry=r)
        self.node_up = Gauge(
            "warren_canary_node_up", "1 when the last probe through this broker node was ok.",
            ["node"], registry=r)
        self.cert_expiry = Gauge(
            "warren_canary_node_tls_cert_expiry_timestamp_seconds",
            "notAfter (Unix time) of the certificate the node presents on its AMQPS listener, "
            "from the last successful TLS handshake (TLS only).", ["node"], registry=r)
        self.cert_check_failures = Counter(
            "warren_canary_node_tls_check_failures_total",
            "Certificate checks that failed (no TLS handshake, or a certificate that does not "
            "verify), TLS only.", ["node"], registry=r)
        for result in RESULTS:
            self.probes.labels(result=result)
            for node in self.nodes:
                self.node_probes.labels(node=node, result=result)
        self.last_success.set(0)
        for node in self.nodes:
            self.connected.labels(node=node).set(0)
            self.node_up.labels(node=node).set(0)
            self.cert_check_failures.labels(node=node)
        self.build_info.labels(version=__version__, pika=pika.__version__,
                               python="%d.%d.%d" % sys.version_info[:3]).set(1)

    def value(self, name, **labels):
        """A sample's current value (0 when absent), for tests and ``--once``."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def set_connected(self, current):
        for node in self.nodes:
            self.connected.labels(node=node).set(1 if node == current else 0)


def start_http_server(registry, address, port):
    """Serve ``/metrics`` from a daemon thread; returns the server (``.shutdown()`` stops it)."""
    server, _thread = prometheus_client.start_http_server(port, addr=address, registry=registry)
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
    "node_probes": True,
    "cert_check_interval": 600.0,
    "password": None,
    "password_file": None,
}
_REQUIRED = ("nodes", "vhost", "user")
_FLOATS = ("interval", "confirm_timeout", "consume_timeout")
_STRINGS = ("queue", "vhost", "user", "password", "password_file", "listen_address",
            "rabbitmq_cluster")
KNOWN_KEYS = frozenset(_DEFAULTS) | frozenset(_REQUIRED)
# canary key -> warren_amqp ClientConfig field; ClientConfig checks these, errors are renamed back
_CLIENT_KEYS = {
    "vhost": "vhost", "user": "user", "password": "password", "tls": "tls",
    "tls_ca_file": "ca_file", "tls_verify_hostname": "verify_hostname",
    "tls_server_name": "server_name", "tls_cert_file": "cert_file", "tls_key_file": "key_file",
    "heartbeat": "heartbeat", "connect_timeout": "connect_timeout",
    "reconnect_backoff_initial": "backoff_initial", "reconnect_backoff_max": "backoff_max",
}


@dataclasses.dataclass
class Config:
    """Validated settings: the canary's own, and ``client`` (a warren_amqp ClientConfig) with
    ``nodes`` as parsed Node(host, port) and ``node_names`` as ``host:port`` strings."""

    client: ClientConfig
    nodes: list
    node_names: list
    queue: str
    interval: float
    confirm_timeout: float
    consume_timeout: float
    listen_address: str
    listen_port: int
    rabbitmq_cluster: str
    node_probes: bool
    settings: dict

    def __getattr__(self, name):  # the remaining raw settings (vhost, tls, heartbeat...)
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(name)

    def public(self):
        """The settings without secrets, for ``--check-config`` and logs."""
        out = {k: v for k, v in self.settings.items() if k not in ("password", "nodes")}
        out["node_names"] = list(self.node_names)
        return dict(sorted(out.items()))


def _parse_number(key, value, kind):
    if isinstance(value, bool):
        raise ConfigError("%r must be a number, got %r" % (key, value))
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError("%r must be a%s number, got %r"
                          % (key, "n integer" if kind is int else "", value)) from None


def _parse_bool(key, value):
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in ("1", "yes", "true", "on", "0", "no", "false", "off"):
        return value if isinstance(value, bool) else text in ("1", "yes", "true", "on")
    raise ConfigError("%r must be true or false, got %r" % (key, value))


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
    for key in _FLOATS:
        values[key] = _parse_number(key, values[key], float)
        if not values[key] > 0 or math.isinf(values[key]):
            raise ConfigError("%r must be a positive number of seconds, got %r" % (key, raw.get(key)))
    values["cert_check_interval"] = _parse_number("cert_check_interval", values["cert_check_interval"], float)
    if values["cert_check_interval"] < 0 or math.isinf(values["cert_check_interval"]):
        raise ConfigError("'cert_check_interval' must be 0 (off) or a number of seconds, got %r"
                          % raw.get("cert_check_interval"))
    values["listen_port"] = _parse_number("listen_port", values["listen_port"], int)
    values["node_probes"] = _parse_bool("node_probes", values["node_probes"])
    for key in _STRINGS:
        if values[key] is not None and not isinstance(values[key], str):
            raise ConfigError("%r must be a string, got %r" % (key, values[key]))
    if not 0 < values["listen_port"] < 65536:
        raise ConfigError("'listen_port' must be 1-65535, got %r" % values["listen_port"])
    if values["interval"] < 0.5:
        raise ConfigError("'interval' must be at least 0.5 seconds")
    if not values["queue"]:
        raise ConfigError("'queue' must not be empty")
    nodes = values["nodes"]
    if isinstance(nodes, str) or not isinstance(nodes, list) or not nodes:
        raise ConfigError("'nodes' must be a non-empty list of host:port, got %r" % (nodes,))
    if (values["password"] is None) == (values["password_file"] is None):
        raise ConfigError("set exactly one of 'password' and 'password_file'")
    try:
        if values["password_file"] is not None:
            values["password"] = read_secret(values["password_file"], "password_file")
        client = ClientConfig(nodes=nodes, connection_name=_connection_name(values["rabbitmq_cluster"]),
                              **{field: values[key] for key, field in _CLIENT_KEYS.items()})
    except ClientConfigError as exc:
        message = str(exc)
        for key, field in _CLIENT_KEYS.items():
            message = message.replace("'%s'" % field, "'%s'" % key)
        raise ConfigError(message) from None
    values["tls"] = client.tls
    values["tls_verify_hostname"] = client.verify_hostname
    return Config(client=client, nodes=list(client.nodes), node_names=[str(n) for n in client.nodes],
                  queue=values["queue"], interval=values["interval"],
                  confirm_timeout=values["confirm_timeout"], consume_timeout=values["consume_timeout"],
                  listen_address=values["listen_address"], listen_port=values["listen_port"],
                  rabbitmq_cluster=values["rabbitmq_cluster"], node_probes=values["node_probes"],
                  settings=values)


def _connection_name(cluster):
    name = "warren-canary@%s" % socket.gethostname()
    return name + " (%s)" % cluster if cluster else name


def load_config(path):
    return validate(_read_raw(path), source=path)


# --------------------------------------------------------------------------------------------
# Probes
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


class Prober:
    """One probe path: a FailoverConnection, a queue, a confirm publisher and a consumer.

    ``declare(prober)`` makes sure the queue exists (the cluster probe declares its own; a node
    probe's queue is declared through another node's connection).
    """

    def __init__(self, cfg, conn, queue, declare):
        self.cfg, self.conn, self.queue, self._declare = cfg, conn, queue, declare
        self.publisher = ConfirmPublisher(conn, deadline=cfg.confirm_timeout, max_attempts=1,
                                          max_seconds=cfg.confirm_timeout)
        self.consumer = None
        self.last_kind = None
        self.failing_since = None
        self.failures_in_row = 0

    @property
    def node(self):
        return str(self.conn.node) if self.conn.node is not None else None

    def probe(self):
        conn = self.conn
        if not conn.is_open:
            self.consumer = None
            try:
                conn.connect(timeout=0)
            except NoNodeAvailable as exc:
                return ProbeResult("connection_failed", str(exc))
        node = self.node
        if self.consumer is None:
            try:
                self._declare(self)
                self.consumer = Consumer(conn, self.queue, prefetch=PREFETCH, inactivity=CONSUME_SLICE)
            except conn.errors as exc:
                conn.fail_over("queue setup failed: %s" % describe(exc))
                return ProbeResult("publish_failed", "channel/queue setup: %s" % describe(exc), node)

        message_id = uuid.uuid4().hex
        body = json.dumps({"id": message_id, "sent_at": time.time(), "canary": "warren"},
                          sort_keys=True).encode("utf-8")
        props = pika.BasicProperties(delivery_mode=2, message_id=message_id,
                                     timestamp=int(time.time()), content_type="application/json")
        started = time.monotonic()
        sent = self.publisher.publish("", self.queue, body, props)
        if not sent.ok:
            if sent.outcome == "unroutable":
                self.consumer = None  # the queue is gone: declare it again next time
            result = {"timeout": "confirm_timeout", "unavailable": "connection_failed"}.get(
                sent.outcome, "publish_failed")
            return ProbeResult(result, sent.detail, node, message_id=message_id)
        result = self._await_delivery(message_id, body, started, sent.confirm_seconds, node)
        result.message_id = message_id
        return result

    def _await_delivery(self, message_id, body, started, confirm_seconds, node):
        stale = 0
        end = time.monotonic() + self.cfg.consume_timeout
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return ProbeResult("consume_timeout", "not delivered within %gs"
                                       % self.cfg.consume_timeout, node, confirm_seconds, stale=stale)
                delivery = self.consumer.get(left)
                if delivery is None:
                    continue
                arrived = time.monotonic()
                self.consumer.ack(delivery)
                if delivery.message_id != message_id:
                    stale += 1  # a probe that timed out and arrived later, or a crash's leftover
                    continue
                if delivery.body != body:
                    return ProbeResult("payload_mismatch", "body differs from what was sent",
                                       node, confirm_seconds, stale=stale)
                return ProbeResult("ok", "", node, confirm_seconds, arrived - started, stale=stale)
        except self.conn.errors as exc:
            self.consumer = None
            return ProbeResult("consume_timeout", "connection failed while waiting: %s"
                               % describe(exc), node, confirm_seconds, stale=stale)

    def note(self, res, label):
        """Log when the kind of result changes (one line per state change, not per probe)."""
        if res.result == self.last_kind:
            self.failures_in_row += res.result != "ok"
            return
        if res.result == "ok":
            if self.last_kind is not None:
                LOG.info("%s: probes ok again after %d failed probe(s) over %.1fs", label,
                         self.failures_in_row, time.monotonic() - (self.failing_since or time.monotonic()))
            else:
                LOG.info("%s: first probe ok through %s (confirm %.1f ms, end to end %.1f ms)", label,
                         res.node, res.confirm_seconds * 1e3, res.end_to_end_seconds * 1e3)
            self.failing_since, self.failures_in_row = None, 0
        else:
            LOG.warning("%s: probe failing: %s (%s)", label, res.result, res.detail)
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            self.failures_in_row += 1
        self.last_kind = res.result


def _queue_exists(conn, queue):
    """Passive declare on a throw-away channel (a 404 closes the channel it happens on)."""
    with conn.deadlines.limit(conn.config.connect_timeout, "check queue %s" % queue):
        channel = conn.connection.channel()
        try:
            channel.queue_declare(queue=queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if getattr(exc, "reply_code", None) != 404:
                raise
            return False
        channel.close()
    return True


def _declare_quorum(conn, queue, leader_here=False):
    arguments = {"x-queue-type": "quorum"}
    if leader_here:  # the leader goes on the node this connection is on
        arguments["x-queue-leader-locator"] = "client-local"
    with conn.deadlines.limit(conn.config.connect_timeout, "declare queue %s" % queue):
        channel = conn.connection.channel()
        channel.queue_declare(queue=queue, durable=True, arguments=arguments)
        channel.close()
    LOG.info("declared quorum queue %r in vhost %r through %s", queue, conn.config.vhost, conn.node)


def peer_cert_not_after(client, node, timeout):
    """notAfter (Unix time) of the certificate ``node`` presents, through a TLS handshake
    verified exactly as the AMQP connections are (``client.ssl_context()``, same server name).
    Raises OSError (ssl.SSLError included) when there is no handshake or no valid certificate."""
    server_name = client.server_name or node.host
    with socket.create_connection((node.host, node.port), timeout=timeout) as raw:
        with client.ssl_context().wrap_socket(raw, server_hostname=server_name) as tls:
            cert = tls.getpeercert()
    return ssl.cert_time_to_seconds(cert["notAfter"])


def node_queue_name(queue, node, nodes):
    """``<queue>.node.<host>``; with the port too when two nodes share a host."""
    same_host = sum(1 for n in nodes if n.host == node.host) > 1
    return "%s.node.%s" % (queue, "%s-%d" % (node.host, node.port) if same_host else node.host)


class Canary:
    """One round of probes per ``round()`` (``probe()``: the cluster probe alone); ``run()``
    loops until ``stop()``.

    ``connect_fn(params)`` opens a BlockingConnection-like object; tests give a fake one.
    """

    def __init__(self, config, metrics=None, connect_fn=None, rand=None):
        self.cfg = config
        self.metrics = metrics or CanaryMetrics(config.node_names)
        self.deadlines = shared_deadlines()
        kwargs = {"connect_fn": connect_fn}
        if rand is not None:
            kwargs["rand"] = rand
        client = config.client
        self.cluster_conn = FailoverConnection(client, **kwargs)
        self.cluster = Prober(config, self.cluster_conn, config.queue, self._declare_cluster_queue)
        self.node_probers = []
        if config.node_probes:
            for node in config.nodes:
                conn = FailoverConnection(dataclasses.replace(client, nodes=[node]),
                                          connection_name="%s node %s" % (client.connection_name, node),
                                          **kwargs)
                self.node_probers.append(
                    Prober(config, conn, node_queue_name(config.queue, node, config.nodes),
                           self._declare_node_queue))
        self.seen_connections = 0
        self.stopping = False

    # -- queues ------------------------------------------------------------------------------

    def _declare_cluster_queue(self, prober):
        if not _queue_exists(prober.conn, prober.queue):
            _declare_quorum(prober.conn, prober.queue)

    def _declare_node_queue(self, prober):
        """A node probe's queue, led by another node where one is reachable: it is declared
        through the next node's connection with the client-local leader locator."""
        if _queue_exists(prober.conn, prober.queue):
            return
        index = self.node_probers.index(prober)
        count = len(self.node_probers)
        for step in range(1, count):
            other = self.node_probers[(index + step) % count].conn
            try:
                other.connect(timeout=0)
                _declare_quorum(other, prober.queue, leader_here=True)
                return
            except other.errors as exc:
                LOG.debug("declaring %s through another node failed: %s", prober.queue, describe(exc))
                if not isinstance(exc, NoNodeAvailable):
                    other.fail_over("queue declaration failed: %s" % describe(exc))
        _declare_quorum(prober.conn, prober.queue, leader_here=True)  # a single reachable node

    # -- probes ------------------------------------------------------------------------------

    def probe(self):
        """The cluster probe (the SLI)."""
        res = self.cluster.probe()
        opened = self.cluster_conn.connections_opened
        if opened > max(self.seen_connections, 1):
            self.metrics.reconnects.inc(opened - max(self.seen_connections, 1))
        self.seen_connections = opened
        self.metrics.set_connected(self.cluster.node)
        return res

    def record(self, res):
        """Count a finished cluster probe and log if the kind of result changed."""
        m = self.metrics
        m.probes.labels(result=res.result).inc()
        if res.confirm_seconds is not None:
            m.confirm.observe(res.confirm_seconds)
        if res.result == "ok":
            m.end_to_end.observe(res.end_to_end_seconds)
            m.last_success.set(time.time())
        if res.stale:
            m.stale.inc(res.stale)
            LOG.info("acked and dropped %d stale message(s)", res.stale)
        self.cluster.note(res, "cluster")

    def probe_nodes(self):
        """One probe through every node, counted as it finishes; {node: ProbeResult}."""
        results = {}
        for prober, name in zip(self.node_probers, self.cfg.node_names):
            if self.stopping:
                break
            res = prober.probe()
            if self.stopping:
                break  # cut short by shutdown: not a broker failure
            res.node = name
            self.metrics.node_probes.labels(node=name, result=res.result).inc()
            self.metrics.node_up.labels(node=name).set(1 if res.result == "ok" else 0)
            prober.note(res, "node %s" % name)
            results[name] = res
        return results

    def check_certs(self):
        """The expiry of every node's AMQPS certificate ({node: notAfter or None}); TLS only.
        A failed check counts a failure and keeps the node's last known expiry."""
        results = {}
        if not self.cfg.client.tls:
            return results
        for node, name in zip(self.cfg.nodes, self.cfg.node_names):
            if self.stopping:
                break
            try:
                not_after = peer_cert_not_after(self.cfg.client, node, self.cfg.client.connect_timeout)
            except (OSError, ValueError, KeyError) as exc:
                self.metrics.cert_check_failures.labels(node=name).inc()
                LOG.warning("certificate check of %s failed: %s", name, describe(exc))
                not_after = None
            else:
                self.metrics.cert_expiry.labels(node=name).set(not_after)
            results[name] = not_after
        return results

    def stop(self):
        self.stopping = True
        self.deadlines.cut_short()

    def _idle(self, seconds):
        """Wait, servicing every connection (heartbeats, early notice of a lost link)."""
        end = time.monotonic() + seconds
        conns = [self.cluster_conn] + [p.conn for p in self.node_probers]
        while not self.stopping:
            left = end - time.monotonic()
            if left <= 0:
                return
            step = min(IDLE_SLICE, left) / len(conns)
            for conn in conns:
                if self.stopping:
                    return
                conn.process(step)

    def run(self):
        next_tick = time.monotonic()
        next_cert_check = next_tick
        while not self.stopping:
            if self.cfg.cert_check_interval and time.monotonic() >= next_cert_check:
                self.check_certs()
                next_cert_check = time.monotonic() + self.cfg.cert_check_interval
            try:
                res = self.probe()
                if not self.stopping:
                    self.record(res)
                    self.probe_nodes()
            except DeadlineExceeded:  # cut short by stop() between two guarded calls
                pass
            if self.stopping:
                break
            next_tick += self.cfg.interval
            now = time.monotonic()
            if next_tick < now:
                next_tick = now  # skip missed ticks, never catch up in a burst
            self._idle(next_tick - now)
        self.close()

    def close(self):
        for conn in [self.cluster_conn] + [p.conn for p in self.node_probers]:
            conn.close()
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
    # pika logs every failed connect and close at ERROR, warren_amqp every failover at WARNING:
    # during an outage that is lines per probe. The canary logs state changes itself.
    logging.getLogger("pika").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    logging.getLogger("warren_amqp").setLevel(logging.DEBUG if verbose else logging.ERROR)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="warren_canary", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON or INI ([canary]) settings file")
    parser.add_argument("--once", action="store_true",
                        help="run one round of probes, print JSON, exit 0 if all were ok else 1")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config file and exit")
    parser.add_argument("--verbose", action="store_true", help="debug logging, pika's included")
    parser.add_argument("--version", action="version",
                        version="%(prog)s " + __version__ + " (warren_amqp " + amqp_version + ")")
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

    canary = Canary(cfg)
    if args.once:
        res = canary.probe()
        canary.record(res)
        nodes = canary.probe_nodes()
        out = res.as_dict()
        out.update(rabbitmq_cluster=cfg.rabbitmq_cluster, version=__version__,
                   nodes={name: r.as_dict() for name, r in nodes.items()})
        print(json.dumps(out, sort_keys=True))
        canary.close()
        return 0 if res.result == "ok" and all(r.result == "ok" for r in nodes.values()) else 1

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
    LOG.info("warren-canary %s: probing %s every %gs (node probes %s), metrics on %s:%d",
             __version__, ", ".join(cfg.node_names), cfg.interval,
             "on" if cfg.node_probes else "off", cfg.listen_address, cfg.listen_port)
    try:
        canary.run()
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
