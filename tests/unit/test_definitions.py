"""warren.rabbitmq.definitions: present, exported and imported, against the fake management API."""

import hashlib
import json
import os
import stat

import pytest
from fake_rabbit import API, FakeRabbit, rabbit  # noqa: F401  (fixture)
from utils import run_fail, run_ok

from ansible_collections.warren.rabbitmq.plugins.module_utils import rabbitmq_api
from ansible_collections.warren.rabbitmq.plugins.modules import definitions

VH = 'team a/b'


def full_set():
    return {
        'vhosts': [{'name': '/'},
                   {'name': VH, 'default_queue_type': 'quorum', 'description': 'team',
                    'limits': {'max-connections': 100, 'max-queues': '50'}}],
        'users': [{'name': 'app', 'password': 's3cret', 'tags': 'monitoring,management'}],
        'permissions': [{'user': 'app', 'vhost': VH, 'configure': '^app\\.', 'write': '.*', 'read': '.*'},
                        {'user': 'admin', 'vhost': VH, 'configure': '.*', 'write': '.*', 'read': '.*'}],
        'topic_permissions': [{'user': 'app', 'vhost': VH, 'exchange': 'amq.topic', 'write': '^a', 'read': '.*'}],
        'parameters': [{'vhost': VH, 'component': 'shovel', 'name': 'move', 'value': {'src-uri': 'amqp://'}}],
        'global_parameters': [{'name': 'warren_owner', 'value': 'sre'}],
        'policies': [{'vhost': VH, 'name': 'dlx', 'pattern': '^app\\.', 'apply-to': 'quorum_queues',
                      'priority': '1', 'definition': {'delivery-limit': '20', 'dead-letter-exchange': 'app/dlx'}}],
        'operator_policies': [{'vhost': VH, 'name': 'cap', 'pattern': '.*', 'apply-to': 'queues',
                               'definition': {'max-length': 100000}}],
        'exchanges': [{'vhost': VH, 'name': 'app/dlx', 'type': 'fanout'}],
        'queues': [{'vhost': VH, 'name': 'app.orders', 'type': 'quorum'},
                   {'vhost': VH, 'name': 'app dead', 'arguments': {'x-queue-type': 'quorum'}}],
        'bindings': [{'vhost': VH, 'source': 'app/dlx', 'destination': 'app dead', 'destination_type': 'queue',
                      'routing_key': 'a b/#'}],
    }


def present(defs, **kw):
    return dict(API, definitions=defs, **kw)


# -- present -----------------------------------------------------------------------------------

def test_create_everything(rabbit):
    res = run_ok(definitions.main, present(full_set()))
    assert res['changed'] is True
    assert res['summary'] == {'create': 13, 'update': 0, 'delete': 0}
    assert rabbit.vhosts[VH]['default_queue_type'] == 'quorum'
    assert rabbit.vhost_limits[VH] == {'max-connections': 100, 'max-queues': 50}
    assert sorted(rabbit.users['app']['tags']) == ['management', 'monitoring']
    assert rabbit.logins['app'] == 's3cret'
    assert rabbit.permissions[(VH, 'app')]['configure'] == '^app\\.'
    assert (VH, 'app', 'amq.topic') in rabbit.topic_permissions
    assert ('shovel', VH, 'move') in rabbit.parameters
    assert rabbit.global_parameters['warren_owner']['value'] == 'sre'
    assert rabbit.policies[(VH, 'dlx')] == {'pattern': '^app\\.', 'apply-to': 'quorum_queues', 'priority': 1,
                                            'definition': {'delivery-limit': 20, 'dead-letter-exchange': 'app/dlx'}}
    assert (VH, 'cap') in rabbit.operator_policies
    assert rabbit.queues[(VH, 'app.orders')]['arguments'] == {'x-queue-type': 'quorum'}
    assert rabbit.bindings[0]['routing_key'] == 'a b/#'
    assert ('PUT', '/api/queues/team%20a%2Fb/app.orders') in rabbit.writes()
    assert ('POST', '/api/bindings/team%20a%2Fb/e/app%2Fdlx/q/app%20dead') in rabbit.writes()
    assert "create queue 'app dead' in vhost 'team a/b'" in res['changes']
    assert 's3cret' not in json.dumps(res)


