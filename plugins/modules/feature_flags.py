#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: feature_flags
short_description: Enable RabbitMQ feature flags after an upgrade
description:
  - Enables the named feature flags, or every stable flag that is still disabled (O(names=[all])),
    through C(PUT /api/feature-flags/<name>/enable). Flags are enabled cluster-wide.
  - Feature flags cannot be disabled once enabled, so there is no C(state=absent).
  - Names are checked against the flags the cluster knows before anything is enabled.
    Experimental flags are refused unless O(allow_experimental=true).
  - Supports check mode and diff mode.
version_added: 0.1.0
author:
  - warren SRE team (@warren-sre)
options:
  names:
    description:
      - Flags to enable. V(all) stands for every flag whose stability is C(stable) (experimental
        flags are never included in V(all)).
    type: list
    elements: str
    required: true
    aliases: [name]
  allow_experimental:
    description: Allow enabling flags whose stability is C(experimental) (for example C(khepri_db) on 4.0).
    type: bool
    default: false
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
  - Enable flags only once every node of the cluster runs the new version.
  - Needs a user with the C(administrator) tag.
'''

EXAMPLES = r'''
- name: After upgrading every node, enable all stable feature flags
  warren.rabbitmq.feature_flags:
    names: [all]
    url: https://rmq1.example.net:15671
    ca_cert: /etc/rabbitmq/tls/ca.pem
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
  run_once: true

- name: Enable one flag
  warren.rabbitmq.feature_flags:
    names: [detailed_queues_endpoint]
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
'''

RETURN = r'''
enabled:
  description: Flags this task enabled (or would enable, in check mode).
  returned: always
  type: list
  elements: str
  sample: [detailed_queues_endpoint]
feature_flags:
  description: Every flag's state after the task (in check mode, as it would be).
  returned: always
  type: dict
  sample: {detailed_queues_endpoint: enabled, khepri_db: disabled}
'''

from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_api import (
    api_module,
    api_path,
    run_module,
)


def run(module, client):
    p = module.params
    flags = dict((f['name'], f) for f in client.get(api_path('feature-flags')) or [])
    names = list(dict.fromkeys(n.strip() for n in p['names'] if n and n.strip()))
    if not names:
        module.fail_json(msg='names must list at least one flag (or all)')

    wanted = []
    for name in names:
        if name == 'all':
            wanted.extend(sorted(n for n, f in flags.items() if f.get('stability') == 'stable'))
            continue
        if name not in flags:
            module.fail_json(msg="unknown feature flag '%s'; this cluster knows: %s" % (name, ', '.join(sorted(flags))))
        if flags[name].get('stability') == 'experimental' and not p['allow_experimental']:
            module.fail_json(msg="feature flag '%s' is experimental; set allow_experimental=true to enable it" % name)
        wanted.append(name)
    wanted = list(dict.fromkeys(wanted))

    to_enable = [n for n in wanted if flags[n].get('state') != 'enabled']
    before = dict((n, f.get('state')) for n, f in flags.items())
    after = dict(before)
    for name in to_enable:
        after[name] = 'enabled'
        if not module.check_mode:
            client.put(api_path('feature-flags', name, 'enable'), {})
    if to_enable and not module.check_mode:
        after = dict((f['name'], f.get('state')) for f in client.get(api_path('feature-flags')) or [])
        not_enabled = [n for n in to_enable if after.get(n) != 'enabled']
        if not_enabled:
            module.fail_json(msg='RabbitMQ accepted but did not enable: %s' % ', '.join(not_enabled),
                             changed=True, enabled=to_enable, feature_flags=after)

    result = dict(changed=bool(to_enable), enabled=to_enable, feature_flags=after)
    if module._diff:
        result['diff'] = dict(before=dict((n, before[n]) for n in wanted), after=dict((n, after[n]) for n in wanted))
    return result


def main():
    module = api_module(dict(
        names=dict(type='list', elements='str', required=True, aliases=['name']),
        allow_experimental=dict(type='bool', default=False),
    ))
    run_module(module, run)


if __name__ == '__main__':
    main()
