"""warren.rabbitmq.backup_filter: is a cluster blank, and the subset a selective restore applies."""

import copy
import json

import pytest
from utils import run_fail, run_ok

from ansible_collections.warren.rabbitmq.plugins.module_utils import backup_defs as bd
from ansible_collections.warren.rabbitmq.plugins.module_utils.backup_store import BackupError
from ansible_collections.warren.rabbitmq.plugins.modules import backup_filter as module

BACKUP = {
    'rabbitmq_version': '4.0.5',
    'vhosts': [{'name': '/'}, {'name': 'orders'}, {'name': 'billing'}],
    'users': [{'name': 'admin', 'password_hash': 'a', 'tags': ['administrator']},
              {'name': 'orders-app', 'password_hash': 'old', 'tags': []},
              {'name': 'billing-app', 'password_hash': 'b', 'tags': []}],
    'permissions': [
        {'user': 'admin', 'vhost': 'orders', 'configure': '.*', 'write': '.*', 'read': '.*'},
        {'user': 'orders-app', 'vhost': 'orders', 'configure': '.*', 'write': '.*', 'read': '.*'},
        {'user': 'billing-app', 'vhost': 'billing', 'configure': '.*', 'write': '.*', 'read': '.*'},
        {'user': 'orders-app', 'vhost': 'billing', 'configure': '', 'write': '', 'read': '.*'},
    ],
    'topic_permissions': [{'user': 'orders-app', 'vhost': 'orders', 'exchange': 'amq.topic', 'write': '.*', 'read': '.*'}],
    'queues': [{'vhost': 'orders', 'name': 'created', 'durable': True, 'auto_delete': False,
                'arguments': {'x-queue-type': 'quorum'}},
               {'vhost': 'billing', 'name': 'invoices', 'durable': True, 'auto_delete': False, 'arguments': {}}],
    'exchanges': [{'vhost': 'orders', 'name': 'dlx', 'type': 'fanout', 'durable': True, 'auto_delete': False,
                   'internal': False, 'arguments': {}}],
    'bindings': [{'vhost': 'orders', 'source': 'dlx', 'destination': 'created', 'destination_type': 'queue',
                  'routing_key': '', 'arguments': {}}],
    'policies': [{'vhost': 'orders', 'name': 'limits', 'pattern': '.*', 'apply-to': 'queues',
                  'definition': {'max-length': 10}, 'priority': 0},
                 {'vhost': 'billing', 'name': 'limits', 'pattern': '.*', 'apply-to': 'queues',
                  'definition': {'max-length': 99}, 'priority': 0}],
    'parameters': [{'vhost': 'orders', 'component': 'vhost-limits', 'name': 'limits',
                    'value': {'max-queues': 100}}],
    'global_parameters': [{'name': 'cluster_name', 'value': 'warren-lab'},
                          {'name': 'internal_cluster_id', 'value': 'rabbitmq-cluster-id-x'}],
}


def without(doc, **drop):
    """A copy of ``doc`` with objects removed: drop={'vhosts': ['orders'], ...} by name."""
    out = copy.deepcopy(doc)
    for kind, names in drop.items():
        out[kind] = [o for o in out[kind] if o.get('name') not in names]
    return out


def operator_deleted_vhost():
    """The cluster after someone deleted vhost 'orders' and user 'orders-app' by hand."""
    cur = without(BACKUP, vhosts=['orders'], users=['orders-app'])
    for kind in bd.VHOST_SCOPED:
        cur[kind] = [o for o in cur.get(kind, []) if o.get('vhost') != 'orders']
    cur['permissions'] = [p for p in cur['permissions'] if p['user'] != 'orders-app']
    return cur


# -- foreign objects ---------------------------------------------------------------------------

