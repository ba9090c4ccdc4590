"""warren.rabbitmq.definitions never half-applies (issue 12), against the fake management API.

Validation before the first write, rollback of what the server still rejects (proved by a
byte-identical export), no self-lock-out, concurrent runs, error messages and a guarded prune.
"""

import http.client
import json

import pytest
from fake_rabbit import API, FakeRabbit, rabbit  # noqa: F401  (fixture)
from test_definitions import VH, full_set, present
from utils import run_fail, run_ok

from ansible_collections.warren.rabbitmq.plugins.module_utils import rabbitmq_api
from ansible_collections.warren.rabbitmq.plugins.modules import cluster_health, definitions


def export(tmp_path, name='export.json'):
    dest = tmp_path / name
    run_ok(definitions.main, dict(API, state='exported', dest=str(dest)))
    return dest.read_bytes()


def baseline(rabbit):
    """full_set() applied, plus objects a prune would delete: vhost 'old' (with a queue and a policy,
    and no permission for admin) and user 'stale' (with a permission)."""
    run_ok(definitions.main, present(full_set()))
    rabbit.vhosts['old'] = {'name': 'old', 'description': 'legacy', 'tags': ['x'], 'default_queue_type': 'classic'}
    rabbit.add_queue('old', 'old.q', {'x-max-length': 10})
    rabbit.policies[('old', 'cap')] = {'pattern': '.*', 'apply-to': 'queues', 'definition': {'max-length': 5},
                                       'priority': 0}
    rabbit.vhost_limits['old'] = {'max-queues': 7}
    rabbit.add_user('stale', 'pw', ['monitoring'])
    rabbit.permissions[('/', 'stale')] = {'user': 'stale', 'vhost': '/', 'configure': '', 'write': '.*', 'read': '.*'}
    rabbit.calls.clear()


def changed_set():
    """Creates, updates (a password, tags, limits, a policy) and, with prune, deletes."""
    defs = full_set()
    defs['vhosts'][1]['limits'] = {'max-connections': 10}
    defs['users'][0]['password'] = 'n3w'
    defs['users'][0]['tags'] = ['management']
    defs['users'].append({'name': 'fresh', 'password': 'pw', 'tags': []})
    defs['permissions'].append({'user': 'fresh', 'vhost': VH, 'configure': '', 'write': '.*', 'read': '.*'})
    defs['policies'][0]['definition'] = {'delivery-limit': 5}
    defs['exchanges'].append({'vhost': VH, 'name': 'events', 'type': 'topic'})
    defs['queues'].append({'vhost': VH, 'name': 'app.new', 'type': 'quorum'})
    defs['bindings'].append({'vhost': VH, 'source': 'events', 'destination': 'app.new', 'destination_type': 'queue',
                             'routing_key': 'new.#'})
    return defs


# -- 1. validated before the first write -----------------------------------------------------------