def test_second_run_is_a_no_op(rabbit):
    run_ok(definitions.main, present(full_set()))
    rabbit.calls.clear()
    res = run_ok(definitions.main, present(full_set()))
    assert res['changed'] is False and res['changes'] == []
    assert rabbit.writes() == []


def test_check_mode_reports_and_changes_nothing(rabbit):
    res = run_ok(definitions.main, present(full_set()), check_mode=True)
    assert res['changed'] is True and res['summary']['create'] == 13
    assert rabbit.writes() == [] and VH not in rabbit.vhosts


def test_diff_lists_created_changed_and_deleted(rabbit):
    run_ok(definitions.main, present(full_set()))
    defs = full_set()
    defs['users'][0]['password'] = 'n3w'
    defs['queues'] = defs['queues'][:1]
    defs['bindings'] = []
    defs['exchanges'].append({'vhost': VH, 'name': 'extra', 'type': 'topic'})
    res = run_ok(definitions.main, present(defs, prune=True), diff=True, check_mode=True)
    before, after = res['diff']['before'], res['diff']['after']
    assert 'team a/b | extra' in after['exchanges'] and 'exchanges' not in before        # created
    assert before['users']['app']['password_hash'] == '********'                          # changed
    assert after['users']['app']['password'] == '******** (changed)'
    assert 'team a/b | app dead' in before['queues'] and 'queues' not in after           # deleted
    assert "delete queue 'app dead' in vhost 'team a/b'" in res['changes']
    assert 'n3w' not in json.dumps(res)


def test_plain_password_unchanged_is_no_change_and_changed_is_detected(rabbit):
    run_ok(definitions.main, present(full_set()))
    old_hash = rabbit.users['app']['password_hash']
    res = run_ok(definitions.main, present({'users': [{'name': 'app', 'password': 's3cret'}]}))
    assert res['changed'] is False and rabbit.users['app']['password_hash'] == old_hash
    res = run_ok(definitions.main, present({'users': [{'name': 'app', 'password': 'n3w'}]}))
    assert res['changes'] == ["update user 'app' (password)"]
    assert rabbit.logins['app'] == 'n3w'
    assert sorted(rabbit.users['app']['tags']) == ['management', 'monitoring']  # tags kept


def test_sha512_stored_hash_is_checked(rabbit):
    rabbit.add_user('legacy', 'pw', ['monitoring'], algorithm='rabbit_password_hashing_sha512')
    res = run_ok(definitions.main, present({'users': [{'name': 'legacy', 'password': 'pw', 'tags': ['monitoring']}]}))
    assert res['changed'] is False


def test_tag_change_keeps_the_password(rabbit):
    rabbit.add_user('app', 'pw', ['monitoring'])
    old_hash = rabbit.users['app']['password_hash']
    res = run_ok(definitions.main, present({'users': [{'name': 'app', 'tags': []}]}))
    assert res['changes'] == ["update user 'app' (tags)"]
    assert rabbit.users['app']['tags'] == [] and rabbit.users['app']['password_hash'] == old_hash


def test_vhost_default_queue_type_and_limits_change(rabbit):
    run_ok(definitions.main, present(full_set()))
    res = run_ok(definitions.main, present({'vhosts': [{'name': VH, 'default_queue_type': 'stream',
                                                        'limits': {'max-connections': 10}}]}))
    assert res['changes'] == ["update vhost 'team a/b' (default_queue_type, limits)"]
    assert rabbit.vhosts[VH]['default_queue_type'] == 'stream'
    assert rabbit.vhost_limits[VH] == {'max-connections': 10}
    assert ('DELETE', '/api/vhost-limits/team%20a%2Fb/max-queues') in rabbit.writes()
    assert rabbit.vhosts[VH]['description'] == 'team'  # unmanaged field untouched


def test_user_limits(rabbit):
    res = run_ok(definitions.main, present({'users': [{'name': 'u', 'password': 'x', 'limits': {'max-channels': 5}}]}))
    assert res['changed'] and rabbit.users['u']['limits'] == {'max-channels': 5}
    assert run_ok(definitions.main, present({'users': [{'name': 'u', 'password': 'x',
                                                        'limits': {'max-channels': '5'}}]}))['changed'] is False


