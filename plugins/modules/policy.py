#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: policy
short_description: Manage RabbitMQ policies and operator policies through the management API
description:
  - Creates, updates or deletes one policy (or operator policy) in one virtual host.
  - Values are normalised before they are compared and sent, so C("10") versus C(10), C("true")
    versus C(true) and a different key order never show as a change. Keys whose values are
    strings by nature (for example C(dead-letter-routing-key), C(overflow), C(max-age)) stay strings.
  - The pattern and the definition are checked before anything is sent - the pattern as a
    regular expression, every key against the policy keys RabbitMQ 4.x accepts, every value
    against its type and range (for example C(max-length) a whole number of at least 0,
    C(overflow) one of C(drop-head), C(reject-publish), C(reject-publish-dlx)). The message names
    the key and what to write instead. The same checks run in M(warren.rabbitmq.definitions).
  - Supports check mode and diff mode.
version_added: 0.1.0
author:
  - warren SRE team (@warren-sre)
options:
  name:
    description: Name of the policy. Any characters are allowed; they are URL-encoded.
    type: str
    required: true
  vhost:
    description: Virtual host of the policy. V(/) and names with spaces or slashes work.
    type: str
    default: /
  state:
    description: Whether the policy should exist.
    type: str
    choices: [present, absent]
    default: present
  operator_policy:
    description:
      - Manage an operator policy (C(/api/operator-policies)) instead of a user policy.
      - Operator policies cap what user policies and clients may set; RabbitMQ accepts only a
        subset of keys in them (for example C(max-length), C(message-ttl), C(delivery-limit)).
    type: bool
    default: false
  pattern:
    description: Regular expression matched against queue or exchange names. Required when O(state=present).
    type: str
  apply_to:
    description: What the policy applies to.
    type: str
    choices: [all, exchanges, queues, classic_queues, quorum_queues, streams]
    default: all
  priority:
    description: Priority; the highest matching policy wins.
    type: int
    default: 0
  definition:
    description: The policy's keys and values. Required and non-empty when O(state=present).
    type: dict
extends_documentation_fragment:
  - warren.rabbitmq.api
  - warren.rabbitmq.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: posix
    details: Any host that reaches the management API over HTTP(S).
notes:
  - Needs a user with the C(policymaker) or C(administrator) tag.
seealso:
  - module: warren.rabbitmq.definitions
'''

EXAMPLES = r'''
- name: Quorum queues in vhost "orders" get a delivery limit and dead lettering
  warren.rabbitmq.policy:
    name: orders-quorum
    vhost: orders
    pattern: "^orders\\."
    apply_to: quorum_queues
    priority: 10
    definition:
      delivery-limit: 20
      dead-letter-exchange: orders.dlx
      dead-letter-strategy: at-least-once
      overflow: reject-publish
    url: https://rmq1.example.net:15671
    ca_cert: /etc/rabbitmq/tls/ca.pem
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"

- name: Cap every queue in "team a/b" at 100000 messages (operator policy)
  warren.rabbitmq.policy:
    name: cap length
    vhost: team a/b
    operator_policy: true
    pattern: ".*"
    apply_to: queues
    definition:
      max-length: 100000
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"

- name: Remove an old policy
  warren.rabbitmq.policy:
    name: ha-all
    vhost: /
    state: absent
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
'''

RETURN = r'''
policy:
  description: The policy as it is after the task (normalised); empty when absent.
  returned: always
  type: dict
  sample:
    name: orders-quorum
    vhost: orders
    pattern: "^orders\\."
    apply-to: quorum_queues
    priority: 10
    definition: {delivery-limit: 20, overflow: reject-publish}
previous:
  description: The policy before the task (normalised); empty when it did not exist.
  returned: always
  type: dict
kind:
  description: C(policy) or C(operator_policy).
  returned: always
  type: str
  sample: policy
'''

from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_api import (
    api_module,
    api_path,
    run_module,
)
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_checks import (
    policy_definition_problems,
    regex_problem,
)
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_values import normalise_mapping, normalise_policy


def _comparable(raw):
    if not raw:
        return {}
    return normalise_policy(raw)


def run(module, client):
    p = module.params
    kind = 'operator_policy' if p['operator_policy'] else 'policy'
    resource = 'operator-policies' if p['operator_policy'] else 'policies'
    vhost, name = p['vhost'], p['name']

    if p['state'] == 'present':
        if not p['pattern']:
            module.fail_json(msg="pattern is required when state=present (policy '%s' in vhost '%s')" % (name, vhost))
        if not p['definition']:
            module.fail_json(msg="definition must be a non-empty dict when state=present (policy '%s')" % name)
        problems = policy_definition_problems(normalise_mapping(p['definition']))
        pattern_problem = regex_problem(p['pattern'])
        if pattern_problem:
            problems.insert(0, 'pattern %s' % pattern_problem)
        if problems:
            module.fail_json(msg="%s '%s' in vhost '%s': %s. RabbitMQ 4.x would reject it; fix the pattern, key or "
                             "value" % (kind.replace('_', ' '), name, vhost, '; '.join(problems)))

    if not client.vhost_exists(vhost):
        if p['state'] == 'absent':  # no vhost, no policy: nothing to delete
            return dict(changed=False, kind=kind, previous={}, policy={})
        module.fail_json(msg="vhost '%s' does not exist" % vhost)
    current = _comparable(client.get(api_path(resource, vhost, name), missing_ok=True, vhost=vhost))

    desired = {}
    if p['state'] == 'present':
        desired = normalise_policy({
            'pattern': p['pattern'], 'apply-to': p['apply_to'],
            'definition': p['definition'], 'priority': p['priority'],
        })

    changed = current != desired
    result = dict(changed=changed, kind=kind, previous=_labelled(current, vhost, name),
                  policy=_labelled(desired, vhost, name))
    if module._diff:
        result['diff'] = dict(before=result['previous'], after=result['policy'],
                              before_header='%s %s/%s' % (kind, vhost, name),
                              after_header='%s %s/%s' % (kind, vhost, name))
    if changed and not module.check_mode:
        if desired:
            client.put(api_path(resource, vhost, name), desired, vhost=vhost)
        else:
            client.delete(api_path(resource, vhost, name), vhost=vhost)
    return result


def _labelled(policy, vhost, name):
    if not policy:
        return {}
    out = dict(policy)
    out.update(name=name, vhost=vhost)
    return out


def main():
    module = api_module(dict(
        name=dict(type='str', required=True),
        vhost=dict(type='str', default='/'),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        operator_policy=dict(type='bool', default=False),
        pattern=dict(type='str'),
        apply_to=dict(type='str', default='all',
                      choices=['all', 'exchanges', 'queues', 'classic_queues', 'quorum_queues', 'streams']),
        priority=dict(type='int', default=0),
        definition=dict(type='dict'),
    ), required_if=[('state', 'present', ('pattern', 'definition'))])
    run_module(module, run)


if __name__ == '__main__':
    main()
