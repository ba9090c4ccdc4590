"""warren.rabbitmq.policy against the fake management API."""

import fake_rabbit
import pytest
from fake_rabbit import API, rabbit  # noqa: F401  (fixture)
from utils import run_fail, run_ok

from ansible_collections.warren.rabbitmq.plugins.modules import policy

DEF = {'max-length': 10000, 'overflow': 'reject-publish', 'dead-letter-exchange': 'dlx'}


def args(**kw):
    out = dict(API, name='limits', vhost='/', pattern='^orders\\.', apply_to='quorum_queues', priority=5,
               definition=dict(DEF))
    out.update(kw)
    return out


def test_create(rabbit):
    res = run_ok(policy.main, args())
    assert res['changed'] is True
    assert rabbit.policies[('/', 'limits')] == {'pattern': '^orders\\.', 'apply-to': 'quorum_queues',
                                                'definition': DEF, 'priority': 5}
    assert ('PUT', '/api/policies/%2F/limits') in rabbit.writes()
    assert res['policy']['name'] == 'limits' and res['previous'] == {}


def test_no_change_when_only_types_and_key_order_differ(rabbit):
    run_ok(policy.main, args())
    rabbit.calls.clear()
    res = run_ok(policy.main, args(priority='5', definition={'overflow': 'reject-publish', 'dead-letter-exchange': 'dlx',
                                                             'max-length': '10000'}))
    assert res['changed'] is False
    assert rabbit.writes() == []


def test_change(rabbit):
    run_ok(policy.main, args())
    res = run_ok(policy.main, args(definition=dict(DEF, **{'max-length': 20000})))
    assert res['changed'] is True
    assert rabbit.policies[('/', 'limits')]['definition']['max-length'] == 20000
    assert res['previous']['definition']['max-length'] == 10000


def test_string_number_is_sent_as_number(rabbit):
    res = run_ok(policy.main, args(definition={'max-length': '100', 'dead-letter-routing-key': 42}))
    assert res['changed'] is True
    assert rabbit.policies[('/', 'limits')]['definition'] == {'max-length': 100, 'dead-letter-routing-key': '42'}


def test_delete_and_delete_again(rabbit):
    run_ok(policy.main, args())
    res = run_ok(policy.main, dict(API, name='limits', vhost='/', state='absent'))
    assert res['changed'] is True and ('/', 'limits') not in rabbit.policies
    res = run_ok(policy.main, dict(API, name='limits', vhost='/', state='absent'))
    assert res['changed'] is False


def test_check_mode_changes_nothing(rabbit):
    res = run_ok(policy.main, args(), check_mode=True)
    assert res['changed'] is True
    assert rabbit.policies == {} and rabbit.writes() == []
    run_ok(policy.main, args())
    res = run_ok(policy.main, dict(API, name='limits', vhost='/', state='absent'), check_mode=True)
    assert res['changed'] is True and ('/', 'limits') in rabbit.policies


def test_diff_output(rabbit):
    run_ok(policy.main, args())
    res = run_ok(policy.main, args(priority=7), diff=True)
    assert res['diff']['before']['priority'] == 5 and res['diff']['after']['priority'] == 7
    assert res['diff']['after_header'] == 'policy //limits'


def test_vhost_and_name_with_space_and_slash(rabbit):
    rabbit.vhosts['team a/b'] = {'name': 'team a/b', 'description': '', 'tags': [], 'default_queue_type': 'quorum'}
    res = run_ok(policy.main, args(vhost='team a/b', name='p/1 x'))
    assert res['changed'] is True
    assert ('PUT', '/api/policies/team%20a%2Fb/p%2F1%20x') in rabbit.writes()
    assert ('team a/b', 'p/1 x') in rabbit.policies
    assert run_ok(policy.main, args(vhost='team a/b', name='p/1 x'))['changed'] is False


def test_operator_policy(rabbit):
    res = run_ok(policy.main, args(operator_policy=True, apply_to='queues', definition={'max-length': 5}))
    assert res['kind'] == 'operator_policy'
    assert ('/', 'limits') in rabbit.operator_policies and rabbit.policies == {}
    assert ('PUT', '/api/operator-policies/%2F/limits') in rabbit.writes()


def test_missing_vhost(rabbit):
    res = run_fail(policy.main, args(vhost='nope'))
    assert "vhost 'nope' does not exist" in res['msg']
    assert rabbit.writes() == []


def test_absent_in_missing_vhost_is_no_change(rabbit):
    res = run_ok(policy.main, dict(API, name='p', vhost='nope', state='absent'))
    assert res['changed'] is False and rabbit.writes() == []


def test_missing_pattern(rabbit):
    res = run_fail(policy.main, args(pattern=None))
    assert 'pattern' in res['msg'] and rabbit.writes() == []


def test_empty_definition(rabbit):
    res = run_fail(policy.main, args(definition={}))
    assert 'definition must be a non-empty dict' in res['msg'] and rabbit.writes() == []


def test_bad_apply_to(rabbit):
    res = run_fail(policy.main, args(apply_to='bogus'))
    assert 'apply_to' in res['msg'] and rabbit.calls == []


def test_rabbitmq_reason_passed_through(rabbit, monkeypatch):
    # a rejection only the server knows about (the local checks pass) keeps RabbitMQ's own words
    def refuse(method, seg, body):
        raise fake_rabbit._Error(400, 'bad_request', 'Validation failed\n\n&lt;&lt;"abc"&gt;&gt; is not valid\n')
    monkeypatch.setattr(rabbit, 'r_policies', refuse)
    res = run_fail(policy.main, args(definition={'max-length': 5}))
    assert '<<"abc">> is not valid' in res['msg']


@pytest.mark.parametrize('definition,pattern,message', [
    ({'max-length': 'abc'}, '.*', 'max-length must be an integer'),
    ({'max-lenght': 10}, '.*', "unknown key 'max-lenght' - did you mean 'max-length'?"),
    ({'overflow': 'lots'}, '.*', 'overflow must be one of drop-head, reject-publish, reject-publish-dlx'),
    ({'ha-mode': 'all'}, '.*', 'classic queue mirroring was removed in RabbitMQ 4.0'),
    ({'max-length': 10}, '^orders.(', 'pattern is not a valid regular expression'),
])
def test_bad_policy_refused_before_any_write(rabbit, definition, pattern, message):
    res = run_fail(policy.main, args(definition=definition, pattern=pattern))
    assert message in res['msg'], res['msg']
    assert rabbit.writes() == []


def test_wrong_password(rabbit):
    res = run_fail(policy.main, args(login_password='nope'))
    assert 'authentication failed' in res['msg'] and res['status'] == 401


def test_url_and_host_are_mutually_exclusive(rabbit):
    res = run_fail(policy.main, args(host='rmq1'))
    assert 'mutually exclusive' in res['msg']