@pytest.mark.parametrize('extra,message', [
    ({'policies': [{'vhost': '/', 'name': 'p', 'pattern': '.*', 'definition': {'max-lenght': 10}}]},
     "policies[0] (vhost '/', name 'p'): definition: unknown key 'max-lenght' - did you mean 'max-length'?"),
    ({'policies': [{'vhost': '/', 'name': 'p', 'pattern': '.*', 'definition': {'max-length': 'lots'}}]},
     "definition: max-length must be an integer, got 'lots'"),
    ({'policies': [{'vhost': '/', 'name': 'p', 'pattern': '^(orders', 'definition': {'max-length': 1}}]},
     'pattern is not a valid regular expression (missing ), unterminated subpattern'),
    ({'policies': [{'vhost': '/', 'name': 'p', 'pattern': '.*', 'definition': {'ha-mode': 'all'}}]},
     'classic queue mirroring was removed in RabbitMQ 4.0'),
    ({'operator_policies': [{'vhost': '/', 'name': 'p', 'pattern': '.*', 'definition': {'expires': 0}}]},
     'expires must be at least 1, got 0'),
    ({'queues': [{'vhost': '/', 'name': 'q', 'arguments': {'x-max-length': -1}}]},
     "queues[0] (vhost '/', name 'q'): arguments: x-max-length must be zero or more, got -1"),
    ({'queues': [{'vhost': '/', 'name': 'q', 'arguments': {'x-max-priority': 300}}]},
     'x-max-priority must be between 1 and 255'),
    ({'queues': [{'vhost': '/', 'name': 'q', 'arguments': {'x-overflow': 'drop-tail'}}]},
     'x-overflow must be one of drop-head, reject-publish, reject-publish-dlx'),
    ({'queues': [{'vhost': '/', 'name': 'q', 'arguments': {'x-message-ttl': 'soon'}}]},
     "x-message-ttl must be an integer, got 'soon'"),
    ({'exchanges': [{'vhost': '/', 'name': 'e', 'type': 'topics'}]}, "type 'topics' is not an exchange type"),
    ({'permissions': [{'user': 'admin', 'vhost': '/', 'configure': '[', 'write': '.*', 'read': '.*'}]},
     "configure is not a valid regular expression"),
    ({'bindings': [{'vhost': '/', 'source': 'ghost', 'destination': 'q', 'destination_type': 'queue'}],
      'queues': [{'vhost': '/', 'name': 'q'}]},
     "source exchange 'ghost' does not exist in vhost '/' and is not in the set"),
    ({'bindings': [{'vhost': '/', 'source': 'amq.topic', 'destination': 'nowhere', 'destination_type': 'queue'}]},
     "destination queue 'nowhere' does not exist in vhost '/'"),
    ({'bindings': [{'vhost': '/', 'source': '', 'destination': 'q', 'destination_type': 'queue'}],
      'queues': [{'vhost': '/', 'name': 'q'}]}, "source '' is the default exchange"),
])
def test_rejected_before_any_write_names_object_and_field(rabbit, extra, message):
    defs = {'users': [{'name': 'early', 'password': 'pw'}]}   # would be created first if nothing was checked
    defs.update(extra)
    res = run_fail(definitions.main, present(defs))
    assert message in res['msg'], res['msg']
    assert rabbit.writes() == [] and 'early' not in rabbit.users and res['changed'] is False


def test_pcre_only_pattern_is_left_to_the_server(rabbit):
    defs = {'policies': [{'vhost': '/', 'name': 'p', 'pattern': r'^\Qa.b\E$', 'definition': {'max-length': 1}}]}
    assert run_ok(definitions.main, present(defs))['changed'] is True


def test_rejected_policy_leaves_the_cluster_byte_identical(rabbit, tmp_path):
    baseline(rabbit)
    before = export(tmp_path, 'before.json')
    defs = full_set()
    defs['users'].append({'name': 'new-user', 'password': 'pw'})
    defs['policies'].append({'vhost': VH, 'name': 'bad', 'pattern': '.*', 'definition': {'max-length': 'lots'}})
    res = run_fail(definitions.main, present(defs))
    assert "policies[1] (vhost 'team a/b', name 'bad')" in res['msg']
    assert export(tmp_path, 'after.json') == before


def test_binding_to_a_missing_exchange_leaves_the_cluster_byte_identical(rabbit, tmp_path):
    baseline(rabbit)
    before = export(tmp_path, 'before.json')
    defs = full_set()
    defs['queues'].append({'vhost': VH, 'name': 'fresh.q'})
    defs['bindings'].append({'vhost': VH, 'source': 'ghost', 'destination': 'fresh.q', 'destination_type': 'queue'})
    res = run_fail(definitions.main, present(defs))
    assert "source exchange 'ghost' does not exist in vhost 'team a/b'" in res['msg']
    assert export(tmp_path, 'after.json') == before


# -- 2. rollback of what the server still rejects --------------------------------------------------------

def _writes_of_a_full_run():
    fake = FakeRabbit()
    mp = pytest.MonkeyPatch()
    mp.setattr(rabbitmq_api, 'open_url', fake.open_url)
    mp.setattr(rabbitmq_api.time, 'sleep', lambda s: None)
    try:
        baseline(fake)
        start = fake.write_count
        run_ok(definitions.main, present(changed_set(), prune=True, prune_force=True))
        return fake.write_count - start
    finally:
        mp.undo()


FULL_RUN_WRITES = _writes_of_a_full_run()


def test_a_full_run_has_many_writes():
    assert FULL_RUN_WRITES >= 10  # creates, updates (password, tags, limits, policy) and deletes


