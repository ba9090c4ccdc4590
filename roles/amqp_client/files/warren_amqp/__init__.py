"""warren_amqp: warren's AMQP client library (pika 1.3/1.4, Python >= 3.11, nothing else).

- ``warren_amqp.config``: nodes, credentials, TLS and timeouts -> ``pika.ConnectionParameters``.
- ``warren_amqp.failover``: node rotation and exponential backoff with jitter.
- ``warren_amqp.blocking``: a failover connection, a publisher with confirm deadlines that
  republishes on another node, and a manual-ack consumer (pika's BlockingConnection).

Installed by the ``warren.rabbitmq.amqp_client`` role into ``/usr/local/lib/warren/python``
(``PYTHONPATH=/usr/local/lib/warren/python``). See roles/amqp_client/README.md.
"""

__version__ = "1.0.0"