def test_queue_without_type_uses_vhost_default_and_is_idempotent(rabbit):
    defs = {'vhosts': [{'name': VH, 'default_queue_type': 'quorum'}],
            'permissions': [{'user': 'admin', 'vhost': VH, 'configure': '.*', 'write': '.*', 'read': '.*'}],
            'queues': [{'vhost': VH, 'name': 'plain'}]}
    run_ok(definitions.main, present(defs))
    assert rabbit.queues[(VH, 'plain')]['arguments'] == {'x-queue-type': 'quorum'}
    assert run_ok(definitions.main, present(defs))['changed'] is False


def test_queue_argument_mismatch_fails_with_policy_fix(rabbit):
    rabbit.add_queue('/', 'orders', {'x-queue-type': 'quorum', 'x-delivery-limit': 5})
    res = run_fail(definitions.main, present({'queues': [
        {'vhost': '/', 'name': 'orders', 'arguments': {'x-queue-type': 'quorum', 'x-delivery-limit': '6'}}]}))
    assert "queue 'orders' in vhost '/'" in res['msg']
    assert 'x-delivery-limit: current 5, wanted 6' in res['msg']
    assert 'delivery-limit (for x-delivery-limit) through a policy' in res['msg']
    assert rabbit.writes() == []


def test_queue_type_mismatch_fails_with_migration_fix(rabbit):
    rabbit.add_queue('/', 'orders', qtype='classic')
    res = run_fail(definitions.main, present({'queues': [{'vhost': '/', 'name': 'orders', 'type': 'quorum'}]}))
    assert 'x-queue-type: current "classic", wanted "quorum"' in res['msg']
    assert 'new name' in res['msg'] and 'shovel' in res['msg']
    assert rabbit.writes() == []


def test_exchange_type_mismatch_fails(rabbit):
    rabbit.exchanges[('/', 'ex')] = {'name': 'ex', 'vhost': '/', 'type': 'direct', 'durable': True,
                                     'auto_delete': False, 'internal': False, 'arguments': {}}
    res = run_fail(definitions.main, present({'exchanges': [{'vhost': '/', 'name': 'ex', 'type': 'topic'}]}))
    assert "exchange 'ex' in vhost '/'" in res['msg'] and 'type: current "direct", wanted "topic"' in res['msg']


def test_prune_deletes_unnamed_objects_but_protects_some(rabbit):
    run_ok(definitions.main, present(full_set()))
    rabbit.add_user('stale', 'x')
    rabbit.permissions[('/', 'stale')] = {'user': 'stale', 'vhost': '/', 'configure': '', 'write': '', 'read': ''}
    rabbit.vhosts['old'] = {'name': 'old', 'description': '', 'tags': [], 'default_queue_type': 'classic'}
    rabbit.add_queue('old', 'q')
    rabbit.topic_permissions[(VH, 'app', 'amq.direct')] = {'user': 'app', 'vhost': VH, 'exchange': 'amq.direct',
                                                          'write': '', 'read': ''}
    rabbit.global_parameters['leftover'] = {'name': 'leftover', 'value': 1}
    defs = full_set()
    defs['bindings'] = []
    res = run_ok(definitions.main, present(defs, prune=True))
    assert res['changed'] is True
    assert 'stale' not in rabbit.users and 'old' not in rabbit.vhosts and 'leftover' not in rabbit.global_parameters
    assert rabbit.bindings == []
    assert (VH, 'app', 'amq.topic') in rabbit.topic_permissions          # put back after the bulk delete
    assert (VH, 'app', 'amq.direct') not in rabbit.topic_permissions
    # protected: login user and its permissions, internal global parameters
    assert 'admin' in rabbit.users and ('/', 'admin') in rabbit.permissions
    assert 'internal_cluster_id' in rabbit.global_parameters and 'cluster_tags' in rabbit.global_parameters
    # the queue in the deleted vhost went with it: no separate DELETE for it
    assert ('DELETE', '/api/queues/old/q') not in rabbit.writes()
    assert ('DELETE', '/api/vhosts/old') in rabbit.writes()
    # binding deleted through its properties_key, encoded once more as a path segment
    assert ('DELETE', '/api/bindings/team%20a%2Fb/e/app%2Fdlx/q/app%20dead/a%2520b%252F%2523') in rabbit.writes()
    rabbit.calls.clear()
    assert run_ok(definitions.main, present(defs, prune=True))['changed'] is False