@pytest.mark.parametrize('n', range(1, FULL_RUN_WRITES + 1))
def test_injected_failure_on_the_nth_write_is_rolled_back_byte_identical(rabbit, tmp_path, n):
    baseline(rabbit)
    before = export(tmp_path, 'before.json')
    rabbit.fail_write(n, 500, 'injected failure on write %d' % n)
    res = run_fail(definitions.main, present(changed_set(), prune=True, prune_force=True))
    assert 'injected failure on write %d' % n in res['msg']
    assert 'were rolled back; the cluster is as before' in res['msg']
    assert res['changed'] is False
    assert res['rollback']['complete'] is True and res['rollback']['failed'] == []
    assert len(res['rollback']['undone']) == res['rollback']['attempted']
    assert export(tmp_path, 'after.json') == before


def test_failed_password_rollback_is_reported_with_what_is_left(rabbit, tmp_path):
    baseline(rabbit)
    before = json.loads(export(tmp_path, 'before.json'))
    defs = {'users': [{'name': 'app', 'password': 'n3w'}], 'queues': [{'vhost': VH, 'name': 'extra'}]}
    rabbit.fail_write(2, 500, 'queue write refused')   # 1: PUT user app, 2: PUT queue
    rabbit.fail_write(4, 500, 'user restore refused')  # 3: undo queue (DELETE), 4: undo user (PUT hash)
    res = run_fail(definitions.main, present(defs))
    assert res['changed'] is True and res['rollback']['complete'] is False
    assert res['rollback']['failed'] == [{'object': "update user 'app' (password)",
                                          'left': 'changed (password) and not put back',
                                          'error': res['rollback']['failed'][0]['error']}]
    assert 'user restore refused' in res['rollback']['failed'][0]['error']
    assert "still changed: update user 'app' (password)" in res['msg']
    after = json.loads(export(tmp_path, 'after.json'))
    # exactly what is reported is left: the password hash of 'app', nothing else
    app_before = [u for u in before['users'] if u['name'] == 'app'][0]
    app_after = [u for u in after['users'] if u['name'] == 'app'][0]
    assert app_before['password_hash'] != app_after['password_hash']
    app_after['password_hash'] = app_before['password_hash']
    assert after == before


def test_password_restored_from_the_stored_hash(rabbit, tmp_path):
    baseline(rabbit)
    old_hash = rabbit.users['app']['password_hash']
    defs = {'users': [{'name': 'app', 'password': 'n3w'}], 'queues': [{'vhost': VH, 'name': 'extra'}]}
    rabbit.fail_write(2)
    run_fail(definitions.main, present(defs))
    restore = [b for m, p, b in rabbit.calls if m == 'PUT' and p == '/api/users/app'][-1]
    assert restore['password_hash'] == old_hash and 'password' not in restore


def test_404_during_apply_names_the_missing_exchange(rabbit, monkeypatch):
    rabbit.exchanges[('/', 'ex')] = {'name': 'ex', 'vhost': '/', 'type': 'direct', 'durable': True,
                                     'auto_delete': False, 'internal': False, 'arguments': {}}
    real = definitions.current_model

    def snapshot_then_someone_deletes_the_exchange(client):
        model = real(client)
        del rabbit.exchanges[('/', 'ex')]
        return model
    monkeypatch.setattr(definitions, 'current_model', snapshot_then_someone_deletes_the_exchange)
    res = run_fail(definitions.main, present({
        'queues': [{'vhost': '/', 'name': 'q'}],
        'bindings': [{'vhost': '/', 'source': 'ex', 'destination': 'q', 'destination_type': 'queue'}]}))
    assert "exchange 'ex' does not exist in vhost '/'" in res['msg']
    assert "vhost '/' does not exist" not in res['msg']
    assert ('/', 'q') not in rabbit.queues and res['changed'] is False   # the queue was rolled back


# -- 3. no self-lock-out ------------------------------------------------------------------------------------

def test_removing_the_login_users_administrator_tag_is_refused(rabbit):
    res = run_fail(definitions.main, present({'users': [{'name': 'admin', 'tags': []}]}))
    assert "refused: the set gives the login user 'admin' the tags []" in res['msg']
    assert rabbit.writes() == [] and rabbit.users['admin']['tags'] == ['administrator']


