"""warren's open-loop AMQP traffic engine: the workload of the drills and the load tests.

Usage::

    python3 -m warren_amqp.traffic --config run.json --out DIR            # a run
    python3 -m warren_amqp.traffic --config run.json --out DIR --start-at T   # common start
    python3 -m warren_amqp.traffic --config run.json --out DIR --drain    # consume what is left
    python3 -m warren_amqp.traffic --config run.json --check-config       # validate, no traffic
    python3 -m warren_amqp.traffic --config run.json --delete-queues      # remove the run's queues

A run declares its queues, starts ``processes`` worker processes (publishers and consumers are
dealt out over them round-robin), each running its connections on one pika ``SelectConnection``
I/O loop, follows the open-loop schedule (``warren_amqp.schedule``) for every step, and stops
by itself: after the last step, publishers wait up to ``confirm_grace_seconds`` for their last
confirms, consumers stop once idle (or after ``consume_grace_seconds``). SIGTERM or Ctrl-C ends
it early and cleanly: the schedule ends at once, publishers get 5 s for their last confirms,
the files are written, ``summary.json`` says ``"stopped_by": ["SIGTERM"]`` and the exit code is
0 (drills end their workload with ``systemctl stop``). ``duration_bound_seconds`` is a hard
bound on the whole run; a run killed at that bound exits 3.

Publishers publish uniquely numbered messages (headers ``x-warren-run``, ``x-warren-pub``,
``x-warren-seq``, ``x-warren-intended-us``, ``x-warren-sent-us`` (integer microseconds);
``message_id`` ``pub:seq``; a body of ``message_size`` bytes) with publisher confirms and at
most ``confirm_window`` unconfirmed. When the oldest unconfirmed message has waited
``confirm_deadline_seconds`` (and the broker has not blocked the connection for an alarm), or
the connection drops, the publisher reconnects to the next node and republishes every
unconfirmed message (duplicates allowed, counted by the checker). A nack is retried after
``nack_retry_seconds``. Consumers use manual acks and ``prefetch``, and reconnect to the next
node when their connection drops.

Config keys (JSON object; unknown keys are errors, every error is reported before any traffic):

==========================  ==========  =======================================================
key                         default     meaning
==========================  ==========  =======================================================
client                      (required)  ``warren_amqp.config.ClientConfig`` dict: nodes, vhost,
                                        user, password or password_file, tls, ca_file,
                                        heartbeat, connect_timeout, backoff_initial/max ...
queue_type                  quorum      quorum, classic or stream
queues                      1           number of queues: ``<queue_prefix>.<i>``
queue_prefix                warren.traffic
queue_arguments             {}          extra x-arguments for the declaration
exchange                    ""          publish through this durable direct exchange (declared,
                                        each queue bound with its own name as routing key)
                                        instead of the default exchange: a federated exchange
                                        (docs/dr-standby.md)
declare_queues              true        declare the queues before the run (durable)
publishers                  1           publishers in all (publisher i -> queue i % queues)
consumers                   1           consumers in all (consumer j -> queue j % queues); 0
                                        for publish-only (then --drain); else >= queues
processes                   1           worker processes on this host (1..64)
message_size                1024        body bytes
persistent                  true        delivery mode 2
confirm_window              64          unconfirmed messages per publisher (1..100000)
prefetch                    100         consumer prefetch (1..65535)
consumer_rate               0           cap per consumer, msg/s (0: none): a slow consumer
rate / rates                200         total msg/s of this invocation, or a list of rates
step_seconds                30          seconds per rate (a single rate: the run's length)
warmup_seconds              0           warm-up at the first rate, left out of the results
start_at                    null        Unix time to start the schedule (several load hosts;
                                        --start-at overrides it); refused with exit 2 when
                                        more than 1 s past once the queues are set up
startup_seconds             2           otherwise start this long after the processes start
confirm_deadline_seconds    1.0         fail over when a confirm is this late (0: never)
nack_retry_seconds          0.2         republish a nacked message after this long
confirm_grace_seconds       10          after the schedule, wait this long for confirms
consume_idle_seconds        3           after the schedule, consumers stop once idle this long
consume_grace_seconds       30          ... or this long after the schedule at the latest
duration_bound_seconds      auto        hard bound of the whole run (auto: planned + graces
                                        + 30); a run never lasts longer
lag_bound_ms                5.0         a step whose generator lag p99 passes this is invalid
node_assignment             spread      spread: client i starts on node i % nodes; first:
                                        every client starts on the first node
record_ops                  false       write every operation to ops-*.jsonl (drills); else
                                        compact seqs-*.json (load tests)
run_id                      generated   run identifier carried in every message
host_id                     hostname    this host's name in publisher ids and file names
drain_idle_seconds          5           --drain: stop when no delivery for this long
drain_max_seconds           120         --drain: stop after this long at most
stream_offset               first       --drain on streams: where to start reading
progress_seconds            5           seconds between progress lines (0: none)
==========================  ==========  =======================================================

Output in ``--out DIR``: ``ops-<host>-<p>.jsonl`` or ``seqs-<host>-<p>.json`` (the history, see
``warren_amqp.checker`` for the record formats), ``proc-<host>-<p>.json`` (that process's
per-step HdrHistograms as ``encode()`` strings, counters, CPU seconds, failovers, a per-second
time series) and ``summary.json`` (the merged steps: target, sent/confirmed/delivered rates,
latency percentiles from the merged histograms, generator lag, CPU, validity; the checker's
counts over this run's files). ``--drain`` writes ``ops-drain-*``/``seqs-drain-*`` and
``drain-summary.json``. Exit codes: 0 done (also after SIGTERM/SIGINT), 1 a worker failed or
the broker refused the queue, 2 bad config or setup error, 3 killed at the duration bound.
"""

import argparse
import collections
import datetime
import json
import multiprocessing
import os
import resource
import signal
import socket
import sys
import time

import pika
from pika.adapters import select_connection
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic

from warren_amqp import checker, hist, schedule
from warren_amqp.config import ClientConfig, ConfigError
from warren_amqp.failover import Backoff, NodeRotation

QUEUE_TYPES = ('quorum', 'classic', 'stream')
# Message headers. AMQP tables have no portable float type in pika: times are integer
# microseconds since the Unix epoch.
H_RUN, H_PUB, H_SEQ, H_INTENDED, H_SENT = ('x-warren-run', 'x-warren-pub', 'x-warren-seq',
                                           'x-warren-intended-us', 'x-warren-sent-us')
METRICS = ('confirm_from_intended', 'confirm_from_sent', 'end_to_end', 'schedule_lag',
           'generator_lag')
TICK = 0.1
# pika's default epoll poller rounds every timer wait up to a whole millisecond, which alone
# puts the schedule lag at 0.5-1 ms; select() waits to the microsecond. select() handles file
# descriptors below 1024 only, hence the bound on clients per process (RunConfig).
select_connection.SELECT_TYPE = 'select'
MAX_CLIENTS_PER_PROCESS = 500
EXIT_OK, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 2, 3


class RunConfigError(ValueError):
    """A run parameter is wrong; the message names the key and what it accepts."""


# -- configuration -----------------------------------------------------------------------------