def test_prune_never_deletes_the_login_user(rabbit):
    res = run_ok(definitions.main, present({'vhosts': [{'name': '/'}]}, prune=True), check_mode=True)
    assert not any('admin' in c for c in res['changes'])


def test_src_file(rabbit, tmp_path):
    src = tmp_path / 'defs.json'
    src.write_text(json.dumps(full_set()))
    assert run_ok(definitions.main, dict(API, src=str(src)))['changed'] is True
    assert run_ok(definitions.main, dict(API, src=str(src)))['changed'] is False


# -- bad input: always fails before any write ------------------------------------------------------

@pytest.mark.parametrize('defs,message', [
    ({'queus': []}, "unknown object type 'queus'"),
    ({'vhosts': {'name': 'x'}}, "'vhosts' must be a list"),
    ({'vhosts': ['x']}, 'vhosts[0] must be a dict'),
    ({'users': [{'tags': []}]}, 'users[0] is missing required field: name'),
    ({'permissions': [{'user': 'admin', 'vhost': '/'}]},
     "permissions[0] (vhost '/', user 'admin') is missing required fields: configure, write, read"),
    ({'permissions': [{'user': 'admin', 'vhost': 'ghost', 'configure': '', 'write': '', 'read': ''}]},
     "refers to vhost 'ghost', which does not exist and is not in the set"),
    ({'permissions': [{'user': 'nobody', 'vhost': '/', 'configure': '', 'write': '', 'read': ''}]},
     "refers to user 'nobody', which does not exist and is not in the set"),
    ({'vhosts': [{'name': 'a'}, {'name': 'a'}]}, "vhosts[1] (name 'a') is a duplicate"),
    ({'vhosts': [{'name': 'a', 'default_queue_type': 'fast'}]}, "default_queue_type 'fast' is not one of"),
    ({'vhosts': [{'name': 'a', 'limits': {'max-cats': 1}}]}, "unknown limit 'max-cats'"),
    ({'vhosts': [{'name': 'a', 'limits': {'max-queues': 'many'}}]}, "limit max-queues must be an integer"),
    ({'users': [{'name': 'u', 'password': 'a', 'password_hash': 'b'}]}, 'give password or password_hash, not both'),
    ({'users': [{'name': 'u', 'hashing_algorithm': 'rot13'}]}, "unknown hashing_algorithm 'rot13'"),
    ({'policies': [{'vhost': '/', 'name': 'p', 'pattern': '.*', 'definition': {}}]}, 'definition must be a non-empty'),
    ({'policies': [{'vhost': '/', 'name': 'p', 'pattern': '.*', 'apply-to': 'topics', 'definition': {'a': 1}}]},
     "apply-to 'topics' is not one of"),
    ({'policies': [{'vhost': '/', 'name': 'p', 'pattern': '.*', 'priority': 'high', 'definition': {'a': 1}}]},
     "priority 'high' is not an integer"),
    ({'queues': [{'vhost': '/', 'name': 'q', 'type': 'lazy'}]}, "queue type 'lazy' is not one of"),
    ({'exchanges': [{'vhost': '/', 'name': 'amq.custom', 'type': 'topic'}]}, "'amq.*' are reserved"),
    ({'bindings': [{'vhost': '/', 'source': 'a', 'destination': 'b', 'destination_type': 'topic'}]},
     "destination_type 'topic' must be queue or exchange"),
    ({'queues': [{'vhost': '/', 'name': 7}]}, 'field name must be a string'),
])
def test_bad_input_fails_before_any_change(rabbit, defs, message):
    res = run_fail(definitions.main, dict(API, definitions=defs))
    assert message in res['msg'], res['msg']
    assert rabbit.writes() == []


def test_top_level_list_in_src_fails(rabbit, tmp_path):
    src = tmp_path / 'list.json'
    src.write_text('[]')
    res = run_fail(definitions.main, dict(API, src=str(src)))
    assert 'definitions must be a JSON object (a dict), got list' in res['msg']