def test_login_users_password_with_other_changes_is_refused(rabbit):
    res = run_fail(definitions.main, present({'users': [{'name': 'admin', 'password': 'other', 'tags': ['administrator']}],
                                              'queues': [{'vhost': '/', 'name': 'q'}]}))
    assert 'changes the password of the login user' in res['msg'] and 'run of its own' in res['msg']
    assert rabbit.writes() == [] and rabbit.logins['admin'] == 'secret'


def test_login_users_password_alone_is_applied(rabbit):
    res = run_ok(definitions.main, present({'users': [{'name': 'admin', 'password': 'other'}]}))
    assert res['changes'] == ["update user 'admin' (password)"] and rabbit.logins['admin'] == 'other'


def test_narrowing_the_login_users_own_permission_is_refused(rabbit):
    defs = full_set()
    defs['permissions'][1]['configure'] = '^only-this$'
    res = run_fail(definitions.main, present(defs))
    assert "refused: the set gives the login user 'admin' the permission" in res['msg']
    assert "configure access to" in res['msg'] and rabbit.writes() == []


def test_prune_keeps_the_login_user_and_its_permissions(rabbit):
    res = run_ok(definitions.main, present({'vhosts': [{'name': '/'}]}, prune=True, prune_force=True))
    assert 'admin' in rabbit.users and ('/', 'admin') in rabbit.permissions
    assert not any("'admin'" in c for c in res['deletions'])


# -- 4. concurrency ----------------------------------------------------------------------------------------

NEW_VHOST_SET = {'vhosts': [{'name': 'orders'}], 'exchanges': [{'vhost': 'orders', 'name': 'ev', 'type': 'topic'}],
                 'queues': [{'vhost': 'orders', 'name': 'q'}],
                 'bindings': [{'vhost': 'orders', 'source': 'ev', 'destination': 'q', 'destination_type': 'queue'}]}


def test_new_vhost_gets_the_login_user_permission(rabbit):
    res = run_ok(definitions.main, present(NEW_VHOST_SET))
    assert ("create permission of user 'admin' in vhost 'orders' (login user, needed to declare objects in the vhost)"
            in res['changes'])
    assert rabbit.permissions[('orders', 'admin')]['configure'] == '.*'
    assert ('PUT', '/api/permissions/orders/admin') in rabbit.writes()
    assert run_ok(definitions.main, present(NEW_VHOST_SET))['changed'] is False


def test_the_sets_own_login_permission_wins(rabbit):
    defs = dict(NEW_VHOST_SET, permissions=[{'user': 'admin', 'vhost': 'orders', 'configure': '^(ev|q)$',
                                             'write': '.*', 'read': '.*'}])
    res = run_ok(definitions.main, present(defs))
    assert rabbit.permissions[('orders', 'admin')]['configure'] == '^(ev|q)$'
    assert not any('login user, needed' in c for c in res['changes'])


def test_two_runs_that_meet_both_succeed(rabbit):
    """Run A plans against the cluster before run B, then writes after B has applied the same set."""
    empty = definitions.current_model(rabbitmq_api.RabbitMQClient(dict(API)))
    run_ok(definitions.main, present(NEW_VHOST_SET))                     # run B, complete
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(definitions, 'current_model', lambda client: empty)
        res = run_ok(definitions.main, present(NEW_VHOST_SET))           # run A, planned before B
    assert res['changed'] is True
    assert run_ok(definitions.main, present(NEW_VHOST_SET))['changed'] is False
    assert len([b for b in rabbit.bindings if b['vhost'] == 'orders']) == 1


def test_a_write_that_races_a_permission_grant_is_retried(rabbit):
    # writes: 1 PUT vhost, 2 PUT permission, 3 PUT exchange (refused once: permission not visible yet)
    rabbit.fail_write(3, 401, 'access to vhost refused')
    res = run_ok(definitions.main, present(NEW_VHOST_SET))
    assert res['changed'] is True and ('orders', 'ev') in rabbit.exchanges


# -- 5. error messages ---------------------------------------------------------------------------------

@pytest.mark.parametrize('option', ['ca_cert', 'client_cert'])
def test_missing_tls_file_fails_at_once_naming_it(rabbit, tmp_path, option):
    args = dict(API, state='exported', dest=str(tmp_path / 'x.json'))
    args[option] = str(tmp_path / 'missing.pem')
    if option == 'client_cert':
        args['client_key'] = str(tmp_path / 'missing.key')
    res = run_fail(definitions.main, args)
    assert "%s file '%s' does not exist" % (option, tmp_path / 'missing.pem') in res['msg']
    assert rabbit.calls == []


