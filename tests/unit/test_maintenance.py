"""warren.rabbitmq.maintenance with the rabbitmq CLI tools faked through run_command."""

import json

import pytest
from ansible.module_utils import basic
from utils import run_fail, run_ok

from ansible_collections.warren.rabbitmq.plugins.modules import maintenance


class FakeNode:
    def __init__(self, drained=False, quorum_critical=False):
        self.drained = drained
        self.quorum_critical = quorum_critical
        self.commands = []
        self.status_rc = 0
        self.drain_rc = 0

    def run_command(self, module, cmd, **kw):
        self.commands.append(cmd)
        tool, args = cmd[0].rsplit('/', 1)[-1], cmd[cmd.index('--timeout') + 2:]
        if args and args[0] == '-n':
            args = args[2:]
        if tool == 'rabbitmq-diagnostics' and args[0] == 'status':
            if self.status_rc:
                return self.status_rc, '', 'Error: unable to perform an operation on node'
            return 0, json.dumps({'is_under_maintenance': self.drained, 'rabbitmq_version': '4.0.5'}), ''
        if tool == 'rabbitmq-diagnostics' and args[0] == 'check_if_node_is_quorum_critical':
            return (69, '', 'quorum queues would lose majority: orders') if self.quorum_critical else (0, '', '')
        if tool == 'rabbitmq-upgrade':
            if self.drain_rc:
                return self.drain_rc, '', 'drain failed'
            self.drained = args[0] == 'drain'
            return 0, 'done', ''
        raise AssertionError(cmd)

    def actions(self):
        return [c[-1] for c in self.commands if 'rabbitmq-upgrade' in c[0]]


@pytest.fixture
def node(monkeypatch):
    fake = FakeNode()
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, cmd, **kw: fake.run_command(self, cmd, **kw))
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path',
                        lambda self, name, required=False, opt_dirs=None: '/usr/sbin/' + name)
    return fake


def test_drain_then_no_change(node):
    res = run_ok(maintenance.main, {'state': 'drained'})
    assert res['changed'] is True and res['previous'] is False and res['under_maintenance'] is True
    assert node.actions() == ['drain']
    assert res['cmd'] == ['/usr/sbin/rabbitmq-upgrade', '-q', '--timeout', '120', 'drain']
    res = run_ok(maintenance.main, {'state': 'drained'})
    assert res['changed'] is False and node.actions() == ['drain']


def test_revive(node):
    node.drained = True
    res = run_ok(maintenance.main, {'state': 'revived', 'node': 'rabbit@rmq2', 'cli_timeout': 30})
    assert res['changed'] is True and res['under_maintenance'] is False
    assert node.commands[-2] == ['/usr/sbin/rabbitmq-upgrade', '-q', '--timeout', '30', '-n', 'rabbit@rmq2', 'revive']
    assert run_ok(maintenance.main, {'state': 'revived'})['changed'] is False


def test_check_mode_and_diff(node):
    res = run_ok(maintenance.main, {'state': 'drained'}, check_mode=True, diff=True)
    assert res['changed'] is True and node.actions() == [] and node.drained is False
    assert res['diff'] == {'before': {'under_maintenance': False}, 'after': {'under_maintenance': True}}


def test_refuses_to_drain_a_quorum_critical_node(node):
    node.quorum_critical = True
    res = run_fail(maintenance.main, {'state': 'drained'})
    assert 'quorum-critical' in res['msg'] and node.actions() == []
    res = run_ok(maintenance.main, {'state': 'drained', 'check_quorum_critical': False})
    assert res['changed'] is True and node.actions() == ['drain']


def test_node_down(node):
    node.status_rc = 69
    res = run_fail(maintenance.main, {'state': 'drained'})
    assert 'cannot read the node status' in res['msg']


def test_drain_failure(node):
    node.drain_rc = 1
    res = run_fail(maintenance.main, {'state': 'drained'})
    assert 'drain failed' in res['msg']


@pytest.mark.parametrize('args,message', [
    ({'state': 'paused'}, 'state'),
    ({}, 'state'),
    ({'state': 'drained', 'cli_timeout': 0}, 'cli_timeout must be at least 1'),
])
def test_bad_input(node, args, message):
    res = run_fail(maintenance.main, args)
    assert message in res['msg'] and node.commands == []