def test_malformed_json_src(rabbit, tmp_path):
    src = tmp_path / 'bad.json'
    src.write_text('{"vhosts": [}')
    res = run_fail(definitions.main, dict(API, src=str(src)))
    assert 'is not valid JSON' in res['msg'] and 'line 1' in res['msg']
    assert rabbit.writes() == []


def test_missing_src(rabbit, tmp_path):
    res = run_fail(definitions.main, dict(API, src=str(tmp_path / 'nope.json')))
    assert 'cannot read src' in res['msg']


def test_permission_for_vhost_in_the_same_set_is_fine(rabbit):
    res = run_ok(definitions.main, present({
        'vhosts': [{'name': 'new'}], 'users': [{'name': 'u', 'password': 'p'}],
        'permissions': [{'user': 'u', 'vhost': 'new', 'configure': '.*', 'write': '.*', 'read': '.*'}]}))
    assert res['changed'] and ('new', 'u') in rabbit.permissions


def test_prune_reference_to_a_vhost_prune_would_delete(rabbit):
    rabbit.vhosts['old'] = {'name': 'old', 'description': '', 'tags': [], 'default_queue_type': 'classic'}
    res = run_fail(definitions.main, present({
        'vhosts': [{'name': '/'}],
        'policies': [{'vhost': 'old', 'name': 'p', 'pattern': '.*', 'definition': {'max-length': 1}}]}, prune=True))
    assert "refers to vhost 'old'" in res['msg'] and 'prune would delete it' in res['msg']
    assert rabbit.writes() == []


def test_login_user_without_permission_in_vhost_fails_early(rabbit):
    rabbit.vhosts['other'] = {'name': 'other', 'description': '', 'tags': [], 'default_queue_type': 'classic'}
    res = run_fail(definitions.main, present({'queues': [{'vhost': 'other', 'name': 'q'}]}))
    assert "login user 'admin' has no permissions in vhost 'other'" in res['msg']
    assert rabbit.writes() == []


def test_state_needs_a_source(rabbit):
    res = run_fail(definitions.main, dict(API))
    assert 'src' in res['msg'] and 'definitions' in res['msg']


# -- exported ----------------------------------------------------------------------------------

def test_export_is_sorted_stable_0600_with_counts_and_checksum(rabbit, tmp_path):
    run_ok(definitions.main, present(full_set()))
    dest = tmp_path / 'backup' / 'defs.json'
    res = run_ok(definitions.main, dict(API, state='exported', dest=str(dest)))
    assert res['changed'] is True
    data = dest.read_bytes()
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(dest.parent).st_mode) == 0o700
    assert res['checksum'] == hashlib.sha256(data).hexdigest()
    doc = json.loads(data)
    assert [v['name'] for v in doc['vhosts']] == ['/', VH]                     # fake lists them reversed
    assert [u['name'] for u in doc['users']] == ['admin', 'app']
    assert doc['users'][1]['tags'] == ['management', 'monitoring']
    assert res['counts']['queues'] == 2 and res['counts']['vhosts'] == 2 and res['counts']['bindings'] == 1
    assert data.decode().endswith('}\n') and list(doc) == sorted(doc)
    again = run_ok(definitions.main, dict(API, state='exported', dest=str(dest)))
    assert again['changed'] is False and dest.read_bytes() == data and again['checksum'] == res['checksum']


def test_export_changes_when_cluster_changes_and_check_mode_does_not_write(rabbit, tmp_path):
    dest = tmp_path / 'defs.json'
    run_ok(definitions.main, dict(API, state='exported', dest=str(dest)))
    before = dest.read_bytes()
    rabbit.add_user('new', 'pw')
    res = run_ok(definitions.main, dict(API, state='exported', dest=str(dest)), check_mode=True, diff=True)
    assert res['changed'] is True and dest.read_bytes() == before
    assert '"new"' in res['diff']['after'] and '"new"' not in res['diff']['before']
    assert run_ok(definitions.main, dict(API, state='exported', dest=str(dest)))['changed'] is True


def test_export_fixes_file_mode(rabbit, tmp_path):
    dest = tmp_path / 'defs.json'
    run_ok(definitions.main, dict(API, state='exported', dest=str(dest)))
    os.chmod(dest, 0o644)
    assert run_ok(definitions.main, dict(API, state='exported', dest=str(dest)))['changed'] is True
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600


