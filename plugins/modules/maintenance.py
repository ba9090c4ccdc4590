#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: maintenance
short_description: Put a RabbitMQ node into maintenance mode (drain) and revive it
description:
  - O(state=drained) puts the node into maintenance mode with C(rabbitmq-upgrade drain) - it
    closes client connections, stops accepting new ones, transfers quorum queue and stream
    leadership to other nodes and is excluded as a leader candidate. For rolling restarts and upgrades.
  - O(state=revived) brings it back with C(rabbitmq-upgrade revive).
  - The current mode is read with C(rabbitmq-diagnostics status --formatter json)
    (C(is_under_maintenance)), so the module is idempotent and supports check mode and diff mode.
  - Runs on the RabbitMQ node itself (the CLI tools need the node's Erlang cookie); it does not
    use the management API.
version_added: 0.1.0
author:
  - warren SRE team (@warren-sre)
options:
  state:
    description: Whether the node should be drained (in maintenance mode) or revived (serving clients).
    type: str
    choices: [drained, revived]
    required: true
  node:
    description:
      - Node name to act on (C(-n) of the CLI tools), for example V(rabbit@rmq1). Defaults to the
        local node.
    type: str
  check_quorum_critical:
    description:
      - Before draining, fail if the node is quorum-critical (C(rabbitmq-diagnostics
        check_if_node_is_quorum_critical)), that is if draining it would leave a quorum queue
        without a majority. Draining anyway risks unavailability.
    type: bool
    default: true
  cli_timeout:
    description: Seconds the CLI tools wait for the node (C(--timeout)).
    type: int
    default: 120
extends_documentation_fragment:
  - warren.rabbitmq.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: posix
    details: The RabbitMQ node itself (it runs the node's CLI tools).
notes:
  - RabbitMQ 4.0.5 offers no management API endpoint to drain or revive a node
    (C(/api/nodes/<node>/maintenance) does not exist), and a drained node suspends all its
    client listeners including the management API's, so its API stops answering until it is
    revived. The API of another node still shows the drained node with C(being_drained=true).
  - Gate the restart that follows a drain on M(warren.rabbitmq.cluster_health) run against
    another node, and the next node's drain on C(all_nodes_running) after the revive.
seealso:
  - module: warren.rabbitmq.cluster_health
'''

EXAMPLES = r'''
- name: Drain this node before restarting it
  warren.rabbitmq.maintenance:
    state: drained

- name: Restart RabbitMQ
  ansible.builtin.systemd_service:
    name: rabbitmq-server
    state: restarted

- name: Serve clients again
  warren.rabbitmq.maintenance:
    state: revived
'''

RETURN = r'''
under_maintenance:
  description: Whether the node is in maintenance mode after the task (in check mode, as it would be).
  returned: always
  type: bool
previous:
  description: Whether the node was in maintenance mode before the task.
  returned: always
  type: bool
cmd:
  description: The CLI command that changed the mode.
  returned: when changed and not in check mode
  type: list
  elements: str
stdout:
  description: Output of that command.
  returned: when changed and not in check mode
  type: str
'''

import json

from ansible.module_utils.basic import AnsibleModule

SBIN_DIRS = ['/usr/sbin', '/usr/lib/rabbitmq/bin', '/usr/local/sbin']


def _cli(module, tool, *args):
    path = module.get_bin_path(tool, required=True, opt_dirs=SBIN_DIRS)
    cmd = [path, '-q', '--timeout', str(module.params['cli_timeout'])]
    if module.params['node']:
        cmd += ['-n', module.params['node']]
    return cmd + list(args)


def under_maintenance(module):
    cmd = _cli(module, 'rabbitmq-diagnostics', 'status', '--formatter', 'json')
    rc, out, err = module.run_command(cmd)
    if rc != 0:
        module.fail_json(msg='cannot read the node status (is RabbitMQ running?): %s' % (err or out).strip(),
                         cmd=cmd, rc=rc)
    try:
        status = json.loads(out)
    except ValueError:
        module.fail_json(msg='rabbitmq-diagnostics status did not print JSON', cmd=cmd, stdout=out)
    if 'is_under_maintenance' not in status:
        module.fail_json(msg='this RabbitMQ version does not report is_under_maintenance (needs 3.8 or later)', cmd=cmd)
    return bool(status['is_under_maintenance'])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', required=True, choices=['drained', 'revived']),
            node=dict(type='str'),
            check_quorum_critical=dict(type='bool', default=True),
            cli_timeout=dict(type='int', default=120),
        ),
        supports_check_mode=True,
    )
    if module.params['cli_timeout'] < 1:
        module.fail_json(msg='cli_timeout must be at least 1')
    want = module.params['state'] == 'drained'
    before = under_maintenance(module)
    changed = before != want
    result = dict(changed=changed, previous=before, under_maintenance=want if changed else before)
    if module._diff:
        result['diff'] = dict(before={'under_maintenance': before}, after={'under_maintenance': result['under_maintenance']})
    if changed and want and module.params['check_quorum_critical']:
        cmd = _cli(module, 'rabbitmq-diagnostics', 'check_if_node_is_quorum_critical')
        rc, out, err = module.run_command(cmd)
        if rc != 0:
            module.fail_json(msg='refusing to drain: the node is quorum-critical, some quorum queues would lose '
                                 'their majority (set check_quorum_critical=false to drain anyway): %s'
                                 % (out + err).strip(), cmd=cmd, rc=rc, **result)
    if changed and not module.check_mode:
        cmd = _cli(module, 'rabbitmq-upgrade', 'drain' if want else 'revive')
        rc, out, err = module.run_command(cmd)
        result.update(cmd=cmd, stdout=out)
        if rc != 0:
            module.fail_json(msg='%s failed: %s' % (' '.join(cmd[-1:]), (err or out).strip()), rc=rc, stderr=err, **result)
        result['under_maintenance'] = under_maintenance(module)
        if result['under_maintenance'] != want:
            module.fail_json(msg='the node did not %s' % ('enter maintenance mode' if want else 'leave maintenance mode'),
                             **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
