"""Client settings shared by every warren AMQP client: nodes, credentials, TLS, timeouts.

``ClientConfig.parameters(node)`` is the one place that turns them into
``pika.ConnectionParameters``; the blocking clients (``warren_amqp.blocking``) and the
asynchronous traffic engine both use it, so TLS and timeouts behave the same everywhere.

Example::

    cfg = ClientConfig.from_dict({
        "nodes": ["rmq1:5671", "rmq2:5671", "rmq3:5671"], "tls": True,
        "ca_file": "/etc/warren/ca.pem", "vhost": "warren", "user": "app",
        "password_file": "/etc/warren/app.password"})
    params = cfg.parameters(cfg.nodes[0])
"""

import dataclasses
import os
import ssl
from typing import NamedTuple, Optional

import pika

AMQP_PORT = 5672
AMQPS_PORT = 5671


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names it and says what is expected."""


class Node(NamedTuple):
    """One broker endpoint. ``str(node)`` is ``host:port`` (``[v6]:port`` for IPv6)."""

    host: str
    port: int

    def __str__(self):
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (self.host, self.port)


def parse_node(item, tls=False):
    """One node from ``"host:port"``, ``"host"`` (default port), ``"[v6]:port"``, a
    ``(host, port)`` pair or a ``{"host": ..., "port": ...}`` mapping."""
    default = AMQPS_PORT if tls else AMQP_PORT
    if isinstance(item, Node):
        return item
    if isinstance(item, dict):
        host, port = item.get("host") or item.get("address"), item.get("port", default)
        if not host:
            raise ConfigError("node %r: missing host" % (item,))
        return Node(str(host), _port(port, item))
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return Node(str(item[0]), _port(item[1], item))
    raw = str(item).strip()
    if not raw:
        raise ConfigError("empty entry in 'nodes'")
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not host:
            raise ConfigError("node %r: unterminated IPv6 bracket" % raw)
        if rest and not rest.startswith(":"):
            raise ConfigError("node %r: expected [addr]:port" % raw)
        port_text = rest[1:] if rest else None
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    elif ":" in raw:
        raise ConfigError("node %r: write IPv6 addresses as [addr]:port" % raw)
    else:
        host, port_text = raw, None
    if not host:
        raise ConfigError("node %r: missing host" % raw)
    return Node(host, default if port_text is None else _port(port_text, raw))


def _port(value, where):
    text = str(value)
    if isinstance(value, bool) or not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError("node %r: port must be 1-65535" % (where,))
    return int(text)


def parse_nodes(items, tls=False):
    """A non-empty list of distinct nodes, in the given order (the failover order)."""
    if isinstance(items, str):
        items = items.replace(",", " ").split()
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError("'nodes' must be a non-empty list of host:port, got %r" % (items,))
    nodes = [parse_node(item, tls) for item in items]
    if len(set(nodes)) != len(nodes):
        raise ConfigError("'nodes' lists a node twice: %s" % ", ".join(map(str, nodes)))
    return nodes


@dataclasses.dataclass
class ClientConfig:
    """Validated client settings. ``nodes`` may be given as strings; they are parsed.

    TLS: the broker's certificate is always verified (``ssl.CERT_REQUIRED``) against
    ``ca_file`` (the system CAs when None); ``verify_hostname`` checks its name against
    ``server_name`` (default: the node's host). ``cert_file``/``key_file`` add a client
    certificate (both or neither).
    """

    nodes: list
    vhost: str
    user: str
    password: str = dataclasses.field(repr=False)
    tls: bool = False
    ca_file: Optional[str] = None
    verify_hostname: bool = True
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    heartbeat: int = 10
    connect_timeout: float = 5
    backoff_initial: float = 0.5
    backoff_max: float = 5
    connection_name: str = "warren"
    server_name: Optional[str] = None

    def __post_init__(self):
        self.tls = _bool("tls", self.tls)
        self.verify_hostname = _bool("verify_hostname", self.verify_hostname)
        self.nodes = parse_nodes(self.nodes, self.tls)
        for key in ("vhost", "user", "password"):
            if not isinstance(getattr(self, key), str) or (key != "vhost" and not getattr(self, key)):
                raise ConfigError("%r must be a non-empty string" % key)
        if not self.vhost:
            raise ConfigError("'vhost' must be a non-empty string ('/' for the default vhost)")
        for key in ("connect_timeout", "backoff_initial", "backoff_max"):
            setattr(self, key, _positive(key, getattr(self, key)))
        if self.backoff_max < self.backoff_initial:
            raise ConfigError("'backoff_max' must not be below 'backoff_initial'")
        if isinstance(self.heartbeat, str) and self.heartbeat.strip().isdigit():
            self.heartbeat = int(self.heartbeat)
        if isinstance(self.heartbeat, bool) or not isinstance(self.heartbeat, int) or self.heartbeat < 0:
            raise ConfigError("'heartbeat' must be 0 (off) or a whole number of seconds, got %r"
                              % (self.heartbeat,))
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("set both 'cert_file' and 'key_file', or neither")
        if not self.tls:
            for key in ("ca_file", "cert_file", "server_name"):
                if getattr(self, key):
                    raise ConfigError("%r is set but 'tls' is false" % key)
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path is not None and not os.path.isfile(path):
                raise ConfigError("%r: no such file %s" % (key, path))
        self._ssl_context = None

    @classmethod
    def from_dict(cls, data):
        """Build from a mapping of the field names; ``password_file`` may replace
        ``password`` (its trailing newline is stripped). Unknown keys are errors."""
        data = dict(data)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"password_file"})
        if unknown:
            raise ConfigError("unknown key(s) %s; valid keys: %s"
                              % (", ".join(unknown), ", ".join(sorted(fields | {"password_file"}))))
        password_file = data.pop("password_file", None)
        if (data.get("password") is None) == (password_file is None):
            raise ConfigError("set exactly one of 'password' and 'password_file'")
        if password_file is not None:
            data["password"] = read_secret(password_file, "password_file")
        missing = [k for k in ("nodes", "vhost", "user") if data.get(k) in (None, "", [])]
        if missing:
            raise ConfigError("missing required key(s): %s" % ", ".join(missing))
        return cls(**data)

    def ssl_context(self):
        """The TLS context (built once): CA verification always on, hostname check per
        ``verify_hostname``, TLS 1.2 at least, client certificate if configured."""
        if self._ssl_context is None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.verify_mode = ssl.CERT_REQUIRED
            context.check_hostname = self.verify_hostname
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
            self._ssl_context = context
        return self._ssl_context

    def parameters(self, node, connection_name=None):
        """``pika.ConnectionParameters`` for one node: one attempt only (failover between
        nodes is the caller's job), handshake bounded by ``connect_timeout``."""
        node = parse_node(node, self.tls)
        ssl_options = None
        if self.tls:
            ssl_options = pika.SSLOptions(self.ssl_context(), server_hostname=self.server_name or node.host)
        return pika.ConnectionParameters(
            host=node.host,
            port=node.port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.user, self.password, erase_on_connect=False),
            heartbeat=self.heartbeat,
            ssl_options=ssl_options,
            socket_timeout=self.connect_timeout,
            stack_timeout=self.connect_timeout,
            connection_attempts=1,
            retry_delay=0,
            client_properties={"connection_name": connection_name or self.connection_name,
                               "product": "warren_amqp"},
        )


def read_secret(path, key="password_file"):
    """A secret from a file, trailing newline stripped; ConfigError if unreadable or empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError("cannot read %s %s: %s" % (key, path, exc.strerror or exc)) from None
    if not value:
        raise ConfigError("%s %s is empty" % (key, path))
    return value


def _bool(key, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off", ""):
        return False
    raise ConfigError("%r must be true or false, got %r" % (key, value))


def _positive(key, value):
    if isinstance(value, bool):
        raise ConfigError("%r must be a positive number of seconds, got %r" % (key, value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError("%r must be a positive number of seconds, got %r" % (key, value)) from None
    if not 0 < number < float("inf"):
        raise ConfigError("%r must be a positive number of seconds, got %r" % (key, value))
    return number