def test_export_strip_metadata(rabbit, tmp_path):
    dest = tmp_path / 'defs.json'
    run_ok(definitions.main, dict(API, state='exported', dest=str(dest), strip_metadata=True))
    doc = json.loads(dest.read_text())
    assert 'rabbit_version' not in doc and 'original_cluster_name' not in doc and 'users' in doc


def test_export_needs_dest(rabbit):
    res = run_fail(definitions.main, dict(API, state='exported'))
    assert 'dest' in res['msg']


# -- imported ----------------------------------------------------------------------------------

def _export(tmp_path, name):
    dest = tmp_path / name
    run_ok(definitions.main, dict(API, state='exported', dest=str(dest)))
    return dest


def test_import_into_a_wiped_node_gives_a_byte_identical_export(rabbit, tmp_path, monkeypatch):
    run_ok(definitions.main, present(full_set()))
    original = _export(tmp_path, 'original.json')

    wiped = FakeRabbit()
    monkeypatch.setattr(rabbitmq_api, 'open_url', wiped.open_url)
    safety = tmp_path / 'safety.json'
    res = run_ok(definitions.main, dict(API, state='imported', src=str(original), safety_export=str(safety)))
    assert res['changed'] is True and res['safety_export'] == str(safety)
    assert stat.S_IMODE(os.stat(safety).st_mode) == 0o600
    assert [u['name'] for u in json.loads(safety.read_text())['users']] == ['admin']  # the state before
    assert ('POST', '/api/definitions') in wiped.writes()
    assert res['auto_permissions_removed'] == []  # admin's permission in 'team a/b' is in the file
    assert _export(tmp_path, 'reexport.json').read_bytes() == original.read_bytes()

    wiped.calls.clear()
    res = run_ok(definitions.main, dict(API, state='imported', src=str(original)))
    assert res['changed'] is False and wiped.writes() == []


def test_import_takes_back_the_automatic_permission(rabbit, tmp_path):
    src = tmp_path / 'in.json'
    src.write_text(json.dumps({'vhosts': [{'name': 'restored'}]}))
    res = run_ok(definitions.main, dict(API, state='imported', src=str(src), safety_export=str(tmp_path / 's.json')))
    assert res['auto_permissions_removed'] == ['restored']
    assert ('restored', 'admin') not in rabbit.permissions and 'restored' in rabbit.vhosts


def test_import_hashes_plain_passwords(rabbit, tmp_path):
    res = run_ok(definitions.main, dict(API, state='imported', safety_export=str(tmp_path / 's.json'),
                                        definitions={'users': [{'name': 'u', 'password': 'pw', 'tags': 'a,b'}]}))
    assert res['changed'] is True
    posted = [b for m, p, b in rabbit.calls if m == 'POST'][0]
    assert 'password' not in posted['users'][0] and posted['users'][0]['tags'] == ['a', 'b']
    assert 'pw' not in json.dumps(res)


def test_import_check_mode(rabbit, tmp_path):
    safety = tmp_path / 's.json'
    res = run_ok(definitions.main, dict(API, state='imported', definitions=full_set(), safety_export=str(safety)),
                 check_mode=True)
    assert res['changed'] is True and rabbit.writes() == [] and not safety.exists()


def test_import_verification_failure_names_the_safety_file(rabbit, tmp_path, monkeypatch):
    original = rabbit.import_definitions

    def lossy(doc):
        doc = dict(doc, queues=[])
        original(doc)
    monkeypatch.setattr(rabbit, 'import_definitions', lossy)
    safety = tmp_path / 's.json'
    res = run_fail(definitions.main, dict(API, state='imported', definitions=full_set(), safety_export=str(safety)))
    assert "create queue 'app.orders' in vhost 'team a/b'" in res['msg']
    assert str(safety) in res['msg'] and safety.exists()


def test_import_rejects_bad_input_before_the_safety_export(rabbit, tmp_path):
    safety = tmp_path / 's.json'
    res = run_fail(definitions.main, dict(API, state='imported', definitions={'bogus': []},
                                          safety_export=str(safety)))
    assert "unknown object type 'bogus'" in res['msg'] and not safety.exists() and rabbit.writes() == []
