"""Locust entry point for warren: users that publish and consume through warren's shared
AMQP client (``warren_amqp.blocking``), for teams that already drive their tests from Locust.

    PYTHONPATH=/usr/local/lib/warren/python \\
    WARREN_LOCUST_CLIENT=/etc/warren/loadgen/client.json WARREN_LOCUST_QUEUE=warren.locust \\
    locust -f locustfile.py --headless -u 12 -r 12 -t 60s --csv /tmp/locust/out

Environment:
  WARREN_LOCUST_CLIENT   client settings as JSON (``ClientConfig.from_dict``: nodes, tls,
                         ca_file, vhost, user, password or password_file, ...)   required
  WARREN_LOCUST_QUEUE    the quorum queue to publish to and consume from     (warren.locust)
  WARREN_LOCUST_RATE     messages per second per publisher user             (10)
  WARREN_LOCUST_SIZE     message body size in bytes                          (1024)
  WARREN_LOCUST_CONSUMERS  how many of the users consume (the rest publish)  (2)
  WARREN_LOCUST_PREFETCH consumer prefetch                                   (100)
  WARREN_LOCUST_LEADER_LOCATOR  x-queue-leader-locator of the test queue: client-local puts its
                         leader on the first broker of the node list, where warren's
                         side-by-side profile puts the generator's queue (client-local)
  WARREN_LOCUST_RECORD   folder for one JSON line per request (what Locust was told: start
                         time, response time, outcome), used by warren's side-by-side plot

How Locust measures, and why warren's headline numbers do not come from it: a Locust user
waits for each response before it sends the next request (closed loop), and Locust times a
request from the moment it is actually sent. When the broker stalls (a leader election after a
node dies), every user is stuck inside one publish: Locust records one slow request per user
and *none* of the requests those users should have sent meanwhile. warren's open-loop generator
(``warren_amqp.traffic``) keeps its schedule and measures from the intended send time, so the
stall shows in every message that was due. docs/performance.md shows both on the same failover.

Deadlines: warren_amqp's confirm deadlines use SIGALRM, one per process; Locust's users are
greenlets sharing the main thread, so the deadlines are switched off here and a publish waits
for its confirm (or for the connection to break, which fails over), as a closed-loop client does.
"""

import json
import os
import time
import uuid

import pika
from locust import User, constant_throughput, events, task
from warren_amqp import blocking
from warren_amqp.config import ClientConfig

QUEUE = os.environ.get("WARREN_LOCUST_QUEUE", "warren.locust")
RATE = float(os.environ.get("WARREN_LOCUST_RATE", "10"))
SIZE = int(os.environ.get("WARREN_LOCUST_SIZE", "1024"))
CONSUMERS = int(os.environ.get("WARREN_LOCUST_CONSUMERS", "2"))
PREFETCH = int(os.environ.get("WARREN_LOCUST_PREFETCH", "100"))
LEADER_LOCATOR = os.environ.get("WARREN_LOCUST_LEADER_LOCATOR", "client-local")
RECORD_DIR = os.environ.get("WARREN_LOCUST_RECORD")
RUN_ID = uuid.uuid4().hex[:8]


class NoDeadlines(blocking.Deadlines):
    """Deadlines switched off: SIGALRM cannot tell Locust's greenlets apart."""

    def __init__(self):  # pylint: disable=super-init-not-called
        self.enabled = False
        self._stack = []


def client_config():
    path = os.environ.get("WARREN_LOCUST_CLIENT")
    if not path:
        raise SystemExit("WARREN_LOCUST_CLIENT must name the client settings file (JSON)")
    with open(path, encoding="utf-8") as f:
        return ClientConfig.from_dict(json.load(f))


class Recorder:
    """One JSON line per request, exactly as reported to Locust's statistics."""

    def __init__(self):
        self.file = None
        if RECORD_DIR:
            os.makedirs(RECORD_DIR, exist_ok=True)
            self.file = open(os.path.join(RECORD_DIR, "locust-%s-%d.jsonl" % (RUN_ID, os.getpid())),
                             "a", encoding="utf-8", buffering=1)

    def write(self, kind, start, ms, outcome, node, detail=""):
        if self.file:
            rec = {"t": kind, "start": start, "ms": ms, "outcome": outcome, "node": str(node)}
            if detail:
                rec["detail"] = detail
            self.file.write(json.dumps(rec) + "\n")


RECORDER = Recorder()


def fire(user, name, start, ms, outcome, node, length=0, detail=""):
    """Report one request to Locust (and to the record file)."""
    exc = None if outcome in (blocking.CONFIRMED, "delivered") else Exception(outcome)
    user.environment.events.request.fire(
        request_type="amqp", name=name, response_time=ms, response_length=length,
        exception=exc, context={})
    RECORDER.write(name, start, ms, outcome, node, detail)


@events.test_start.add_listener
def declare_queue(environment, **_kwargs):
    """Declare the test queue once (quorum, durable) before the users start."""
    conn = blocking.FailoverConnection(client_config(), "warren-locust-setup",
                                       deadlines=NoDeadlines())
    try:
        conn.connect(timeout=30)
        conn.channel.queue_declare(QUEUE, durable=True,
                                   arguments={"x-queue-type": "quorum",
                                              "x-queue-leader-locator": LEADER_LOCATOR})
    finally:
        conn.close()


class _AmqpUser(User):
    abstract = True

    def on_start(self):
        self.conn = blocking.FailoverConnection(
            client_config(), "warren-locust-%s" % self.__class__.__name__.lower(),
            deadlines=NoDeadlines())

    def on_stop(self):
        self.conn.close()


class Publisher(_AmqpUser):
    """Publishes persistent messages with confirms at WARREN_LOCUST_RATE per user."""

    wait_time = constant_throughput(RATE)

    def on_start(self):
        super().on_start()
        self.publisher = blocking.ConfirmPublisher(self.conn, deadline=30.0, max_attempts=3,
                                                   max_seconds=120.0)
        self.seq = 0
        self.body = b"x" * SIZE

    @task
    def publish(self):
        self.seq += 1
        start = time.time()
        props = pika.BasicProperties(delivery_mode=2, message_id="%s-%d-%d" % (
            RUN_ID, id(self), self.seq), timestamp=int(start), headers={"sent_us": int(start * 1e6)})
        result = self.publisher.publish("", QUEUE, self.body, props)
        fire(self, "publish-confirm", start, (time.time() - start) * 1000.0, result.outcome,
             result.node, len(self.body), result.detail)


class Consumer(_AmqpUser):
    """Consumes with manual acks; reports end-to-end latency (send to delivery)."""

    fixed_count = CONSUMERS  # exactly this many consumers; every other user publishes
    wait_time = constant_throughput(1000)

    def on_start(self):
        super().on_start()
        self.consumer = blocking.Consumer(self.conn, QUEUE, prefetch=PREFETCH)

    @task
    def consume(self):
        try:
            delivery = self.consumer.get(timeout=1.0)
        except (pika.exceptions.AMQPError, OSError, EOFError):
            time.sleep(0.2)
            return
        if delivery is None:
            return
        sent_us = (delivery.properties.headers or {}).get("sent_us")
        now = time.time()
        self.consumer.ack(delivery)
        if sent_us is not None:  # pika cannot send float headers: microseconds as an int
            sent = sent_us / 1e6
            fire(self, "end-to-end", sent, (now - sent) * 1000.0, "delivered", delivery.node,
                 len(delivery.body))
