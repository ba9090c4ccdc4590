#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, warren SRE team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: upgrade_plan
short_description: Decide whether a rolling RabbitMQ upgrade may start
description:
  - Checks a requested RabbitMQ (and Erlang) upgrade against RabbitMQ's rolling-upgrade rules
    before any node is touched, and fails with what to do when the upgrade is not supported.
  - Refuses a downgrade, a jump over a release series (for example 3.12 to 4.0, which must go
    through 3.13), a cluster that still runs mixed versions, a new series while stable feature
    flags are disabled, and an Erlang version outside the target release's supported range.
  - Talks to nothing; the caller passes in every node's versions and the disabled flags.
    C(playbooks/upgrade.yml) gathers them.
version_added: 0.1.0
author:
  - warren SRE team (@warren-sre)
options:
  current:
    description:
      - "Every cluster member's installed versions: a dict of node name to a dict with the keys
        C(rabbitmq) and C(erlang). Debian package versions (C(4.0.5-5), C(1:27.3.4.1+dfsg-1)) are
        accepted."
    type: dict
    required: true
  target_rabbitmq:
    description: The RabbitMQ version the upgrade installs.
    type: str
    required: true
  target_erlang:
    description: The Erlang version the nodes run after the upgrade. Omit when Erlang stays as it is.
    type: str
  disabled_stable_flags:
    description: Stable feature flags that are not enabled yet (from M(warren.rabbitmq.feature_flags) in check mode).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - warren.rabbitmq.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    details: Runs anywhere; it only computes.
notes:
  - The rules and the Erlang table live in C(plugins/module_utils/upgrade_path.py), with their sources.
'''

EXAMPLES = r'''
- name: Refuse unsupported upgrades before touching a node
  warren.rabbitmq.upgrade_plan:
    current:
      rabbit@mq-1: {rabbitmq: "3.13.7", erlang: "26.2.5"}
      rabbit@mq-2: {rabbitmq: "3.13.7", erlang: "26.2.5"}
      rabbit@mq-3: {rabbitmq: "3.13.7", erlang: "26.2.5"}
    target_rabbitmq: "4.0.5"
    target_erlang: "27.3.4"
    disabled_stable_flags: []
  run_once: true
  delegate_to: localhost
'''

RETURN = r'''
kind:
  description: C(patch), C(minor), C(major), or C(reinstall) (the same version again).
  returned: success
  type: str
  sample: minor
from:
  description: The version the cluster runs now.
  returned: success
  type: str
  sample: 3.13.7
to:
  description: The version the upgrade installs.
  returned: success
  type: str
  sample: 4.0.5
nodes:
  description: The cluster members, in the order the upgrade takes them.
  returned: success
  type: list
  elements: str
notes:
  description: Things to know that do not stop the upgrade (for example flags to enable afterwards).
  returned: success
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.warren.rabbitmq.plugins.module_utils.upgrade_path import UpgradeRefused, plan


def main():
    module = AnsibleModule(
        argument_spec=dict(
            current=dict(type='dict', required=True),
            target_rabbitmq=dict(type='str', required=True),
            target_erlang=dict(type='str'),
            disabled_stable_flags=dict(type='list', elements='str', default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = plan(p['current'], p['target_rabbitmq'], p['target_erlang'], p['disabled_stable_flags'])
    except UpgradeRefused as exc:
        module.fail_json(msg='upgrade refused: %s' % exc)
    except ValueError as exc:
        module.fail_json(msg='cannot read a version: %s' % exc)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