def test_a_fresh_cluster_has_nothing_foreign():
    fresh = {'vhosts': [{'name': '/'}], 'users': [{'name': 'guest'}, {'name': 'admin'}],
             'permissions': [{'vhost': '/', 'user': 'guest'}, {'vhost': '/', 'user': 'admin'}],
             'global_parameters': [{'name': 'cluster_name'}, {'name': 'internal_cluster_id'}]}
    assert bd.foreign_objects(fresh, BACKUP, login_user='admin') == []


def test_objects_the_deployment_creates_are_allowed():
    deployed = {'vhosts': [{'name': '/'}, {'name': 'warren'}], 'users': [{'name': 'warren-app'}],
                'permissions': [{'vhost': 'warren', 'user': 'warren-app'}]}
    allowed = {'vhosts': [{'name': 'warren', 'default_queue_type': 'quorum'}],
               'users': [{'name': 'warren-app', 'password': 'x'}],
               'permissions': [{'vhost': 'warren', 'user': 'warren-app'}]}
    assert bd.foreign_objects(deployed, BACKUP) != []
    assert bd.foreign_objects(deployed, BACKUP, allowed=allowed) == []


def test_a_live_cluster_that_moved_on_is_not_blank():
    live = copy.deepcopy(BACKUP)
    live['queues'].append({'vhost': 'orders', 'name': 'new-since-backup'})
    live['users'].append({'name': 'intruder'})
    assert bd.foreign_objects(live, BACKUP, login_user='admin') == [
        "user (name 'intruder')", "queue (vhost 'orders', name 'new-since-backup')"]


def test_the_canary_vhost_can_be_ignored():
    live = copy.deepcopy(BACKUP)
    live['vhosts'].append({'name': 'warren-canary'})
    live['queues'].append({'vhost': 'warren-canary', 'name': 'warren.canary.node.rmq1'})
    assert len(bd.foreign_objects(live, BACKUP)) == 2
    assert bd.foreign_objects(live, BACKUP, ignore_vhosts=('warren-canary',)) == []


def test_a_standby_federation_link_does_not_make_the_cluster_foreign():
    """A warm standby's link reconnects to a fresh main cluster before the restore and declares
    its own exchange, queue and bindings there (seen in the lab's total-loss drill)."""
    live = copy.deepcopy(BACKUP)
    link = 'federation: warren.dr -> warren-lab-standby'
    live['exchanges'].append({'vhost': 'orders', 'name': link + ' A', 'type': 'x-federation-upstream'})
    live['queues'].append({'vhost': 'orders', 'name': link})
    live['bindings'].append({'vhost': 'orders', 'source': link + ' A', 'destination': link,
                             'destination_type': 'queue', 'routing_key': ''})
    live['bindings'].append({'vhost': 'orders', 'source': 'dlx', 'destination': link + ' A',
                             'destination_type': 'exchange', 'routing_key': 'k'})
    assert bd.foreign_objects(live, BACKUP) == []
    # an operator's own object is still foreign, even next to a link's
    live['exchanges'].append({'vhost': 'orders', 'name': 'federation-like', 'type': 'topic'})
    assert bd.foreign_objects(live, BACKUP) == ["exchange (vhost 'orders', name 'federation-like')"]


def test_bindings_differing_only_in_arguments_are_different_objects():
    live = copy.deepcopy(BACKUP)
    live['bindings'].append(dict(BACKUP['bindings'][0], arguments={'x-match': 'all'}))
    assert bd.foreign_objects(live, BACKUP) == ["binding (vhost 'orders', source 'dlx', destination 'created', "
                                                "destination_type 'queue', routing_key '')"]


# -- subsets -----------------------------------------------------------------------------------

def test_vhost_subset_restores_the_vhost_and_everything_scoped_to_it_only():
    doc, what = bd.subset(BACKUP, operator_deleted_vhost(), vhost='orders')
    assert [v['name'] for v in doc['vhosts']] == ['orders']
    assert all(o['vhost'] == 'orders' for k in bd.VHOST_SCOPED for o in doc.get(k, []))
    assert [q['name'] for q in doc['queues']] == ['created']
    assert doc['parameters'][0]['component'] == 'vhost-limits'
    assert [u['name'] for u in doc['users']] == ['orders-app'], 'the deleted user comes back with its vhost'
    assert sorted((p['user'], p['vhost']) for p in doc['permissions']) == [('admin', 'orders'), ('orders-app', 'orders')]
    assert 'global_parameters' not in doc and 'rabbitmq_version' not in doc
    assert "vhost (name 'orders')" in what and "policy (vhost 'orders', name 'limits')" in what


