#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: cluster_health
short_description: Report RabbitMQ cluster health and wait until it is healthy
description:
  - Reads the cluster's state from the management API and returns it - nodes and which of them
    run, network partitions, resource alarms, whether the node behind the API is quorum-critical,
    quorum queues without an elected leader or without a majority of members online, RabbitMQ and
    Erlang versions, feature flags and the cluster name.
  - With O(wait_for) it polls every O(delay) seconds until all the named conditions hold, and
    fails after O(timeout) seconds naming each condition that still fails and why. Rolling
    restarts and failure drills gate on this.
  - While a node restarts the API may not answer; during a wait that counts as a failing
    condition (C(api_reachable)) and the module keeps polling.
  - Read-only; never reports a change. Check mode runs the same checks.
version_added: 0.1.0
author:
  - warren SRE team (@warren-sre)
options:
  wait_for:
    description:
      - Conditions to wait for. Without it the module only reports.
      - V(all_nodes_running) - every cluster member listed by C(/api/nodes) runs, and at least
        O(expected_nodes) of them if that is set.
      - V(no_alarms) - no memory or disk alarm anywhere (C(/api/health/checks/alarms)).
      - V(no_partitions) - no node reports a network partition.
      - V(quorum_queues_have_leaders) - every quorum queue has an elected leader on a running node
        and a majority of its members online.
      - V(not_quorum_critical) - stopping the node behind the API would not make any quorum queue
        lose its majority (C(/api/health/checks/node-is-quorum-critical)); ask this of the node
        you are about to restart.
    type: list
    elements: str
    choices: [all_nodes_running, no_alarms, no_partitions, quorum_queues_have_leaders, not_quorum_critical]
    default: []
  expected_nodes:
    description: How many running nodes the cluster must have for V(all_nodes_running) to hold.
    type: int
  timeout:
    description: Seconds to wait for the conditions in O(wait_for).
    type: int
    default: 300
  delay:
    description: Seconds between two polls while waiting.
    type: int
    default: 5
extends_documentation_fragment:
  - warren.rabbitmq.api
  - warren.rabbitmq.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    details: Any host that reaches the management API over HTTP(S). Read-only, so there is nothing to diff.
notes:
  - RabbitMQ 4.0 has no C(/api/health/checks/quorum-queues-without-elected-leaders) endpoint
    (it came later), so leaders are read from C(/api/queues) (C(leader), C(members), C(online)).
  - Needs a user with at least the C(monitoring) tag; the quorum-critical check needs C(administrator)
    on some versions.
seealso:
  - module: warren.rabbitmq.maintenance
'''

EXAMPLES = r'''
- name: Report cluster health
  warren.rabbitmq.cluster_health:
    url: https://rmq1.example.net:15671
    ca_cert: /etc/rabbitmq/tls/ca.pem
    login_user: monitor
    login_password: "{{ rabbitmq_monitor_password }}"
  register: health

- name: Before restarting this node, make sure the cluster can lose it
  warren.rabbitmq.cluster_health:
    host: "{{ inventory_hostname }}"
    scheme: https
    ca_cert: /etc/rabbitmq/tls/ca.pem
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
    wait_for: [all_nodes_running, not_quorum_critical, no_alarms]
    expected_nodes: 3
    timeout: 600

- name: After the restart, wait until the cluster is whole again
  warren.rabbitmq.cluster_health:
    host: "{{ inventory_hostname }}"
    scheme: https
    ca_cert: /etc/rabbitmq/tls/ca.pem
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
    wait_for: [all_nodes_running, no_partitions, no_alarms, quorum_queues_have_leaders]
    expected_nodes: 3
    timeout: 600
    delay: 5
'''

RETURN = r'''
healthy:
  description: Whether every condition in O(wait_for) holds (true when O(wait_for) is empty and the API answered).
  returned: always
  type: bool
conditions:
  description: Every known condition and whether it holds at the last poll.
  returned: always
  type: dict
  sample: {all_nodes_running: true, no_alarms: true, no_partitions: true,
           quorum_queues_have_leaders: true, not_quorum_critical: true}
failing:
  description: The conditions from O(wait_for) that do not hold, each with the reason.
  returned: always
  type: list
  elements: str
cluster_name:
  description: The cluster's name.
  returned: when the API answered
  type: str
rabbitmq_version:
  description: RabbitMQ version of the node behind the API.
  returned: when the API answered
  type: str