DEFAULTS = {
    'client': None, 'queue_type': 'quorum', 'queues': 1, 'queue_prefix': 'warren.traffic',
    'queue_arguments': {}, 'exchange': '', 'declare_queues': True, 'publishers': 1, 'consumers': 1,
    'processes': 1, 'message_size': 1024, 'persistent': True, 'confirm_window': 64,
    'prefetch': 100, 'consumer_rate': 0, 'rate': None, 'rates': None, 'step_seconds': 30,
    'warmup_seconds': 0, 'start_at': None, 'startup_seconds': 2,
    'confirm_deadline_seconds': 1.0, 'nack_retry_seconds': 0.2, 'confirm_grace_seconds': 10,
    'consume_idle_seconds': 3, 'consume_grace_seconds': 30, 'duration_bound_seconds': None,
    'lag_bound_ms': 5.0, 'node_assignment': 'spread', 'record_ops': False, 'run_id': None,
    'host_id': None, 'drain_idle_seconds': 5, 'drain_max_seconds': 120,
    'stream_offset': 'first', 'progress_seconds': 5,
}


def _int(d, key, lo, hi):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RunConfigError('%r must be a whole number from %d to %d, got %r' % (key, lo, hi, v))
    return v


def _num(d, key, lo, hi=float('inf'), allow_lo=True):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise RunConfigError('%r must be a number, got %r' % (key, v))
    if v < lo or (v == lo and not allow_lo) or v > hi:
        raise RunConfigError('%r must be %s %g%s, got %r' % (
            key, '>=' if allow_lo else '>', lo, '' if hi == float('inf') else ' and <= %g' % hi,
            v))
    return float(v)


def _bool(d, key):
    if not isinstance(d[key], bool):
        raise RunConfigError('%r must be true or false, got %r' % (key, d[key]))
    return d[key]


class RunConfig:
    """A validated run configuration (see the module docstring for the keys)."""

    def __init__(self, data):
        if not isinstance(data, dict):
            raise RunConfigError('the config must be a JSON object')
        unknown = sorted(set(data) - set(DEFAULTS))
        if unknown:
            raise RunConfigError('unknown key(s) %s; valid keys: %s'
                                 % (', '.join(unknown), ', '.join(sorted(DEFAULTS))))
        d = dict(DEFAULTS)
        d.update(data)
        if not isinstance(d['client'], dict):
            raise RunConfigError("'client' (nodes, vhost, user, password or password_file, "
                                 "tls, ca_file ...) is required")
        try:
            self.client = ClientConfig.from_dict(d['client'])
        except (ConfigError, TypeError) as e:
            raise RunConfigError('client: %s' % e) from None
        if d['queue_type'] not in QUEUE_TYPES:
            raise RunConfigError("'queue_type' must be one of %s, got %r"
                                 % (', '.join(QUEUE_TYPES), d['queue_type']))
        self.queue_type = d['queue_type']
        self.queues = _int(d, 'queues', 1, 10000)
        prefix = d['queue_prefix']
        if not isinstance(prefix, str) or not prefix or len(prefix) > 200 \
                or prefix.startswith('amq.'):
            raise RunConfigError("'queue_prefix' must be a non-empty name (not amq.*), got %r"
                                 % (prefix,))
        self.queue_prefix = prefix
        if not isinstance(d['queue_arguments'], dict):
            raise RunConfigError("'queue_arguments' must be an object of x-arguments")
        self.queue_arguments = dict(d['queue_arguments'])
        if 'x-queue-type' in self.queue_arguments:
            raise RunConfigError("set the queue type with 'queue_type', not in queue_arguments")
        exchange = d['exchange']
        if not isinstance(exchange, str) or len(exchange) > 200 or exchange.startswith('amq.'):
            raise RunConfigError("'exchange' must be an exchange name (not amq.*), or empty for "
                                 "the default exchange, got %r" % (exchange,))
        self.exchange = exchange
        self.declare_queues = _bool(d, 'declare_queues')
        self.publishers = _int(d, 'publishers', 0, 100000)
        self.consumers = _int(d, 'consumers', 0, 100000)
        if self.publishers == 0 and self.consumers == 0:
            raise RunConfigError("'publishers' and 'consumers' are both 0: nothing to run")
        if 0 < self.consumers < self.queues:
            raise RunConfigError("'consumers' (%d) is below 'queues' (%d): every queue needs a "
                                 "consumer (or set consumers 0 and --drain after the run)"
                                 % (self.consumers, self.queues))
        self.processes = _int(d, 'processes', 1, 64)
        if self.processes > max(self.publishers, self.consumers):
            raise RunConfigError("'processes' (%d) is more than there are publishers or "
                                 "consumers (%d) to run in them"
                                 % (self.processes, max(self.publishers, self.consumers)))
        per_process = -(-(self.publishers + self.consumers) // self.processes)
        if per_process > MAX_CLIENTS_PER_PROCESS:
            raise RunConfigError('%d publishers and consumers per process is more than %d: '
                                 "raise 'processes'" % (per_process, MAX_CLIENTS_PER_PROCESS))
        self.message_size = _int(d, 'message_size', 0, 128 * 1024 * 1024)
        self.persistent = _bool(d, 'persistent')
        self.confirm_window = _int(d, 'confirm_window', 1, 100000)
        self.prefetch = _int(d, 'prefetch', 1, 65535)
        self.consumer_rate = _num(d, 'consumer_rate', 0)
        if d['rate'] is not None and d['rates'] is not None:
            raise RunConfigError("set 'rate' or 'rates', not both")
        rates = d['rates'] if d['rates'] is not None else (200 if d['rate'] is None
                                                            else d['rate'])
        self.step_seconds = _num(d, 'step_seconds', 0, allow_lo=False)
        self.warmup_seconds = _num(d, 'warmup_seconds', 0)
        try:
            self.steps = schedule.build_steps(rates, self.step_seconds, self.warmup_seconds)
        except schedule.ScheduleError as e:
            raise RunConfigError(str(e).replace('rate must', "'rate'/'rates' must")) from None
        if self.publishers and max(s.rate for s in self.steps) / self.publishers > 100000:
            raise RunConfigError('more than 100000 msg/s per publisher: add publishers')
        self.start_at = d['start_at']
        if self.start_at is not None:
            _num(d, 'start_at', 0)
        self.startup_seconds = _num(d, 'startup_seconds', 0, 300)
        self.confirm_deadline = _num(d, 'confirm_deadline_seconds', 0, 3600)
        self.nack_retry = _num(d, 'nack_retry_seconds', 0, 60)
        self.confirm_grace = _num(d, 'confirm_grace_seconds', 0, 3600)
        self.consume_idle = _num(d, 'consume_idle_seconds', 0, allow_lo=False, hi=3600)
        self.consume_grace = _num(d, 'consume_grace_seconds', 0, 3600)
        self.lag_bound_ms = _num(d, 'lag_bound_ms', 0, allow_lo=False)
        if d['node_assignment'] not in ('spread', 'first'):
            raise RunConfigError("'node_assignment' must be 'spread' or 'first', got %r"
                                 % (d['node_assignment'],))
        self.node_assignment = d['node_assignment']
        self.record_ops = _bool(d, 'record_ops')
        self.drain_idle = _num(d, 'drain_idle_seconds', 0, allow_lo=False, hi=3600)
        self.drain_max = _num(d, 'drain_max_seconds', 0, allow_lo=False, hi=86400)
        if d['stream_offset'] not in ('first', 'last', 'next'):
            raise RunConfigError("'stream_offset' must be first, last or next")
        self.stream_offset = d['stream_offset']
        self.progress_seconds = _num(d, 'progress_seconds', 0)
        for key in ('run_id', 'host_id'):
            v = d[key]
            if v is not None and (not isinstance(v, str) or not v or '/' in v or len(v) > 100):
                raise RunConfigError('%r must be a short name without "/", got %r' % (key, v))
        self.host_id = d['host_id'] or socket.gethostname().split('.')[0]
        self.run_id = d['run_id'] or '%s-%s' % (time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()),
                                                self.host_id)
        planned = self.steps[-1].end + self.startup_seconds
        tail = max(self.confirm_grace, self.consume_grace)
        if d['duration_bound_seconds'] is None:
            self.duration_bound = planned + tail + 30
        else:
            self.duration_bound = _num(d, 'duration_bound_seconds', 0, allow_lo=False)
            if self.duration_bound < planned + tail:
                raise RunConfigError(
                    "'duration_bound_seconds' (%g) is shorter than the run needs: %g s of "
                    "schedule (warm-up + steps + start-up) and %g s of grace"
                    % (self.duration_bound, planned, tail))
        self.raw = d

    def queue_names(self):
        return ['%s.%d' % (self.queue_prefix, i) for i in range(self.queues)]

    def queue_args(self):
        args = {'x-queue-type': self.queue_type}
        args.update(self.queue_arguments)
        return args

    def public(self):
        """The config as given, without secrets, for summary.json."""
        d = {k: v for k, v in self.raw.items() if k != 'client'}
        d['client'] = {k: v for k, v in self.raw['client'].items() if k != 'password'}
        d['run_id'], d['host_id'] = self.run_id, self.host_id
        return d