def test_unreadable_tls_file_is_named(rabbit, tmp_path, monkeypatch):
    ca = tmp_path / 'ca.pem'
    ca.write_text('x')
    monkeypatch.setattr(rabbitmq_api.os, 'access', lambda path, mode: False)
    res = run_fail(cluster_health.main, dict(API, ca_cert=str(ca)))
    assert "ca_cert file '%s' is not readable" % ca in res['msg'] and rabbit.calls == []


def test_plain_http_against_a_tls_port_says_so(rabbit, monkeypatch):
    def tls_answer(url, **kw):
        rabbit.calls.append(('GET', url, None))
        raise http.client.BadStatusLine('\x15\x03\x03\x00\x02\x02P')
    monkeypatch.setattr(rabbitmq_api, 'open_url', tls_answer)
    res = run_fail(cluster_health.main, dict(API))
    assert 'answered with TLS, not plain HTTP' in res['msg'] and 'https' in res['msg']
    assert '\x15' not in res['msg'] and len(rabbit.calls) == 1   # not retried


@pytest.mark.parametrize('main,option,value', [
    (cluster_health.main, 'timeout', -5),
    (cluster_health.main, 'api_retry_delay', -1.0),
    (cluster_health.main, 'api_retries', -1),
    (definitions.main, 'request_timeout', 0),
])
def test_negative_timeouts_and_delays_are_rejected(rabbit, main, option, value):
    args = dict(API, state='exported', dest='/nonexistent/x.json') if main is definitions.main else dict(API)
    args[option] = value
    res = run_fail(main, args)
    assert option in res['msg'] and rabbit.calls == []


# -- 6. prune, made safer -----------------------------------------------------------------------------------

def test_prune_scope_vhosts_touches_only_the_sets_vhosts(rabbit):
    baseline(rabbit)
    defs = full_set()
    defs['queues'] = defs['queues'][:1]
    defs['bindings'] = []
    res = run_ok(definitions.main, present(defs, prune=True, prune_scope='vhosts'))
    # '/' is one of the set's vhosts, so the stale user's permission there goes; the user itself stays
    assert res['deletions'] == ["delete permission of user 'stale' in vhost '/'",
                                "delete queue 'app dead' in vhost 'team a/b'",
                                "delete binding from exchange 'app/dlx' to queue 'app dead' with routing key 'a b/#' "
                                "in vhost 'team a/b'"]
    assert 'old' in rabbit.vhosts and 'stale' in rabbit.users and ('old', 'old.q') in rabbit.queues


def test_prune_above_the_count_is_refused_and_lists_the_deletions(rabbit):
    baseline(rabbit)
    res = run_fail(definitions.main, present(full_set(), prune=True, prune_max_deletions=2), check_mode=True)
    assert 'refused to prune: 5 deletions, more than prune_max_deletions=2' in res['msg']
    assert "delete vhost 'old'" in res['msg'] and "delete user 'stale'" in res['msg']
    assert "delete vhost 'old'" in res['deletions'] and rabbit.writes() == []
    res = run_ok(definitions.main, present(full_set(), prune=True, prune_max_deletions=2, prune_force=True))
    assert 'old' not in rabbit.vhosts and len(res['deletions']) == 5


def test_prune_above_the_share_is_refused(rabbit):
    baseline(rabbit)
    res = run_fail(definitions.main, present({'vhosts': [{'name': '/'}]}, prune=True))
    assert 'more than prune_max_percent=50' in res['msg'] and rabbit.writes() == []


def test_planned_deletions_are_in_the_result_and_the_diff(rabbit):
    baseline(rabbit)
    res = run_ok(definitions.main, present(full_set(), prune=True), check_mode=True, diff=True)
    assert sorted(res['deletions']) == sorted([
        "delete vhost 'old'", "delete user 'stale'", "delete permission of user 'stale' in vhost '/'",
        "delete policy 'cap' in vhost 'old'", "delete queue 'old.q' in vhost 'old'"])
    assert "delete vhost 'old'" in res['deletions'] and 'old' in res['diff']['before']['vhosts']
    assert 'stale' in res['diff']['before']['users'] and rabbit.writes() == []
