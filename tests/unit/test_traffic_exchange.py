"""The traffic engine's ``exchange`` option (docs/dr-standby.md): the standby drill publishes
through a federated exchange instead of the default exchange. Without a broker: the option's
validation, the declaration and binding at set-up, and the exchange every publish goes to."""

import collections
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'roles', 'amqp_client',
                                'files'))

from warren_amqp import traffic  # noqa: E402  (path set just above)

CLIENT = {'nodes': ['rmq1:5672'], 'vhost': 'warren', 'user': 'app', 'password': 'secret'}


def config(**overrides):
    data = {'client': dict(CLIENT), 'rate': 100, 'step_seconds': 10}
    data.update(overrides)
    return traffic.RunConfig(data)


def test_default_is_the_default_exchange():
    assert config().exchange == ''
    assert config(exchange='warren.dr').exchange == 'warren.dr'


@pytest.mark.parametrize('value', ['amq.direct', 5, None, 'x' * 201])
def test_a_bad_exchange_is_refused(value):
    with pytest.raises(traffic.RunConfigError) as err:
        config(exchange=value)
    assert "'exchange' must be an exchange name" in str(err.value)


class FakeSetupChannel:
    def __init__(self, calls):
        self.calls, self.is_open = calls, True

    def queue_declare(self, name, durable=False, arguments=None, passive=False):
        self.calls.append(('queue_declare', name, passive))
        return collections.namedtuple('Ok', 'method')(
            collections.namedtuple('M', 'message_count')(0))

    def exchange_declare(self, name, kind, durable=False):
        self.calls.append(('exchange_declare', name, kind, durable))

    def queue_bind(self, queue, exchange, routing_key=None):
        self.calls.append(('queue_bind', queue, exchange, routing_key))

    def close(self):
        self.is_open = False


class FakeBlockingConnection:
    def __init__(self, calls):
        self.calls, self.is_open = calls, True

    def channel(self):
        return FakeSetupChannel(self.calls)

    def close(self):
        self.is_open = False


@pytest.fixture
def setup_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(traffic, 'blocking_connect', lambda cfg: FakeBlockingConnection(calls))
    return calls


def test_setup_declares_the_exchange_and_binds_each_queue_by_its_name(setup_calls):
    traffic.setup_queues(config(exchange='warren.dr', queues=2, consumers=2, queue_prefix='q'))
    assert ('exchange_declare', 'warren.dr', 'direct', True) in setup_calls
    assert [c for c in setup_calls if c[0] == 'queue_bind'] == [
        ('queue_bind', 'q.0', 'warren.dr', 'q.0'), ('queue_bind', 'q.1', 'warren.dr', 'q.1')]


def test_setup_without_exchange_binds_nothing(setup_calls):
    traffic.setup_queues(config())
    assert [c[0] for c in setup_calls] == ['queue_declare']


def test_setup_that_only_checks_queues_declares_no_exchange(setup_calls):
    traffic.setup_queues(config(exchange='warren.dr'), declare=False)
    assert [c[0] for c in setup_calls] == ['queue_declare']


class FakeChannel:
    def __init__(self):
        self.published = []

    def basic_publish(self, exchange, routing_key, body, properties):
        self.published.append((exchange, routing_key))


@pytest.mark.parametrize('exchange', ['', 'warren.dr'])
def test_every_publish_goes_to_the_configured_exchange(tmp_path, exchange):
    cfg = config(exchange=exchange, confirm_window=3, rate=1000, step_seconds=1)
    w = traffic.Worker(cfg, 0, time.time() - 0.5, str(tmp_path))
    w.ioloop.call_later = lambda delay, cb: None
    w.ioloop.remove_timeout = lambda handle: None
    p = w.publishers[0]
    p.channel = FakeChannel()
    p.tagmaps[p.gen] = ({}, collections.deque())
    p._confirming(p.gen)
    assert p.channel.published == [(exchange, 'warren.traffic.0')] * 3
