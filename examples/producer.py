#!/usr/bin/env python3
"""warren's recommended publisher: confirms with a deadline, failover, republish with the same id.

Publishes --count persistent messages to a quorum queue. Each message has a message_id; when
no confirm comes within --deadline seconds (a partitioned node, a queue without a leader, an
alarm) or the connection breaks, the publisher moves to the next node and publishes the same
message again. A message can therefore arrive twice; the consumer drops duplicates by id.
Exit status 0 when every message was confirmed.

    PYTHONPATH=/usr/local/lib/warren/python python3 producer.py --config lab.json --count 1000
"""

import json
import statistics
import sys
import time
import uuid

import pika

from common import client_config, connection_args, declare_queue
from warren_amqp.blocking import ConfirmPublisher, FailoverConnection


def main():
    parser = connection_args(__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="messages to publish (bounded)")
    parser.add_argument("--rate", type=float, default=50, help="messages per second at most")
    parser.add_argument("--deadline", type=float, default=2.0, help="seconds to wait for a confirm")
    parser.add_argument("--attempts", type=int, default=3, help="sends per message at most")
    args = parser.parse_args()

    conn = FailoverConnection(client_config(args, "warren-example-producer"))
    declare_queue(conn, args.queue)
    publisher = ConfirmPublisher(conn, deadline=args.deadline, max_attempts=args.attempts)
    run = uuid.uuid4().hex[:8]
    outcomes, latencies, republished, nodes = {}, [], 0, set()
    started = time.monotonic()
    for seq in range(args.count):
        properties = pika.BasicProperties(
            message_id="%s-%d" % (run, seq),  # the consumer's deduplication key
            delivery_mode=2,                  # persistent
            content_type="application/json")
        body = json.dumps({"run": run, "seq": seq}).encode()
        res = publisher.publish("", args.queue, body, properties)
        outcomes[res.outcome] = outcomes.get(res.outcome, 0) + 1
        nodes.add(str(res.node))
        if res.ok:
            latencies.append(res.seconds)
        if res.attempts > 1 or not res.ok:
            republished += res.attempts > 1
            print("message %s: %s after %d attempt(s), %.3fs, %s %s"
                  % (properties.message_id, res.outcome, res.attempts, res.seconds, res.node,
                     res.detail), flush=True)
        if (seq + 1) % max(1, args.count // 10) == 0:
            print("published %d/%d" % (seq + 1, args.count), flush=True)
        time.sleep(max(0.0, started + (seq + 1) / args.rate - time.monotonic()))
    conn.close()

    confirmed = outcomes.get("confirmed", 0)
    print("run %s: %d/%d confirmed in %.1fs, %d republished after a deadline or a lost "
          "connection, outcomes %s, nodes %s" % (run, confirmed, args.count,
                                                  time.monotonic() - started, republished,
                                                  json.dumps(outcomes, sort_keys=True),
                                                  ", ".join(sorted(nodes))))
    if latencies:
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
        print("confirm latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (cuts[49] * 1e3, cuts[98] * 1e3, max(latencies) * 1e3))
    return 0 if confirmed == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
