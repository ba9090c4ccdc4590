"""Connection settings for the example clients: a JSON file or flags -> warren_amqp ClientConfig."""

import argparse
import json

from warren_amqp.config import ClientConfig


def connection_args(description):
    """An argument parser with the connection flags both examples take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="JSON file of ClientConfig keys (nodes, vhost, user, "
                        "password_file, tls, ca_file...); flags below override it")
    parser.add_argument("--nodes", help="comma-separated host:port list, tried in this order")
    parser.add_argument("--vhost")
    parser.add_argument("--user")
    parser.add_argument("--password-file")
    parser.add_argument("--tls", action="store_true", default=None, help="connect with TLS")
    parser.add_argument("--ca-file", help="CA that signed the brokers' certificates")
    parser.add_argument("--queue", default="warren.examples", help="quorum queue (declared if missing)")
    return parser


def client_config(args, connection_name):
    settings = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            settings.update(json.load(handle))
    for key in ("nodes", "vhost", "user", "password_file", "tls", "ca_file"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings.setdefault("connection_name", connection_name)
    return ClientConfig.from_dict(settings)


def declare_queue(conn, queue):
    """Durable quorum queue: replicated, and confirmed only once a majority has the message."""
    conn.connect(timeout=30)
    conn.channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
