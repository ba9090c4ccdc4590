"""Blocking AMQP clients with failover, on pika's BlockingConnection.

- ``FailoverConnection``: one connection at a time to one of the configured nodes. Nodes are
  tried in order starting with the current one; a node that fails is left for the next one
  (``fail_over``). When a whole sweep fails, the next sweep waits a jittered exponential
  backoff (``warren_amqp.failover``). Every call that can hang runs under a deadline.
- ``ConfirmPublisher``: publishes with publisher confirms and ``mandatory``. When no confirm
  arrives within ``deadline`` seconds (a quorum queue without a leader, a partitioned node, a
  resource alarm), or the connection breaks, it fails over to the next node and publishes the
  same message again, at most ``max_attempts`` times and for at most ``max_seconds`` in all.
  The message may therefore arrive twice: give it a ``message_id`` and let consumers drop
  duplicates (``RecentIds``). A nack or a return (unroutable) is final: it is the broker's
  answer, not a node failure.
- ``Consumer``: manual acknowledgements with a prefetch limit; ``get(timeout)`` returns the next
  ``Delivery`` or None. After a failover, deliveries from the old channel cannot be acked any
  more; the broker redelivers them (``redelivered`` set), which is why consumers deduplicate.

Deadlines use SIGALRM (pika's blocking adapter has no timeout for a publisher confirm), so
they work in the main thread only; elsewhere ``Deadlines.enabled`` is False and only pika's own
socket and heartbeat timeouts apply. One ``Deadlines`` object serves the whole process
(``shared_deadlines()``); its limits nest.
"""

import collections
import contextlib
import dataclasses
import logging
import random
import signal
import threading
import time
from typing import Any, Optional

import pika
import pika.exceptions

from .failover import Backoff, NodeRotation

LOG = logging.getLogger("warren_amqp")

# Outcomes of ConfirmPublisher.publish
CONFIRMED = "confirmed"      # the broker confirmed the message
NACKED = "nacked"            # the broker nacked it (e.g. a full queue with reject-publish)
UNROUTABLE = "unroutable"    # returned: no queue is bound for the routing key
TIMEOUT = "timeout"          # no confirm within the deadline, on every attempt made
FAILED = "failed"            # the connection broke during the last attempt
UNAVAILABLE = "unavailable"  # no node accepted a connection within the time left
OUTCOMES = (CONFIRMED, NACKED, UNROUTABLE, TIMEOUT, FAILED, UNAVAILABLE)


class DeadlineExceeded(Exception):
    """A broker call ran past its deadline (raised from the SIGALRM handler)."""


class NoNodeAvailable(pika.exceptions.AMQPConnectionError):
    """No node accepted a connection; ``errors`` lists ``node: error`` per attempt."""

    def __init__(self, message, errors=()):
        super().__init__(message)
        self.errors = list(errors)

    def __str__(self):
        return self.args[0]


class Deadlines:
    """Wall-clock limits for blocking calls, through SIGALRM (main thread only).

    ``with deadlines.limit(2.0, "confirm"):`` raises DeadlineExceeded("confirm") inside the
    block after 2 s. Limits nest: the earliest one fires. ``cut_short()`` (from a signal
    handler, e.g. SIGTERM) ends every running limit now. A connection whose call was cut short
    must be thrown away, never reused.
    """

    def __init__(self):
        self.enabled = (hasattr(signal, "setitimer")
                        and threading.current_thread() is threading.main_thread())
        self._stack = []
        if self.enabled:
            signal.signal(signal.SIGALRM, self._on_alarm)

    def _arm(self):
        if not self._stack:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        end = min(entry[0] for entry in self._stack)
        signal.setitimer(signal.ITIMER_REAL, max(end - time.monotonic(), 0.001))

    def _on_alarm(self, signum, frame):
        now = time.monotonic()
        due = [entry for entry in self._stack if entry[0] <= now + 0.001]
        if due:
            for entry in due:
                entry[0] = float("inf")  # fires once
            raise DeadlineExceeded(due[0][1])
        if self._stack:
            self._arm()

    @contextlib.contextmanager
    def limit(self, seconds, what):
        if not self.enabled:
            yield
            return
        entry = [time.monotonic() + max(float(seconds), 0.001), what]
        self._stack.append(entry)
        self._arm()
        try:
            yield
        finally:
            self._stack = [e for e in self._stack if e is not entry]
            self._arm()

    @property
    def active(self):
        return bool(self._stack)

    def cut_short(self):
        """End every running ``limit`` block now (used on SIGTERM)."""
        if self.enabled and self._stack:
            for entry in self._stack:
                entry[0] = 0.0
            signal.setitimer(signal.ITIMER_REAL, 0.001)