def test_vhost_subset_leaves_existing_users_alone():
    cur = operator_deleted_vhost()
    cur['users'].append({'name': 'orders-app', 'password_hash': 'changed-since'})
    doc, _ = bd.subset(BACKUP, cur, vhost='orders')
    assert 'users' not in doc, 'a user that still exists keeps its current password'


def test_user_subset_restores_permissions_only_in_existing_vhosts():
    cur = without(BACKUP, users=['orders-app'], vhosts=['billing'])
    doc, _ = bd.subset(BACKUP, cur, user='orders-app')
    assert [u['name'] for u in doc['users']] == ['orders-app']
    assert [(p['user'], p['vhost']) for p in doc['permissions']] == [('orders-app', 'orders')]
    assert len(doc['topic_permissions']) == 1
    assert 'vhosts' not in doc and 'queues' not in doc


def test_policy_subset_is_one_policy_in_one_vhost():
    doc, what = bd.subset(BACKUP, BACKUP, policy='limits', policy_vhost='billing')
    assert doc == {'policies': [BACKUP['policies'][1]]}
    assert what == ["policy (vhost 'billing', name 'limits')"]


@pytest.mark.parametrize('kwargs, message', [
    (dict(vhost='nope'), "vhost 'nope' is not in this backup"),
    (dict(user='nope'), "user 'nope' is not in this backup"),
    (dict(policy='nope', policy_vhost='orders'), "policy 'nope' in vhost 'orders' is not in this backup"),
    (dict(policy='limits', policy_vhost='gone'), "vhost 'gone' of policy 'limits' does not exist"),
    (dict(), 'name exactly one'),
    (dict(vhost='orders', user='admin'), 'name exactly one'),
])
def test_subset_refuses_bad_selections(kwargs, message):
    with pytest.raises(BackupError, match=message):
        bd.subset(BACKUP, BACKUP, **kwargs)


# -- the module --------------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    backup = tmp_path / 'backup.json'
    backup.write_text(json.dumps(BACKUP))
    current = tmp_path / 'current.json'
    current.write_text(json.dumps(operator_deleted_vhost()))
    return str(backup), str(current), tmp_path


def test_module_subset_writes_a_file_for_the_definitions_module(files):
    backup, current, tmp = files
    dest = tmp / 'out' / 'orders.json'
    res = run_ok(module.main, dict(action='subset', src=backup, current=current, vhost='orders', dest=str(dest)))
    assert res['changed'] and json.loads(dest.read_text())['vhosts'] == [{'name': 'orders'}]
    assert (dest.stat().st_mode & 0o777) == 0o600


def test_module_subset_check_mode_writes_nothing(files):
    backup, current, tmp = files
    res = run_ok(module.main, dict(action='subset', src=backup, current=current, vhost='orders',
                                   dest=str(tmp / 'x.json')), check_mode=True)
    assert res['restores'] and not (tmp / 'x.json').exists()


def test_module_foreign_reports_without_failing(files):
    backup, current, _ = files
    res = run_ok(module.main, dict(action='foreign', src=current, current=backup, login_user='admin'))
    assert "vhost (name 'orders')" in res['foreign'] and not res['changed']


def test_module_refuses_a_non_export(files):
    backup, _, tmp = files
    bad = tmp / 'bad.json'
    bad.write_text('{"queues": []}')
    res = run_fail(module.main, dict(action='foreign', src=backup, current=str(bad)))
    assert 'not a RabbitMQ definitions export' in res['msg']