erlang_version:
  description: Erlang/OTP version of the node behind the API.
  returned: when the API answered
  type: str
nodes:
  description: Cluster members with C(name), C(running), C(partitions), C(mem_alarm), C(disk_free_alarm), C(being_drained), C(uptime).
  returned: when the API answered
  type: list
  elements: dict
running_nodes:
  description: Names of the running members.
  returned: when the API answered
  type: list
  elements: str
partitions:
  description: For each node that sees a partition, the nodes it cannot reach.
  returned: when the API answered
  type: dict
alarms:
  description: Active resource alarms, as C(<node>:<resource>) strings.
  returned: when the API answered
  type: list
  elements: str
quorum_critical:
  description: Whether the node behind the API is quorum-critical; C(quorum_critical_queues) lists the queues.
  returned: when the API answered
  type: bool
quorum_critical_queues:
  description: Queues (C(<vhost>/<name>)) that would lose their majority without the node behind the API.
  returned: when the API answered
  type: list
  elements: str
quorum_queues_without_leader:
  description: Quorum queues (C(<vhost>/<name>)) without an elected leader, or whose leader is not running.
  returned: when the API answered
  type: list
  elements: str
quorum_queues_without_majority:
  description: Quorum queues (C(<vhost>/<name>)) with fewer than a majority of members online.
  returned: when the API answered
  type: list
  elements: str
feature_flags:
  description: Feature flag name to state (C(enabled), C(disabled), C(state_changing)).
  returned: when the API answered
  type: dict
attempts:
  description: How many times the state was read.
  returned: always
  type: int
elapsed:
  description: Seconds spent.
  returned: always
  type: float
