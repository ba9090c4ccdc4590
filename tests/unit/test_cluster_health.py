"""warren.rabbitmq.cluster_health: reporting and waiting, with a fake clock."""

import pytest
from fake_rabbit import API, rabbit  # noqa: F401  (fixture)
from utils import run_fail, run_ok

from ansible_collections.warren.rabbitmq.plugins.modules import cluster_health

ALL = ['all_nodes_running', 'no_alarms', 'no_partitions', 'quorum_queues_have_leaders', 'not_quorum_critical']


class Clock:
    """Replaces the module's ``time``: sleep advances the clock and runs scheduled events."""

    def __init__(self):
        self.now = 1000.0
        self.events = []  # (at, callable)
        self.sleeps = []

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        for at, action in list(self.events):
            if at <= self.now:
                action()
                self.events.remove((at, action))


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(cluster_health, 'time', c)
    return c


def three_nodes(rabbit, running=(True, True, True)):
    rabbit.nodes = [{'name': 'rabbit@rmq%d' % i, 'running': r, 'partitions': [], 'mem_alarm': False,
                     'disk_free_alarm': False, 'being_drained': False, 'uptime': 1} for i, r in enumerate(running, 1)]


def test_report_healthy_cluster(rabbit, clock):
    three_nodes(rabbit)
    rabbit.add_queue('/', 'qq', qtype='quorum', members=['rabbit@rmq1', 'rabbit@rmq2', 'rabbit@rmq3'])
    res = run_ok(cluster_health.main, dict(API))
    assert res['changed'] is False and res['healthy'] is True and res['failing'] == []
    assert res['cluster_name'] == 'rabbit@rmq1' and res['rabbitmq_version'] == '4.0.5'
    assert res['erlang_version'] == '27.3.4.1'
    assert res['running_nodes'] == ['rabbit@rmq1', 'rabbit@rmq2', 'rabbit@rmq3']
    assert res['feature_flags']['khepri_db'] == 'disabled'
    assert res['conditions'] == dict((c, True) for c in ALL)
    assert res['attempts'] == 1


def test_report_only_does_not_fail_on_problems(rabbit, clock):
    three_nodes(rabbit, running=(True, False, True))
    rabbit.alarms = [{'node': 'rabbit@rmq2', 'resource': 'disk space'}]
    res = run_ok(cluster_health.main, dict(API))
    assert res['healthy'] is True  # nothing was asked for
    assert res['conditions']['all_nodes_running'] is False and res['conditions']['no_alarms'] is False
    assert res['alarms'] == ['rabbit@rmq2:disk space']


def test_problems_are_detected(rabbit, clock):
    three_nodes(rabbit, running=(True, True, False))
    rabbit.nodes[0]['partitions'] = ['rabbit@rmq2']
    rabbit.nodes[1]['mem_alarm'] = True
    rabbit.add_queue('/', 'no-leader', qtype='quorum', leader='', members=['rabbit@rmq1', 'rabbit@rmq2', 'rabbit@rmq3'],
                     online=['rabbit@rmq1'])
    rabbit.add_queue('/', 'leader-down', qtype='quorum', leader='rabbit@rmq3',
                     members=['rabbit@rmq1', 'rabbit@rmq2', 'rabbit@rmq3'], online=['rabbit@rmq1', 'rabbit@rmq2'])
    rabbit.add_queue('/', 'classic', qtype='classic', leader=None)
    rabbit.quorum_critical = [{'name': 'orders', 'virtual_host': 'shop'}]
    res = run_fail(cluster_health.main, dict(API, wait_for=ALL, timeout=0))
    failing = ' | '.join(res['failing'])
    assert 'all_nodes_running: not running: rabbit@rmq3' in failing
    assert 'no_alarms: alarms in effect: rabbit@rmq2:memory' in failing
    assert 'no_partitions: partitions seen: rabbit@rmq1 cannot reach rabbit@rmq2' in failing
    assert 'without an elected leader: //leader-down, //no-leader' in failing
    assert 'without a majority online: //no-leader' in failing
    assert 'not_quorum_critical: the node is quorum-critical for: shop/orders' in failing
    assert res['msg'].startswith('cluster not healthy after 0s (1 checks); failing conditions:')
    assert res['quorum_queues_without_leader'] == ['//leader-down', '//no-leader']


def test_expected_nodes(rabbit, clock):
    res = run_fail(cluster_health.main, dict(API, wait_for=['all_nodes_running'], expected_nodes=3, timeout=10,
                                             delay=5))
    assert '1 of 3 expected nodes running (rabbit@rmq1)' in res['msg']
    assert res['attempts'] == 3 and clock.sleeps == [5, 5]


def test_waits_until_a_node_is_back(rabbit, clock):
    three_nodes(rabbit, running=(True, True, False))
    clock.events.append((1012, lambda: rabbit.nodes[2].update(running=True)))
    res = run_ok(cluster_health.main, dict(API, wait_for=['all_nodes_running', 'no_alarms'], expected_nodes=3,
                                           timeout=60, delay=5))
    assert res['healthy'] is True and res['attempts'] == 4 and res['elapsed'] == 15.0


def test_waits_through_an_api_outage(rabbit, clock):
    rabbit.failures.extend(['refused', 503, 'refused'])
    res = run_ok(cluster_health.main, dict(API, wait_for=['all_nodes_running'], timeout=60, delay=2))
    assert res['healthy'] is True and res['attempts'] == 4


def test_api_outage_until_timeout_is_reported(rabbit, clock):
    rabbit.failures.extend(['refused'] * 50)
    res = run_fail(cluster_health.main, dict(API, wait_for=['no_alarms'], timeout=6, delay=2))
    assert res['failing'][0].startswith('api_reachable: cannot reach the RabbitMQ management API')
    assert res['healthy'] is False


def test_wrong_credentials_fail_at_once_even_when_waiting(rabbit, clock):
    res = run_fail(cluster_health.main, dict(API, login_password='bad', wait_for=['no_alarms'], timeout=60))
    assert 'authentication failed' in res['msg'] and clock.sleeps == []


def test_check_mode_is_read_only(rabbit, clock):
    res = run_ok(cluster_health.main, dict(API, wait_for=['no_alarms']), check_mode=True)
    assert res['changed'] is False and rabbit.writes() == []


@pytest.mark.parametrize('args,message', [
    ({'wait_for': ['everything_fine']}, 'wait_for'),
    ({'delay': 0}, 'delay must be at least 1 second'),
    ({'expected_nodes': 0}, 'expected_nodes must be at least 1'),
])
def test_bad_input(rabbit, clock, args, message):
    res = run_fail(cluster_health.main, dict(API, **args))
    assert message in res['msg'] and rabbit.calls == []
