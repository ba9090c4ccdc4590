#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_filter
short_description: Read a definitions backup for a restore - is the cluster blank, and what does a selective restore apply
description:
  - O(action=foreign) compares the cluster's current definitions (O(current), an export) with a
    backup (O(src)) and lists the objects the cluster holds that are in neither the backup, nor a
    freshly started node, nor O(allowed) (what deploying the cluster creates by itself, such as
    the inventory's C(rabbitmq_definitions)). An empty list means the cluster is blank enough for
    a wholesale import. It reports and never fails on what it finds; the playbook decides.
  - O(action=subset) writes to O(dest) the part of the backup that restores one vhost
    (O(vhost)), one user (O(user)) or one policy (O(policy) in O(policy_vhost)), for
    M(warren.rabbitmq.definitions) with O(warren.rabbitmq.definitions#module:state=present), which creates or updates
    exactly those objects and touches nothing else. A vhost comes back with everything scoped
    to it (permissions, topic permissions, parameters, policies, exchanges, queues, bindings)
    and with the users its permissions name that the cluster no longer has; users that still
    exist are left alone.
  - Supports check mode (nothing is written).
version_added: 0.2.0
author:
  - warren SRE team (@warren-sre)
options:
  action:
    description: What to do; see the description.
    type: str
    required: true
    choices: [foreign, subset]
  src:
    description: The backup, as plain JSON (M(warren.rabbitmq.backup_store) O(warren.rabbitmq.backup_store#module:action=select) writes it).
    type: path
    required: true
  current:
    description: An export of the cluster now (M(warren.rabbitmq.definitions) O(warren.rabbitmq.definitions#module:state=exported)).
    type: path
    required: true
  allowed:
    description: With O(action=foreign), a definitions document of objects that do not count as foreign.
    type: dict
    default: {}
  login_user:
    description: With O(action=foreign), the deployment's admin user; it and its permissions do not count.
    type: str
  ignore_vhosts:
    description:
      - With O(action=foreign), vhosts whose content does not count (and which do not count
        themselves), such as the canary's vhost, where the canary declares its own queues.
    type: list
    elements: str
    default: []
  vhost:
    description: With O(action=subset), the vhost to restore.
    type: str
  user:
    description: With O(action=subset), the user to restore.
    type: str
  policy:
    description: With O(action=subset), the policy to restore (in O(policy_vhost)).
    type: str
  policy_vhost:
    description: The vhost of O(policy).
    type: str
    default: /
  dest:
    description: With O(action=subset), where to write the subset (mode C(0600)).
    type: path
seealso:
  - module: warren.rabbitmq.backup_store
  - module: warren.rabbitmq.definitions
'''

EXAMPLES = r'''
- name: Is the cluster blank (only what site.yml creates)?
  warren.rabbitmq.backup_filter:
    action: foreign
    src: /var/tmp/warren-restore/backup.json
    current: /var/tmp/warren-restore/current.json
    allowed: "{{ rabbitmq_definitions }}"
    login_user: admin
  register: blank

- name: The vhost "orders" as it was in the backup
  warren.rabbitmq.backup_filter:
    action: subset
    src: /var/tmp/warren-restore/backup.json
    current: /var/tmp/warren-restore/current.json
    vhost: orders
    dest: /var/tmp/warren-restore/orders.json
'''

RETURN = r'''
foreign:
  description: Objects the cluster holds that are not in the backup, a fresh node or O(allowed).
  returned: action is foreign
  type: list
  elements: str
  sample: ["queue (vhost 'orders', name 'orders.new')"]
restores:
  description: The objects in the subset.
  returned: action is subset
  type: list
  elements: str
  sample: ["vhost (name 'orders')", "queue (vhost 'orders', name 'orders.created')"]
dest:
  description: The subset file.
  returned: action is subset
  type: str
'''

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.warren.rabbitmq.plugins.module_utils.backup_defs import foreign_objects, subset
from ansible_collections.warren.rabbitmq.plugins.module_utils.backup_store import (
    BackupError,
    atomic_write,
    load_definitions,
    run_module,
)


def run(module):
    p = module.params
    backup = load_definitions(p['src'])
    current = load_definitions(p['current'])
    if p['action'] == 'foreign':
        found = foreign_objects(current, backup, p['allowed'], p['login_user'], tuple(p['ignore_vhosts']))
        return dict(changed=False, foreign=found)
    if not p['dest']:
        raise BackupError('action=subset needs dest')
    doc, what = subset(backup, current, vhost=p['vhost'], user=p['user'], policy=p['policy'],
                       policy_vhost=p['policy_vhost'])
    if not module.check_mode:
        parent = os.path.dirname(os.path.abspath(p['dest']))
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o700)
        atomic_write(p['dest'], (json.dumps(doc, indent=2, sort_keys=True) + '\n').encode('utf-8'))
    return dict(changed=True, restores=what, dest=p['dest'])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type='str', required=True, choices=['foreign', 'subset']),
            src=dict(type='path', required=True),
            current=dict(type='path', required=True),
            allowed=dict(type='dict', default={}),
            login_user=dict(type='str'),
            ignore_vhosts=dict(type='list', elements='str', default=[]),
            vhost=dict(type='str'),
            user=dict(type='str'),
            policy=dict(type='str'),
            policy_vhost=dict(type='str', default='/'),
            dest=dict(type='path'),
        ),
        mutually_exclusive=[('vhost', 'user', 'policy')],
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == '__main__':
    main()
