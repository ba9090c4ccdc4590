#!/usr/bin/env python3
"""warren's recommended consumer: manual acks, prefetch, failover, deduplication by message id.

Consumes from a quorum queue until --expect distinct messages arrived, or --idle seconds pass
without one, or --max-seconds pass (always bounded). A message is acknowledged only after it
was processed; a message seen before (a republish by the producer, or a redelivery after a
failover) is acknowledged and skipped, so processing happens once per message id.
Exit status 0 when --expect was given and reached (or not given).

    PYTHONPATH=/usr/local/lib/warren/python python3 consumer.py --config lab.json --expect 1000
"""

import sys
import time

from common import client_config, connection_args, declare_queue
from warren_amqp.blocking import Consumer, FailoverConnection, RecentIds


def main():
    parser = connection_args(__doc__.splitlines()[0])
    parser.add_argument("--expect", type=int, help="stop after this many distinct messages")
    parser.add_argument("--idle", type=float, default=10, help="stop after this long without a message")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop after this long in any case")
    parser.add_argument("--prefetch", type=int, default=50, help="unacknowledged messages at most")
    args = parser.parse_args()

    conn = FailoverConnection(client_config(args, "warren-example-consumer"))
    declare_queue(conn, args.queue)
    consumer = Consumer(conn, args.queue, prefetch=args.prefetch)
    seen = RecentIds(size=1_000_000)  # as large as the window in which a duplicate can arrive
    processed = duplicates = redelivered = errors = 0
    started = last = time.monotonic()
    while time.monotonic() - started < args.max_seconds and time.monotonic() - last < args.idle:
        if args.expect is not None and processed >= args.expect:
            break
        try:
            delivery = consumer.get(timeout=1.0)
        except conn.errors as exc:  # the consumer already failed over; the next get resumes
            errors += 1
            print("consumer: %s; resuming on the next node" % exc, flush=True)
            continue
        if delivery is None:
            continue
        last = time.monotonic()
        redelivered += delivery.redelivered
        seen_before = seen.seen(delivery.message_id)
        if seen_before:
            duplicates += 1       # processed already: ack so the broker forgets it
        else:
            processed += 1        # the application's work goes here, before the ack
        consumer.ack(delivery)    # False after a failover: the broker redelivers, dedup drops it
        step = max(1, (args.expect or 1000) // 10)
        if processed % step == 0 and not seen_before:
            print("consumed %d%s" % (processed, "/%d" % args.expect if args.expect else ""), flush=True)
    conn.close()
    print("consumed %d distinct message(s) in %.1fs; %d duplicate(s) dropped, %d redelivered, "
          "%d connection error(s)" % (processed, time.monotonic() - started, duplicates,
                                      redelivered, errors))
    return 0 if args.expect is None or processed >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