'''

import time

from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_api import (
    RabbitMQAPIError,
    api_module,
    api_path,
    run_module,
)

CONDITIONS = ('all_nodes_running', 'no_alarms', 'no_partitions', 'quorum_queues_have_leaders', 'not_quorum_critical')


def _qname(q):
    return '%s/%s' % (q.get('vhost', q.get('virtual_host')), q.get('name'))


def collect(client, retries):
    """Read everything once; raises RabbitMQAPIError when the API does not answer."""
    overview = client.request('GET', api_path('overview'), retries=retries)[1] or {}
    nodes = client.request('GET', api_path('nodes'), retries=retries)[1] or []
    alarms_doc = client.request('GET', api_path('health', 'checks', 'alarms'),
                                answer_statuses=(503,), retries=retries)[1]
    qc_doc = client.request('GET', api_path('health', 'checks', 'node-is-quorum-critical'),
                            answer_statuses=(503,), retries=retries)[1]
    queues_path = api_path('queues', columns='name,vhost,type,leader,members,online,state',
                           disable_stats='true', enable_queue_totals='false')
    queues = client.request('GET', queues_path, retries=retries)[1] or []
    flags = client.request('GET', api_path('feature-flags'), retries=retries)[1] or []

    node_info = []
    for n in sorted(nodes, key=lambda n: n.get('name', '')):
        node_info.append(dict(
            name=n.get('name'), running=bool(n.get('running')), partitions=list(n.get('partitions') or []),
            mem_alarm=bool(n.get('mem_alarm')), disk_free_alarm=bool(n.get('disk_free_alarm')),
            being_drained=bool(n.get('being_drained')), uptime=n.get('uptime')))
    running = [n['name'] for n in node_info if n['running']]

    alarms = set()
    for n in node_info:
        if n['mem_alarm']:
            alarms.add('%s:memory' % n['name'])
        if n['disk_free_alarm']:
            alarms.add('%s:disk' % n['name'])
    alarms_doc = alarms_doc if isinstance(alarms_doc, dict) else {}
    for a in alarms_doc.get('alarms') or []:
        if isinstance(a, dict):
            alarms.add('%s:%s' % (a.get('node'), a.get('resource')))
    if alarms_doc.get('status') == 'failed' and not alarms:
        alarms.add('unknown:%s' % alarms_doc.get('reason', 'alarm in effect'))

    qc_doc = qc_doc if isinstance(qc_doc, dict) else {}
    qc_queues = sorted(_qname(q) for q in qc_doc.get('queues') or [] if isinstance(q, dict))
    no_leader, no_majority = [], []
    for q in queues:
        if q.get('type') != 'quorum':
            continue
        leader = q.get('leader')
        members = q.get('members') or []
        online = q.get('online') or []
        if not leader or leader in ('undefined', '') or leader not in running:
            no_leader.append(_qname(q))
        if members and len(online) < len(members) // 2 + 1:
            no_majority.append(_qname(q))

    return dict(
        cluster_name=overview.get('cluster_name'),
        rabbitmq_version=overview.get('rabbitmq_version') or overview.get('product_version'),
        erlang_version=overview.get('erlang_version'),
        nodes=node_info,
        running_nodes=running,
        partitions=dict((n['name'], n['partitions']) for n in node_info if n['partitions']),
        alarms=sorted(alarms),
        quorum_critical=qc_doc.get('status') == 'failed',
        quorum_critical_queues=qc_queues,
        quorum_queues_without_leader=sorted(no_leader),
        quorum_queues_without_majority=sorted(no_majority),
        feature_flags=dict((f.get('name'), f.get('state')) for f in flags if isinstance(f, dict)),
    )


def evaluate(state, expected_nodes):
    """Return {condition: reason or None}; None means it holds."""
    out = {}
    stopped = [n['name'] for n in state['nodes'] if not n['running']]
    reasons = []
    if stopped:
        reasons.append('not running: %s' % ', '.join(stopped))
    if expected_nodes is not None and len(state['running_nodes']) < expected_nodes:
        reasons.append('%d of %d expected nodes running (%s)' % (
            len(state['running_nodes']), expected_nodes, ', '.join(state['running_nodes']) or 'none'))
    out['all_nodes_running'] = '; '.join(reasons) or None
    out['no_alarms'] = ('alarms in effect: %s' % ', '.join(state['alarms'])) if state['alarms'] else None
    out['no_partitions'] = ('partitions seen: %s' % '; '.join(
        '%s cannot reach %s' % (k, ', '.join(v)) for k, v in sorted(state['partitions'].items()))
        if state['partitions'] else None)
    qq = []
    if state['quorum_queues_without_leader']:
        qq.append('without an elected leader: %s' % ', '.join(state['quorum_queues_without_leader']))
    if state['quorum_queues_without_majority']:
        qq.append('without a majority online: %s' % ', '.join(state['quorum_queues_without_majority']))
    out['quorum_queues_have_leaders'] = '; '.join(qq) or None
    out['not_quorum_critical'] = (
        'the node is quorum-critical for: %s' % (', '.join(state['quorum_critical_queues']) or 'some queues')
        if state['quorum_critical'] else None)
    return out


def run(module, client):
    p = module.params
    sleep, clock = time.sleep, time.time
    wait_for = list(dict.fromkeys(p['wait_for'] or []))
    start = clock()
    deadline = start + max(0, p['timeout'])
    attempts = 0
    state, verdict, api_error = {}, {}, None
    while True:
        attempts += 1
        try:
            # Polling already retries: let one request fail fast instead of retrying inside it.
            state = collect(client, retries=0 if wait_for else None)
            verdict = evaluate(state, p['expected_nodes'])
            api_error = None
        except RabbitMQAPIError as e:
            if not e.transient or not wait_for:
                raise
            api_error = str(e)
        failing = []
        if api_error:
            failing.append('api_reachable: %s' % api_error)
        else:
            failing = ['%s: %s' % (c, verdict[c]) for c in wait_for if verdict.get(c)]
        if not failing or clock() >= deadline:
            break
        sleep(min(p['delay'], max(0, deadline - clock())) or p['delay'])

    result = dict(state)
    result.update(
        changed=False,
        healthy=not failing,
        conditions=dict((c, verdict.get(c) is None) for c in CONDITIONS) if verdict else {},
        failing=failing,
        attempts=attempts,
        elapsed=round(clock() - start, 1),
    )
    if failing:
        result['msg'] = 'cluster not healthy after %ss (%d checks); failing conditions: %s' % (
            p['timeout'], attempts, ' | '.join(failing))
        module.fail_json(**result)
    return result


def main():
    module = api_module(dict(
        wait_for=dict(type='list', elements='str', default=[], choices=list(CONDITIONS)),
        expected_nodes=dict(type='int'),
        timeout=dict(type='int', default=300),
        delay=dict(type='int', default=5),
    ))
    if module.params['delay'] < 1:
        module.fail_json(msg='delay must be at least 1 second')
    if module.params['expected_nodes'] is not None and module.params['expected_nodes'] < 1:
        module.fail_json(msg='expected_nodes must be at least 1')
    run_module(module, run)


if __name__ == '__main__':
    main()