def load_config(path, start_at=None):
    """The run config from a JSON file; ``start_at`` (from --start-at) overrides the file's."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except OSError as e:
        raise RunConfigError('cannot read %s: %s' % (path, e.strerror or e)) from None
    except ValueError as e:
        raise RunConfigError('%s is not valid JSON: %s' % (path, e)) from None
    if start_at is not None and isinstance(data, dict):
        data['start_at'] = start_at
    return RunConfig(data)


# -- setup with a blocking connection (before any traffic) ------------------------------------

def blocking_connect(cfg):
    errors = []
    for node in cfg.client.nodes:
        try:
            return pika.BlockingConnection(cfg.client.parameters(node, 'warren-traffic setup'))
        except Exception as e:  # noqa: BLE001  (any failure: try the next node, report all)
            errors.append('%s: %s' % (node, e.__class__.__name__ + (': %s' % e if str(e)
                                                                     else '')))
    raise RunConfigError('cannot connect to any node (%s). Check nodes, vhost, user, password '
                         'and TLS settings' % '; '.join(errors))


def setup_queues(cfg, declare=True):
    """Declare (or check) the queues; returns {queue: messages already in it}."""
    conn = blocking_connect(cfg)
    depth = {}
    try:
        for name in cfg.queue_names():
            ch = conn.channel()
            try:
                if declare:
                    ok = ch.queue_declare(name, durable=True, arguments=cfg.queue_args())
                else:
                    ok = ch.queue_declare(name, passive=True)
                if declare and cfg.exchange:
                    ch.exchange_declare(cfg.exchange, 'direct', durable=True)
                    ch.queue_bind(name, cfg.exchange, routing_key=name)
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code == 406:
                    raise RunConfigError(
                        'queue %r exists with other arguments than %s (%s): delete it or choose '
                        'another queue_prefix' % (name, cfg.queue_args(), e.reply_text)) from None
                if e.reply_code == 404:
                    raise RunConfigError('queue %r does not exist (declare_queues is false)'
                                         % name) from None
                if e.reply_code == 403:
                    raise RunConfigError('user %r may not declare or use queue %r in vhost %r: '
                                         '%s' % (cfg.client.user, name, cfg.client.vhost,
                                                 e.reply_text)) from None
                raise
            depth[name] = ok.method.message_count
            if ch.is_open:
                ch.close()
    finally:
        if conn.is_open:
            conn.close()
    return depth


def delete_queues(cfg):
    conn = blocking_connect(cfg)
    deleted = {}
    try:
        for name in cfg.queue_names():
            ch = conn.channel()
            try:
                deleted[name] = ch.queue_delete(name).method.message_count
                ch.close()
            except pika.exceptions.ChannelClosedByBroker as e:
                deleted[name] = 'not deleted: %s' % e.reply_text
    finally:
        if conn.is_open:
            conn.close()
    return deleted


# -- the worker process -------------------------------------------------------------------------

class Accounting:
    """What one process saw: the history (ops lines or compact sequences), histograms,
    per-step counters, failovers and a per-second time series."""

    def __init__(self, cfg, tag, out_dir, t0, steps):
        self.cfg, self.tag, self.t0, self.steps = cfg, tag, t0, steps
        self.recorder = hist.StepRecorder()
        self.counts = collections.defaultdict(collections.Counter)   # step index -> counter
        self.totals = collections.Counter()
        self.events = []
        self.series = collections.defaultdict(lambda: [0, 0, 0, 0, 0, 0.0])
        self.ops = None
        if cfg.record_ops:
            self.ops = open(os.path.join(out_dir, 'ops-%s.jsonl' % tag), 'w',  # noqa: SIM115
                            encoding='utf-8', buffering=1 << 20)
        self.outcomes = {}            # pub -> bytearray (seqs format)
        self.deliveries = {}          # (run, pub) -> bytearray
        self.foreign = 0
        self.unexpected = 0
        self.redelivered = 0

    def step_of(self, when):
        step = schedule.step_at(self.steps, when - self.t0)
        return None if step is None else step.index

    def bump(self, when, key, n=1):
        idx = self.step_of(when)
        if idx is not None:
            self.counts[idx][key] += n
        self.totals[key] += n
        col = {'sent': 0, 'confirmed': 1, 'delivered': 2, 'nacked': 3, 'failovers': 4}.get(key)
        if col is not None:
            self.series[int(when)][col] += n

    def write(self, rec):
        if self.ops is not None:
            self.ops.write(json.dumps(rec, separators=(',', ':')) + '\n')

    def publish_final(self, pub_id, queue, seq, outcome, msg, confirmed=None, node=None):
        code = checker.OUTCOME_CODES[outcome]
        arr = self.outcomes.setdefault(pub_id, bytearray())
        if len(arr) <= seq:
            arr.extend(bytes(seq + 1 - len(arr)))
        arr[seq] = code
        self.write({'t': 'pub', 'run': self.cfg.run_id, 'pub': pub_id, 'seq': seq,
                    'queue': queue, 'intended': msg.intended, 'sent': msg.first_sent,
                    'confirmed': confirmed, 'outcome': outcome, 'node': node,
                    'attempts': msg.attempts})
        if outcome != 'confirmed':
            self.bump(msg.intended, outcome)

    def delivery(self, run, pub, seq, intended, when, node, redelivered, consumer, queue,
                 timed=True):
        if redelivered:
            self.redelivered += 1
        if run is None or pub is None or seq is None:
            self.foreign += 1
            self.write({'t': 'del', 'foreign': True, 'delivered': when, 'node': node,
                        'queue': queue, 'consumer': consumer})
            return
        key = (run, pub)
        if 0 <= seq <= checker.MAX_SEQ:
            arr = self.deliveries.setdefault(key, bytearray())
            if len(arr) <= seq:
                arr.extend(bytes(seq + 1 - len(arr)))
            arr[seq] = min(255, arr[seq] + 1)
        else:
            self.unexpected += 1
        self.write({'t': 'del', 'run': run, 'pub': pub, 'seq': seq, 'queue': queue,
                    'delivered': when, 'node': node, 'redelivered': redelivered,
                    'consumer': consumer, 'intended': intended})
        self.bump(when, 'delivered')
        if timed and run == self.cfg.run_id and intended is not None:
            idx = self.step_of(intended + 1e-6)     # microsecond rounding in the header
            if idx is not None:
                self.recorder.record(idx, 'end_to_end', when - intended)

    def event(self, what, **fields):
        fields.update(t=what, at=time.time())
        self.events.append(fields)
        if what == 'failover':
            self.bump(fields['at'], 'failovers')

    def close(self, meta, extra):
        if self.ops is not None:
            self.write(dict(meta, t='meta'))
            self.ops.close()
        else:
            doc = {'format': 'warren-seqs/1',
                   'publishers': [{'run': self.cfg.run_id, 'pub': p,
                                   'outcomes': checker.rle_encode(a)}
                                  for p, a in sorted(self.outcomes.items())],
                   'deliveries': [{'run': r, 'pub': p, 'counts': checker.rle_encode(a)}
                                  for (r, p), a in sorted(self.deliveries.items())],
                   'foreign': self.foreign, 'unexpected': self.unexpected,
                   'redelivered': self.redelivered, 'meta': meta}
            _write_json(os.path.join(extra['out_dir'], 'seqs-%s.json' % self.tag), doc)
        series = [[sec] + vals for sec, vals in sorted(self.series.items())]
        doc = {'tag': self.tag, 'meta': meta, 'histograms': self.recorder.to_dict(),
               'counts': {str(k): dict(v) for k, v in sorted(self.counts.items())},
               'cpu': extra['cpu'], 'events': self.events, 'series': series,
               'series_columns': ['second', 'sent', 'confirmed', 'delivered', 'nacked',
                                  'failovers', 'max_confirm_from_intended_ms']}
        _write_json(os.path.join(extra['out_dir'], 'proc-%s.json' % self.tag), doc)


class Msg:
    __slots__ = ('intended', 'first_sent', 'last_sent', 'attempts', 'step')

    def __init__(self, intended, step):
        self.intended, self.step = intended, step
        self.first_sent = self.last_sent = None
        self.attempts = 0


class Client:
    """Connection handling shared by publishers and consumers: open on the current node,
    on failure move to the next one, back off after a whole sweep failed."""

    kind = 'client'

    def __init__(self, worker, ident, index):
        self.w, self.ident = worker, ident
        cfg = worker.cfg
        start = index if cfg.node_assignment == 'spread' else 0
        self.rotation = NodeRotation(cfg.client.nodes, start)
        self.backoff = Backoff(cfg.client.backoff_initial, cfg.client.backoff_max)
        self.conn = self.channel = None
        self.node = None
        self.gen = 0
        self.failed_in_sweep = 0
        self.stopping = False
        self.connecting = False

    def connect(self):
        if self.stopping:
            return
        self.gen += 1
        gen = self.gen
        self.node = self.rotation.current
        self.connecting = True
        params = self.w.cfg.client.parameters(self.node, 'warren-traffic %s' % self.ident)
        try:
            self.conn = pika.SelectConnection(
                params, custom_ioloop=self.w.ioloop,
                on_open_callback=lambda c: self._opened(gen, c),
                on_open_error_callback=lambda c, e: self._lost(gen, 'connect failed: %s'
                                                               % _err(e)),
                on_close_callback=lambda c, e: self._lost(gen, 'connection closed: %s'
                                                          % _err(e)))
        except Exception as e:  # noqa: BLE001  (e.g. a name that does not resolve)
            self.conn = None
            why = 'connect failed: %s' % _err(e)
            self.w.ioloop.add_callback(lambda: self._lost(gen, why))

    def _opened(self, gen, conn):
        if gen != self.gen:
            conn.close()        # opened after we gave up on it
            return
        conn.channel(on_open_callback=lambda ch: self._channel_open(gen, ch))

    def _channel_open(self, gen, ch):
        if gen != self.gen:
            ch.close()
            return
        self.channel = ch
        ch.add_on_close_callback(lambda c, e: self._channel_closed(gen, e))
        self.on_channel(gen, ch)

    def _channel_closed(self, gen, exc):
        if gen != self.gen or self.stopping:
            return
        if isinstance(exc, pika.exceptions.ChannelClosedByBroker) and exc.reply_code in (403, 404,
                                                                                       406):
            self.w.fatal('%s: the broker closed the channel: %s' % (self.ident, _err(exc)))
            return
        self.fail_over('channel closed: %s' % _err(exc))

    def _lost(self, gen, reason):
        if gen != self.gen or self.stopping:
            return
        self.fail_over(reason)

    def fail_over(self, reason):
        """Abandon this connection and connect to the next node (after a backoff once every
        node has failed in a row)."""
        if self.stopping:
            return
        old = self.conn
        was_up = self.channel is not None
        self.gen += 1          # callbacks of the old connection are ignored from now on
        self.channel = None
        self.on_down()
        if old is not None and old.is_open:
            try:
                old.close()
            except Exception:  # noqa: BLE001  (already closing or broken: nothing to do)
                pass
        self.w.acct.event('failover', client=self.ident, kind=self.kind, node=str(self.node),
                          reason=reason, was_up=was_up)
        self.w.failovers += 1
        self.failed_in_sweep = 0 if was_up else self.failed_in_sweep + 1
        self.rotation.advance()
        if self.failed_in_sweep and self.failed_in_sweep % len(self.rotation) == 0:
            delay = self.backoff.failure()
        else:
            delay = 0.0
        self.w.ioloop.call_later(delay, self.connect)

    def ready(self):
        self.connecting = False
        self.failed_in_sweep = 0
        self.backoff.reset()

    def close(self):
        self.stopping = True
        self.gen += 1
        if self.conn is not None and self.conn.is_open:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001  (closing anyway)
                pass

    def on_channel(self, gen, ch):
        raise NotImplementedError

    def on_down(self):
        pass


class Publisher(Client):
    kind = 'publisher'

    def __init__(self, worker, index, queue):
        super().__init__(worker, '%s-p%d' % (worker.cfg.host_id, index), index)
        cfg = worker.cfg
        self.queue = queue
        self.pacer = schedule.Pacer(worker.steps, index, cfg.publishers, worker.t0)
        self.unconfirmed = {}           # seq -> Msg, in send order
        self.tagmaps = {}               # gen -> ({tag: seq}, deque of tags)
        self.next_tag = 1
        self.blocked = False
        self.ready_since = 0.0
        self.timer = None
        self.timer_at = None
        self.retry = collections.deque()
        self.stop_at = worker.schedule_end
        self.done = False
        self.body = b'w' * cfg.message_size
        self.delivery_mode = 2 if cfg.persistent else 1

    def start(self):
        self.connect()

    def on_channel(self, gen, ch):
        self.conn.add_on_connection_blocked_callback(lambda c, f: self._blocked(gen, True))
        self.conn.add_on_connection_unblocked_callback(lambda c, f: self._blocked(gen, False))
        self.tagmaps[gen] = ({}, collections.deque())
        ch.confirm_delivery(ack_nack_callback=lambda frame: self._confirm(gen, frame),
                            callback=lambda frame: self._confirming(gen))

    def _confirming(self, gen):
        if gen != self.gen:
            return
        self.ready()
        self.next_tag = 1
        self.ready_since = time.time()
        # Republish everything unconfirmed on the new channel, oldest first (duplicates are
        # allowed and counted by the checker).
        for seq in list(self.unconfirmed):
            self._send(seq, self.unconfirmed[seq], republish=True)
        self.pump()

    def on_down(self):
        self._cancel_timer()

    def _blocked(self, gen, blocked):
        if gen != self.gen:
            return
        self.blocked = blocked
        self.w.acct.event('blocked' if blocked else 'unblocked', client=self.ident,
                          node=str(self.node))
        if not blocked:
            self.ready_since = time.time()
            for msg in self.unconfirmed.values():
                msg.last_sent = self.ready_since   # the deadline restarts after an alarm
            self.pump()

    def _cancel_timer(self):
        if self.timer is not None:
            self.w.ioloop.remove_timeout(self.timer)
            self.timer = self.timer_at = None

    def _arm(self, at):
        if self.timer_at == at:
            return
        self._cancel_timer()
        self.timer_at = at
        self.timer = self.w.ioloop.call_later(max(0.0, at - time.time()), self._fire)

    def _fire(self):
        self.timer = self.timer_at = None
        self.pump()

    def sendable(self):
        return self.channel is not None and not self.blocked and not self.done

    def pump(self):
        """Send what is due while the window allows; arm the timer for the next slot."""
        if not self.sendable():
            return
        window = self.w.cfg.confirm_window
        while self.retry and len(self.unconfirmed) < window:
            seq, msg = self.retry.popleft()
            if seq not in self.unconfirmed:
                self.unconfirmed[seq] = msg
                self._send(seq, msg, republish=True)
        now = time.time()
        pacer = self.pacer
        while len(self.unconfirmed) < window:
            nxt = pacer.peek()
            if nxt is None or nxt > now or nxt >= self.stop_at:
                break
            seq, intended, step = pacer.take()
            msg = Msg(intended, step.index)
            self.unconfirmed[seq] = msg
            self._send(seq, msg)
            now = time.time()
        nxt = pacer.peek()
        if nxt is not None and nxt < self.stop_at and len(self.unconfirmed) < window:
            self._arm(nxt)

    def _send(self, seq, msg, republish=False):
        now = time.time()
        props = pika.BasicProperties(
            delivery_mode=self.delivery_mode, message_id='%s:%d' % (self.ident, seq),
            headers={H_RUN: self.w.cfg.run_id, H_PUB: self.ident, H_SEQ: seq,
                     H_INTENDED: round(msg.intended * 1e6), H_SENT: round(now * 1e6)})
        self.channel.basic_publish(self.w.cfg.exchange, self.queue, self.body, props)
        tags, order = self.tagmaps[self.gen]
        tags[self.next_tag] = seq
        order.append(self.next_tag)
        self.next_tag += 1
        msg.attempts += 1
        msg.last_sent = now
        acct = self.w.acct
        if msg.first_sent is None:
            msg.first_sent = now
            acct.bump(now, 'sent')
            acct.recorder.record(msg.step, 'schedule_lag', now - msg.intended)
            acct.recorder.record(msg.step, 'generator_lag',
                                 now - max(msg.intended, self.ready_since))
        elif republish:
            acct.bump(now, 'republished')

    def _confirm(self, gen, frame):
        maps = self.tagmaps.get(gen)
        if maps is None:
            return
        tags, order = maps
        method = frame.method
        ack = isinstance(method, Basic.Ack)
        if method.multiple:
            resolved = []
            while order and order[0] <= method.delivery_tag:
                t = order.popleft()
                if t in tags:
                    resolved.append(tags.pop(t))
        else:
            seq = tags.pop(method.delivery_tag, None)
            resolved = [] if seq is None else [seq]
            while order and order[0] not in tags:
                order.popleft()
        window = self.w.cfg.confirm_window
        was_full = len(self.unconfirmed) >= window
        now = time.time()
        acct = self.w.acct
        for seq in resolved:
            msg = self.unconfirmed.get(seq)
            if msg is None:
                continue        # confirmed already, through another attempt
            if ack:
                del self.unconfirmed[seq]
                acct.publish_final(self.ident, self.queue, seq, 'confirmed', msg, now,
                                   str(self.node))
                acct.bump(now, 'confirmed')
                acct.recorder.record(msg.step, 'confirm_from_intended', now - msg.intended)
                acct.recorder.record(msg.step, 'confirm_from_sent', now - msg.first_sent)
                sec = acct.series[int(now)]
                sec[5] = max(sec[5], round((now - msg.intended) * 1000, 3))
            elif gen == self.gen:
                del self.unconfirmed[seq]
                acct.bump(now, 'nacks')
                acct.series[int(now)][3] += 1
                self.w.ioloop.call_later(self.w.cfg.nack_retry,
                                         lambda s=seq, m=msg: self._retry(s, m))
        if gen == self.gen:
            if was_full and len(self.unconfirmed) < window:
                self.ready_since = now
            self.pump()

    def _retry(self, seq, msg):
        if self.done:
            self.w.acct.publish_final(self.ident, self.queue, seq, 'nacked', msg)
            return
        self.retry.append((seq, msg))
        self.pump()

    def check_deadline(self, now):
        deadline = self.w.cfg.confirm_deadline
        if not deadline or self.channel is None or self.blocked or not self.unconfirmed:
            return
        oldest = next(iter(self.unconfirmed.values()))
        if now - oldest.last_sent > deadline:
            self.fail_over('confirm deadline: %.2f s without a confirm' % (now - oldest.last_sent))

    def finish_if_due(self, now):
        """After the schedule: done when all is confirmed, or when the grace has passed."""
        if self.done:
            return True
        if now < self.stop_at:
            return False
        backlog = not self.pacer.done and self.pacer.peek() < self.stop_at
        if (self.unconfirmed or self.retry or backlog) and now < self.stop_at + self.w.grace:
            return False
        self.finalize()
        return True

    def finalize(self):
        self.done = True
        acct = self.w.acct
        for seq, msg in list(self.unconfirmed.items()):
            acct.publish_final(self.ident, self.queue, seq, 'indeterminate', msg)
        self.unconfirmed.clear()
        for seq, msg in self.retry:
            acct.publish_final(self.ident, self.queue, seq, 'nacked', msg)
        self.retry.clear()
        # Due by the schedule before the end but never sent: the publisher was stalled.
        while not self.pacer.done and self.pacer.peek() < min(self.stop_at, time.time()):
            seq, intended, step = self.pacer.take()
            acct.publish_final(self.ident, self.queue, seq, 'unsent', Msg(intended, step.index))
        self._cancel_timer()
        self.close()

    def stop(self, at):
        """End the schedule early (SIGTERM): nothing after ``at`` is due."""
        self.stop_at = min(self.stop_at, at)


class Consumer(Client):
    kind = 'consumer'

    def __init__(self, worker, index, queue):
        super().__init__(worker, '%s-c%d' % (worker.cfg.host_id, index), index)
        self.queue = queue
        self.last_delivery = time.time()
        self.done = False
        self.next_ack = 0.0

    def start(self):
        self.connect()

    def on_channel(self, gen, ch):
        cfg = self.w.cfg
        args = None
        if cfg.queue_type == 'stream':
            args = {'x-stream-offset': cfg.stream_offset if self.w.mode == 'drain'
                    else _stream_start(self.w.t0)}
        ch.basic_qos(prefetch_count=cfg.prefetch,
                     callback=lambda f: self._consume(gen, ch, args))

    def _consume(self, gen, ch, args):
        if gen != self.gen:
            return
        ch.basic_consume(self.queue, lambda c, m, p, b: self._message(gen, c, m, p),
                         auto_ack=False, arguments=args,
                         callback=lambda f: self.ready())

    def _message(self, gen, ch, method, props):
        now = time.time()
        self.last_delivery = now
        h = props.headers or {}
        run, pub, seq = h.get(H_RUN), h.get(H_PUB), h.get(H_SEQ)
        if isinstance(run, bytes):
            run = run.decode('utf-8', 'replace')
        if isinstance(pub, bytes):
            pub = pub.decode('utf-8', 'replace')
        if not isinstance(seq, int) or isinstance(seq, bool):
            seq = None
        intended = h.get(H_INTENDED)
        intended = intended / 1e6 if isinstance(intended, int) else None
        self.w.acct.delivery(run, pub, seq, intended, now, str(self.node),
                             bool(method.redelivered), self.ident, self.queue,
                             timed=self.w.mode == 'run')
        rate = self.w.cfg.consumer_rate
        if rate and self.w.mode != 'drain':
            self.next_ack = max(now, self.next_ack) + 1.0 / rate
            self.w.ioloop.call_later(self.next_ack - now,
                                     lambda: self._ack(gen, ch, method.delivery_tag))
        else:
            ch.basic_ack(method.delivery_tag)

    def _ack(self, gen, ch, tag):
        if gen == self.gen and ch.is_open:
            ch.basic_ack(tag)

    def finish_if_due(self, now):
        if self.done:
            return True
        w = self.w
        if w.mode == 'drain':
            idle = now - self.last_delivery >= w.cfg.drain_idle
            due = idle or now >= w.started + w.cfg.drain_max
        else:
            end = w.schedule_end
            idle = now >= end + 1 and now - self.last_delivery >= w.cfg.consume_idle
            due = idle or now >= end + w.cfg.consume_grace
        if due or w.stop_requested:
            self.done = True
            self.close()
        return self.done


def _stream_start(t0):
    return datetime.datetime.fromtimestamp(int(t0) - 1, tz=datetime.timezone.utc)


def _err(exc):
    if exc is None:
        return 'no reason given'
    text = str(exc)
    return '%s%s' % (exc.__class__.__name__, (': ' + text) if text else '')


def _write_json(path, doc):
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(doc, f, separators=(',', ':'))
        f.write('\n')
    os.replace(tmp, path)


def _cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Worker:
    """One process: its publishers and consumers on one I/O loop."""

    def __init__(self, cfg, proc, t0, out_dir, mode='run', shared=None):
        self.cfg, self.proc, self.t0, self.out_dir, self.mode = cfg, proc, t0, out_dir, mode
        self.shared = shared
        self.steps = cfg.steps
        self.schedule_end = t0 + cfg.steps[-1].end
        self.grace = cfg.confirm_grace
        self.started = time.time()
        # The bound counts from the schedule's start when that is later (a common start_at).
        self.hard_end = max(self.started, t0 if mode == 'run' else 0) + cfg.duration_bound
        self.stop_requested = False
        self.fatal_error = None
        self.ioloop = IOLoop()
        tag = ('drain-%s-%d' if mode == 'drain' else '%s-%d') % (cfg.host_id, proc)
        self.acct = Accounting(cfg, tag, out_dir, t0, self.steps)
        queues = cfg.queue_names()
        self.publishers, self.consumers = [], []
        if mode == 'drain':
            self.schedule_end = self.started
            for i, q in enumerate(queues):
                if i % cfg.processes == proc:
                    self.consumers.append(Consumer(self, i, q))
        else:
            for i in range(proc, cfg.publishers, cfg.processes):
                self.publishers.append(Publisher(self, i, queues[i % cfg.queues]))
            for j in range(proc, cfg.consumers, cfg.processes):
                self.consumers.append(Consumer(self, j, queues[j % cfg.queues]))
        self.cpu_marks = []
        self.failovers = 0
        self.stopped_at = None

    def fatal(self, message):
        if self.fatal_error is None:
            self.fatal_error = message
        self.request_stop()

    def request_stop(self, *_):
        if self.stop_requested:
            return
        self.stop_requested = True
        now = time.time()
        self.stopped_at = now
        for p in self.publishers:
            p.stop(now)
        self.grace = min(self.grace, 5.0)

    def _signal(self, signum, frame):
        self.ioloop.add_callback_threadsafe(self.request_stop)

    def _mark_cpu(self, label):
        self.cpu_marks.append((label, time.time(), _cpu()))

    def _tick(self):
        now = time.time()
        for p in self.publishers:
            if not p.done:
                p.check_deadline(now)
        done = all([p.finish_if_due(now) for p in self.publishers])
        done = all([c.finish_if_due(now) for c in self.consumers]) and done
        if self.shared is not None:
            self._share(now)
        if now >= self.hard_end:
            self.fatal_error = self.fatal_error or 'duration bound reached'
            for p in self.publishers:
                if not p.done:
                    p.finalize()
            for c in self.consumers:
                c.done = True
                c.close()
            done = True
        if done:
            self.ioloop.call_later(0.2, self.ioloop.stop)   # let the closes go out
        else:
            self.ioloop.call_later(TICK, self._tick)

    def _share(self, now):
        """Counters for the parent's progress lines: sent, confirmed, delivered, failovers,
        unconfirmed, done."""
        tot = self.acct.totals
        base = self.proc * 6
        vals = (tot['sent'], tot['confirmed'], tot['delivered'], self.failovers,
                sum(len(p.unconfirmed) for p in self.publishers), 0)
        for i, v in enumerate(vals):
            self.shared[base + i] = v

    def run(self):
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C
        self._mark_cpu('start')
        for c in self.consumers:
            c.start()
        for p in self.publishers:
            p.start()
        if self.mode == 'run':
            for step in self.steps:
                self.ioloop.call_later(max(0.0, self.t0 + step.end - time.time()),
                                       lambda s=step: self._mark_cpu(s.index))
            self.ioloop.call_later(max(0.0, self.t0 - time.time()),
                                   lambda: self._mark_cpu('t0'))
        self.ioloop.call_later(TICK, self._tick)
        try:
            self.ioloop.start()
        finally:
            self._mark_cpu('end')
            self._write()
        return 1 if self.fatal_error else 0

    def _write(self):
        cpu = {}
        prev = None
        for label, when, used in self.cpu_marks:
            if prev is not None and isinstance(label, int):
                cpu[str(label)] = {'seconds': round(when - prev[0], 3),
                                   'cpu_seconds': round(used - prev[1], 3)}
            if label == 't0' or isinstance(label, int):
                prev = (when, used)
        cpu['total_cpu_seconds'] = round(self.cpu_marks[-1][2], 3)
        # Confirmed counts by the step of the *intended* time (the step's own messages).
        meta = {'run': self.cfg.run_id, 'process': self.acct.tag, 'mode': self.mode,
                't0': self.t0, 'publish_start': self.t0 if self.publishers else None,
                'publish_end': min(self.schedule_end, self.stopped_at or self.schedule_end),
                'stop_requested': self.stop_requested, 'error': self.fatal_error,
                'ended': time.time()}
        if not self.publishers:
            meta.pop('publish_start')
            meta.pop('publish_end')
        self.acct.close(meta, {'out_dir': self.out_dir, 'cpu': cpu})


def _child(cfg, proc, t0, out_dir, mode, shared):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        code = Worker(cfg, proc, t0, out_dir, mode, shared).run()
    except Exception as e:  # noqa: BLE001  (report any crash; the parent sees the exit code)
        print('traffic: process %d failed: %s' % (proc, _err(e)), file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    os._exit(code)


# -- the parent: start, watch, merge ------------------------------------------------------------

def merge_run(cfg, out_dir, tags, t0, mode='run'):
    """summary.json of one invocation: steps merged over its processes."""
    procs = []
    for tag in tags:
        path = os.path.join(out_dir, 'proc-%s.json' % tag)
        if os.path.exists(path):
            with open(path, encoding='utf-8') as f:
                procs.append(json.load(f))
    merged = hist.merge_step_dicts(p['histograms'] for p in procs)
    # A run stopped early (SIGTERM) ends its schedule there: rates are over the time it ran.
    ends = [p['meta'].get('publish_end') for p in procs if p['meta'].get('publish_end')]
    stopped = min(ends) if ends else None
    steps = []
    for step in cfg.steps:
        key = str(step.index)
        if stopped is not None and t0 + step.start >= stopped:
            break                       # never reached
        counts = collections.Counter()
        cpu_s = 0.0
        for p in procs:
            counts.update(p['counts'].get(key, {}))
            cpu_s += p['cpu'].get(key, {}).get('cpu_seconds', 0.0)
        lat = {m: hist.summary(merged.get(key, {}).get(m) or hist.new()) for m in METRICS}
        secs = step.seconds
        if stopped is not None and t0 + step.end > stopped:
            secs = max(stopped - t0 - step.start, 1e-3)
        entry = {
            'index': step.index, 'name': step.name, 'warmup': step.warmup,
            'target_rate': step.rate, 'seconds': secs,
            'start': t0 + step.start, 'end': t0 + step.end,
            'sent_rate': round(counts['sent'] / secs, 2),
            'confirmed_rate': round(counts['confirmed'] / secs, 2),
            'delivered_rate': round(counts['delivered'] / secs, 2),
            'achieved_ratio': round(counts['confirmed'] / secs / step.rate, 4),
            'counts': dict(counts),
            'latency_ms': lat,
            'cpu_seconds': round(cpu_s, 3),
            'cpu_cores': round(cpu_s / secs, 3),
        }
        gen_p99 = lat['generator_lag']['p99']
        entry['valid'] = schedule.step_valid(gen_p99, cfg.lag_bound_ms) if cfg.publishers \
            else True
        if not entry['valid']:
            entry['invalid_reason'] = (
                'generator lag p99 %s ms > bound %g ms: the generator was the limit'
                % (gen_p99, cfg.lag_bound_ms) if gen_p99 is not None else 'nothing was sent')
        entry['histograms'] = {m: hist.encode(h) for m, h in merged.get(key, {}).items()}
        steps.append(entry)
    series = collections.defaultdict(lambda: [0, 0, 0, 0, 0, 0.0])
    for p in procs:
        for row in p['series']:
            acc = series[row[0]]
            for i in range(5):
                acc[i] += row[i + 1]
            acc[5] = max(acc[5], row[6])
    events = sorted((e for p in procs for e in p['events']), key=lambda e: e['at'])
    errors = [p['meta']['error'] for p in procs if p['meta'].get('error')]
    return {
        'format': 'warren-traffic-summary/1', 'mode': mode, 'run_id': cfg.run_id,
        'host': cfg.host_id, 't0': t0, 'processes': len(tags), 'process_files': len(procs),
        'steps': steps if mode == 'run' else [],
        'series_columns': ['second', 'sent', 'confirmed', 'delivered', 'nacked', 'failovers',
                           'max_confirm_from_intended_ms'],
        'series': [[k] + v for k, v in sorted(series.items())],
        'failovers': [e for e in events if e['t'] == 'failover'],
        'blocked_events': [e for e in events if e['t'] in ('blocked', 'unblocked')],
        'cpu_total_seconds': round(sum(p['cpu']['total_cpu_seconds'] for p in procs), 3),
        'errors': errors,
        'config': cfg.public(),
    }


def _progress(cfg, shared, nproc, t0, last):
    vals = [sum(shared[p * 6 + i] for p in range(nproc)) for i in range(5)]
    now = time.time()
    dt = now - last[0] if last[0] else 0
    rates = ['%.0f/s' % ((v - o) / dt) if dt else '-' for v, o in zip(vals[:3], last[1][:3])]
    step = schedule.step_at(cfg.steps, now - t0)
    where = ('%s target %g/s' % (step.name, step.rate)) if step else (
        'starting' if now < t0 else 'finishing')
    print('[traffic] t=%+6.1fs %-22s sent %-8s confirmed %-8s delivered %-8s unconfirmed %d  '
          'failovers %d' % (now - t0, where, rates[0], rates[1], rates[2], vals[4], vals[3]),
          flush=True)
    last[0], last[1] = now, vals


def run(cfg, out_dir, mode='run'):
    """Start the worker processes, watch them, write the summary. Returns (summary, exit)."""
    os.makedirs(out_dir, exist_ok=True)
    depth = setup_queues(cfg, declare=cfg.declare_queues and mode == 'run')
    nproc = cfg.processes if mode == 'run' else min(cfg.processes, cfg.queues)
    now = time.time()
    if mode == 'run':
        # Judged now, after the queues are set up and right before the workers start.
        try:
            t0 = schedule.start_time(cfg.start_at, now, cfg.startup_seconds)
        except schedule.ScheduleError as e:
            raise RunConfigError(str(e)) from None
        if t0 < now:
            print('[traffic] note: starting %.2f s after start_at; those first slots are sent '
                  'late and their lag is measured' % (now - t0), flush=True)
    else:
        t0 = now
    print('[traffic] %s %s: %d process(es), %d publisher(s), %d consumer(s), %d %s '
          'queue(s) %s.*, steps %s, out %s' % (
              mode, cfg.run_id, nproc, cfg.publishers if mode == 'run' else 0,
              cfg.consumers if mode == 'run' else cfg.queues, cfg.queues, cfg.queue_type,
              cfg.queue_prefix, ', '.join('%s %g/s x %gs' % (s.name, s.rate, s.seconds)
                                          for s in cfg.steps) if mode == 'run' else '-',
              out_dir), flush=True)
    nonempty = {q: n for q, n in depth.items() if n}
    if nonempty and mode == 'run':
        print('[traffic] note: queues not empty at the start (their messages will count as '
              'foreign): %s' % nonempty, flush=True)
    ctx = multiprocessing.get_context('fork')
    shared = ctx.Array('d', nproc * 6, lock=False)
    sys.stdout.flush()
    children = [ctx.Process(target=_child, args=(cfg, p, t0, out_dir, mode, shared),
                            name='traffic-%d' % p) for p in range(nproc)]
    interrupted, stopped_by = [], []

    def on_signal(signum, frame):
        stopped_by.append(signal.Signals(signum).name)
        for c in children:
            if c.pid and c.is_alive():
                os.kill(c.pid, signal.SIGTERM)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for c in children:
            c.start()
        hard = max(time.time(), t0) + cfg.duration_bound + 15
        last = [0, [0] * 5]
        next_progress = time.time() + (cfg.progress_seconds or 1e9)
        while True:
            alive = [c for c in children if c.is_alive()]
            if not alive:
                break
            alive[0].join(timeout=0.2)
            if cfg.progress_seconds and time.time() >= next_progress:
                _progress(cfg, shared, nproc, t0, last)
                next_progress += cfg.progress_seconds
            if time.time() > hard and 'duration bound' not in interrupted:
                # The workers stop themselves at the bound; this is the last resort.
                for c in alive:
                    c.kill()
                interrupted.append('duration bound')
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    tag = 'drain-%s-%d' if mode == 'drain' else '%s-%d'
    tags = [tag % (cfg.host_id, p) for p in range(nproc)]
    summary = merge_run(cfg, out_dir, tags, t0, mode)
    summary['queue_depth_at_start'] = depth
    summary['stopped_by'] = stopped_by
    summary['interrupted'] = interrupted
    summary['exit_codes'] = [c.exitcode for c in children]
    if mode == 'drain':
        summary['queue_depth_after'] = setup_queues(cfg, declare=False)
    # The checker over this invocation's own files (a drain adds the rest: run it on both).
    files = [os.path.join(out_dir, '%s-%s.%s' % (kind, t, ext))
             for t in tags for kind, ext in (('ops', 'jsonl'), ('seqs', 'json'))]
    files = [f for f in files if os.path.exists(f)]
    if mode == 'run' and files and cfg.publishers:
        try:
            result = checker.check(files)
            summary['check'] = {k: result[k] for k in ('counts', 'verdict')}
            summary['check']['note'] = ('this run\'s files only; messages still in the queues '
                                        'count as lost until a --drain adds its deliveries')
        except checker.HistoryError as e:
            summary['check'] = {'error': str(e)}
    _write_json(os.path.join(out_dir, 'summary.json' if mode == 'run'
                             else 'drain-summary.json'), summary)
    code = EXIT_OK
    if interrupted:
        code = EXIT_INTERRUPTED
    elif summary['errors'] or any(c.exitcode for c in children):
        code = 1
    return summary, code


def render(summary):
    lines = []
    if summary['mode'] == 'run':
        lines.append('%-8s %8s %9s %9s %9s %9s %9s %9s %9s %6s %5s' % (
            'step', 'target', 'sent/s', 'conf/s', 'deliv/s', 'p50 ms', 'p99 ms', 'max ms',
            'lag99 ms', 'cpu', 'valid'))
        for s in summary['steps']:
            lat = s['latency_ms']['confirm_from_intended']
            lag = s['latency_ms']['generator_lag']['p99']
            lines.append('%-8s %8g %9.1f %9.1f %9.1f %9s %9s %9s %9s %6.2f %5s' % (
                s['name'] + ('*' if s['warmup'] else ''), s['target_rate'], s['sent_rate'],
                s['confirmed_rate'], s['delivered_rate'], lat['p50'], lat['p99'], lat['max'],
                lag, s['cpu_cores'], 'yes' if s['valid'] else 'NO'))
        lines.append('(* warm-up, left out; latency = confirm latency from the intended send '
                     'time; lag99 = generator lag p99; cpu = cores used by the generator)')
    lines.append('failovers %d; blocked events %d; generator CPU %.1f s'
                 % (len(summary['failovers']), len(summary['blocked_events']),
                    summary['cpu_total_seconds']))
    if summary.get('check', {}).get('error'):
        lines.append('check: %s' % summary['check']['error'])
    elif summary.get('check'):
        c = summary['check'].get('counts', {})
        lines.append('check (this run\'s files): confirmed %s, delivered %s, lost %s, '
                     'unexpected %s, duplicates %s, indeterminate %s, unsent %s -> %s' % (
                         c.get('confirmed'), c.get('delivered_messages'), c.get('lost'),
                         c.get('unexpected'), c.get('duplicates'), c.get('indeterminate'),
                         c.get('unsent'), summary['check'].get('verdict')))
    if summary.get('queue_depth_after') is not None:
        lines.append('queue depth after the drain: %s' % summary['queue_depth_after'])
    for e in summary['errors']:
        lines.append('ERROR: %s' % e)
    if summary.get('stopped_by'):
        lines.append('stopped early by %s (clean stop: files written)'
                     % ', '.join(summary['stopped_by']))
    if summary['interrupted']:
        lines.append('INTERRUPTED: %s' % ', '.join(summary['interrupted']))
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python3 -m warren_amqp.traffic',
        description="warren's open-loop AMQP traffic engine (config keys: pydoc "
                    "warren_amqp.traffic).")
    parser.add_argument('--config', required=True, help='run configuration (JSON)')
    parser.add_argument('--out', help='output directory (required for a run or a drain)')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--drain', action='store_true',
                      help='consume everything left in the queues until idle, for the checker')
    mode.add_argument('--check-config', action='store_true',
                      help='validate the configuration and exit (no connection, no traffic)')
    mode.add_argument('--delete-queues', action='store_true', help="delete the run's queues")
    parser.add_argument('--start-at', type=float, metavar='UNIX_TIME',
                        help="start the schedule at this Unix time (overrides the config's "
                             "start_at; refused when already past)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, start_at=args.start_at)
        if args.check_config:
            print('[traffic] config OK: %s' % ', '.join(
                '%s %g/s x %gs' % (s.name, s.rate, s.seconds) for s in cfg.steps))
            return EXIT_OK
        if args.delete_queues:
            print('[traffic] deleted: %s' % delete_queues(cfg))
            return EXIT_OK
        if not args.out:
            raise RunConfigError('--out DIR is required for a run or a drain')
        summary, code = run(cfg, args.out, 'drain' if args.drain else 'run')
    except RunConfigError as e:
        print('traffic: %s' % e, file=sys.stderr)
        return EXIT_CONFIG
    print(render(summary))
    return code


if __name__ == '__main__':
    sys.exit(main())