_SHARED = None


def shared_deadlines():
    """The process's Deadlines (SIGALRM has one handler per process, so there is one)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = Deadlines()
    return _SHARED


def describe(exc):
    """A one-line description of a broker or network error (pika's often have empty str())."""
    text = str(exc)
    if not text:
        return repr(exc)
    name = exc.__class__.__name__
    return text if text.startswith(name) else "%s: %s" % (name, text)


# Errors that mean "the broker or the network failed", never a client bug.
ERRORS = (OSError, EOFError, DeadlineExceeded, pika.exceptions.AMQPError)


class FailoverConnection:
    """One live connection to one of ``config.nodes`` at a time.

    ``connect_fn(params)`` opens a connection (default ``pika.BlockingConnection``; tests pass
    fakes). ``clock`` and ``sleep`` are injectable for the same reason.
    """

    errors = ERRORS

    def __init__(self, config, connection_name=None, connect_fn=None, deadlines=None,
                 rand=random.random, clock=time.monotonic, sleep=time.sleep):
        self.config = config
        self.connection_name = connection_name or config.connection_name
        self.rotation = NodeRotation(config.nodes)
        self.backoff = Backoff(config.backoff_initial, config.backoff_max, rand)
        self.deadlines = deadlines or shared_deadlines()
        self._connect_fn = connect_fn or pika.BlockingConnection
        self.clock, self._sleep = clock, sleep
        self.connection = None
        self.node = None
        self._channel = None
        self.connections_opened = 0
        self.retry_at = 0.0
        self.last_errors = []

    @property
    def is_open(self):
        return self.connection is not None and getattr(self.connection, "is_open", True)

    def connect(self, timeout=0.0):
        """Return the node connected to, connecting first when needed.

        Sweeps the nodes from the current one. After a failed sweep it waits the backoff and
        sweeps again while ``timeout`` seconds (from the call) allow; ``timeout=0`` makes one
        sweep at most, and none while the backoff of an earlier failed sweep is still running.
        Raises NoNodeAvailable.
        """
        if self.is_open:
            return self.node
        if self.connection is not None:
            self.fail_over("connection closed")
        end = self.clock() + max(float(timeout), 0.0)
        while True:
            now = self.clock()
            if now < self.retry_at:
                if self.retry_at > end:
                    raise NoNodeAvailable("no node reachable, waiting out the reconnect backoff (%.1fs left; %s)"
                                          % (self.retry_at - now, "; ".join(self.last_errors)),
                                          self.last_errors)
                self._sleep(self.retry_at - now)
            errors = []
            for node in self.rotation.sweep():
                try:
                    with self.deadlines.limit(self.config.connect_timeout + 1.0,
                                              "connect to %s" % (node,)):
                        connection = self._connect_fn(
                            self.config.parameters(node, self.connection_name))
                except self.errors as exc:
                    LOG.debug("connect to %s failed: %s", node, describe(exc))
                    errors.append("%s: %s" % (node, describe(exc)))
                    continue
                self.connection, self.node, self._channel = connection, node, None
                self.rotation.select(node)
                self.backoff.reset()
                self.retry_at, self.last_errors = 0.0, []
                self.connections_opened += 1
                LOG.info("connected to %s%s", node,
                         " after %s" % "; ".join(errors) if errors else "")
                return node
            self.last_errors = errors
            self.retry_at = self.clock() + self.backoff.failure()
            if self.retry_at > end:
                raise NoNodeAvailable("no node reachable: %s" % "; ".join(errors), errors)

    @property
    def channel(self):
        """The connection's default channel, opened on first use (connects if needed)."""
        if self._channel is None or not getattr(self._channel, "is_open", True):
            self.connect()
            with self.deadlines.limit(self.config.connect_timeout, "open a channel"):
                self._channel = self.connection.channel()
        return self._channel

    def reset_channel(self):
        """Close the default channel (keeping the connection); the next use opens a new one."""
        channel, self._channel = self._channel, None
        if channel is not None:
            self._quietly(channel.close, "channel close")

    def fail_over(self, reason):
        """Drop the connection and make the next node the first one to try."""
        connection, node = self.connection, self.node
        self.connection = self.node = self._channel = None
        if node is not None:
            self.rotation.select(node)
            self.rotation.advance()
            LOG.warning("leaving %s: %s", node, reason)
        if connection is not None:
            self._quietly(connection.close, "close")

    def process(self, seconds):
        """Service the connection for ``seconds`` (heartbeats, early notice of a lost link).
        Returns False (after failing over) when the connection turned out to be broken."""
        if not self.is_open:
            self._sleep(max(seconds, 0))
            return False
        try:
            with self.deadlines.limit(seconds + 2.0, "process events"):
                self.connection.process_data_events(time_limit=seconds)
        except self.errors as exc:
            self.fail_over("connection lost: %s" % describe(exc))
            return False
        return True

    def close(self):
        connection, self.connection, self.node, self._channel = self.connection, None, None, None
        if connection is not None:
            self._quietly(connection.close, "close")

    def _quietly(self, call, what):
        try:
            with self.deadlines.limit(1.0, what):
                call()
        except Exception as exc:  # closing something broken can fail in any way; nothing to do
            LOG.debug("%s failed: %s", what, describe(exc))


@dataclasses.dataclass
class PublishResult:
    """What became of one message. ``node`` is the node of the last attempt, ``attempts`` how
    many times it was sent, ``seconds`` the time from the call to the outcome,
    ``confirm_seconds`` publish to confirm on the last attempt (confirmed only)."""

    outcome: str
    node: Any
    attempts: int
    seconds: float
    detail: str = ""
    confirm_seconds: Optional[float] = None

    @property
    def ok(self):
        return self.outcome == CONFIRMED


class ConfirmPublisher:
    """Publish with confirms on ``conn.channel``; fail over and republish on a deadline.

    ``deadline``: seconds to wait for each confirm. ``max_attempts``: sends at most.
    ``max_seconds``: the whole call, connecting included (default: max_attempts times
    deadline plus connect_timeout).
    """

    def __init__(self, conn, deadline=1.0, max_attempts=3, max_seconds=None, mandatory=True):
        if deadline <= 0 or max_attempts < 1:
            raise ValueError("deadline must be > 0 and max_attempts >= 1")
        self.conn = conn
        self.deadline = float(deadline)
        self.max_attempts = int(max_attempts)
        self.max_seconds = float(max_seconds if max_seconds is not None
                                 else self.max_attempts * (self.deadline + conn.config.connect_timeout))
        self.mandatory = mandatory
        self._confirming = None  # the channel put in confirm mode

    def _confirm_channel(self):
        channel = self.conn.channel
        if channel is not self._confirming:
            channel.confirm_delivery()
            self._confirming = channel
        return channel

    def publish(self, exchange, routing_key, body, properties=None):
        conn, clock = self.conn, self.conn.clock
        started = clock()
        end = started + self.max_seconds
        attempts, node, outcome, detail = 0, None, UNAVAILABLE, "no attempt made"
        while attempts < self.max_attempts:
            left = end - clock()
            if left <= 0:
                detail += "; out of time after %d attempt(s)" % attempts
                break
            try:
                node = conn.connect(timeout=left)
            except NoNodeAvailable as exc:
                outcome, detail = (UNAVAILABLE if attempts == 0 else outcome), describe(exc)
                break
            attempts += 1
            sent = clock()
            try:
                with conn.deadlines.limit(min(self.deadline, max(end - sent, 0.001)), "confirm"):
                    channel = self._confirm_channel()
                    channel.basic_publish(exchange=exchange, routing_key=routing_key, body=body,
                                          properties=properties, mandatory=self.mandatory)
            except DeadlineExceeded:
                outcome, detail = TIMEOUT, "no confirm from %s within %gs" % (node, self.deadline)
                conn.fail_over(detail)
                continue
            except pika.exceptions.UnroutableError:
                conn.reset_channel()  # the channel's state is fine, but start clean
                return PublishResult(UNROUTABLE, node, attempts, clock() - started,
                                     "returned: no queue for routing key %r" % routing_key)
            except pika.exceptions.NackError:
                return PublishResult(NACKED, node, attempts, clock() - started, "nacked by the broker")
            except pika.exceptions.ChannelClosedByBroker as exc:
                # e.g. 404 for a missing exchange: the same on every node, so no failover
                conn.reset_channel()
                return PublishResult(FAILED, node, attempts, clock() - started,
                                     "channel closed by the broker: %s" % describe(exc))
            except conn.errors as exc:
                outcome, detail = FAILED, "publish through %s failed: %s" % (node, describe(exc))
                conn.fail_over(detail)
                continue
            now = clock()
            return PublishResult(CONFIRMED, node, attempts, now - started, "", now - sent)
        return PublishResult(outcome, node, attempts, clock() - started, detail)


@dataclasses.dataclass
class Delivery:
    """One delivered message; ack it through the Consumer that returned it."""

    channel: Any
    method: Any
    properties: Any
    body: bytes
    node: Any

    @property
    def message_id(self):
        return getattr(self.properties, "message_id", None)

    @property
    def redelivered(self):
        return bool(getattr(self.method, "redelivered", False))


class Consumer:
    """Manual-ack consumer of ``queue`` on ``conn.channel`` with ``prefetch`` unacked at most."""

    def __init__(self, conn, queue, prefetch=10, inactivity=0.1):
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1 (0 would mean unlimited)")
        self.conn = conn
        self.queue = queue
        self.prefetch = int(prefetch)
        self.inactivity = inactivity
        self._channel = None
        self._deliveries = None

    def _setup(self, timeout):
        self.conn.connect(timeout=timeout)
        channel = self.conn.channel
        if channel is not self._channel:
            channel.basic_qos(prefetch_count=self.prefetch)
            self._deliveries = channel.consume(self.queue, auto_ack=False,
                                               inactivity_timeout=self.inactivity)
            self._channel = channel
        return channel

    def get(self, timeout):
        """The next delivery, or None after ``timeout`` seconds without one.

        Connects (or reconnects) first when needed. When the connection breaks it fails over
        and re-raises the error (one of ``conn.errors``); the next call resumes elsewhere.
        """
        clock = self.conn.clock
        end = clock() + timeout
        try:
            with self.conn.deadlines.limit(timeout + self.conn.config.connect_timeout + 2.0, "consume"):
                channel = self._setup(timeout)
                while clock() < end:
                    method, properties, body = next(self._deliveries)
                    if method is not None:
                        return Delivery(channel, method, properties, body, self.conn.node)
        except StopIteration:  # the broker cancelled the consumer (queue deleted)
            self._forget()
            self.conn.reset_channel()
            raise pika.exceptions.ConsumerCancelled("consumer of %r cancelled by the broker"
                                                    % self.queue) from None
        except self.conn.errors as exc:
            self._forget()
            if not isinstance(exc, NoNodeAvailable):
                self.conn.fail_over("consume failed: %s" % describe(exc))
            raise
        return None

    def _forget(self):
        self._channel = self._deliveries = None

    def ack(self, delivery):
        """Ack; False when the delivery's channel is gone (the broker will redeliver it)."""
        return self._settle(delivery, lambda ch: ch.basic_ack(delivery_tag=delivery.method.delivery_tag))

    def reject(self, delivery, requeue=True):
        """Nack one delivery (requeue or, with requeue=False, dead-letter or drop it)."""
        return self._settle(delivery, lambda ch: ch.basic_nack(delivery_tag=delivery.method.delivery_tag,
                                                                requeue=requeue))

    def _settle(self, delivery, action):
        channel = delivery.channel
        if channel is not self._channel or not getattr(channel, "is_open", True):
            return False
        try:
            with self.conn.deadlines.limit(self.conn.config.connect_timeout, "ack"):
                action(channel)
        except self.conn.errors as exc:
            self._forget()
            self.conn.fail_over("ack failed: %s" % describe(exc))
            return False
        return True


class RecentIds:
    """The last ``size`` message ids seen, for an idempotent consumer:
    ``seen(id)`` is True for a duplicate, False (and remembers it) for a new id."""

    def __init__(self, size=100_000):
        self.size = size
        self._ids = collections.OrderedDict()

    def seen(self, message_id):
        if message_id in self._ids:
            self._ids.move_to_end(message_id)
            return True
        self._ids[message_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return False

    def __len__(self):
        return len(self._ids)
