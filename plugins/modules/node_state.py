#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: node_state
short_description: Read what a RabbitMQ host is - installed, running, blank, and which cluster it sees
description:
  - Reads, on the node itself, everything the C(warren.rabbitmq.rabbitmq) role decides on
    before it starts, joins or restarts nodes - the installed C(rabbitmq-server) version,
    whether the service runs, the checksum of the Erlang cookie file, whether the node has a
    database (a node without one is blank and runs peer discovery when it starts), and which
    of the cluster's host names do not resolve.
  - When the service runs and O(cluster_status=true), it also asks the node for its cluster
    view (C(rabbitmqctl cluster_status)), waiting up to O(wait) seconds for an answer, and
    counts the node's queues when the node does not see every one of O(expected_nodes)
    running (a node that might have to be reset to join).
  - The role feeds the result to the C(warren.rabbitmq.cluster_plan) filter
    (C(plugins/module_utils/cluster_plan.py)), which decides what to do.
  - Read-only; never reports a change.
version_added: 0.2.0
author:
  - warren SRE team (@warren-sre)
options:
  node:
    description: This host's Erlang node name, C(rabbit@<host>).
    type: str
    required: true
  data_dir:
    description: RabbitMQ's data folder; the database is C(<data_dir>/mnesia/<node>).
    type: path
    default: /var/lib/rabbitmq
  cookie_path:
    description: The Erlang cookie file whose SHA-1 is returned.
    type: path
    default: /var/lib/rabbitmq/.erlang.cookie
  resolve:
    description: Host names that must resolve on this host (the other members' node hosts).
    type: list
    elements: str
    default: []
  cluster_status:
    description: Ask a running node for its cluster view (and count queues, see O(expected_nodes)).
    type: bool
    default: true
  expected_nodes:
    description:
      - Node names of every member the cluster should have. When the node does not see all of
        them running, its queues are counted (C(queues)); otherwise C(queues) is null.
    type: list
    elements: str
    default: []
  wait:
    description: Seconds to wait for a running node to answer C(rabbitmqctl cluster_status).
    type: int
    default: 60
extends_documentation_fragment:
  - warren.rabbitmq.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    support: full
    platforms: debian
    details: A Debian host with systemd (dpkg-query, systemctl). Read-only, so there is nothing to diff.
notes:
  - Needs C(dpkg-query) and C(systemctl); C(rabbitmqctl) only when the service runs.
seealso:
  - module: warren.rabbitmq.cluster_health
'''

EXAMPLES = r'''
- name: Read the host's state
  warren.rabbitmq.node_state:
    node: rabbit@rmq1
    resolve: [rmq1, rmq2, rmq3]
    expected_nodes: [rabbit@rmq1, rabbit@rmq2, rabbit@rmq3]
  register: state
'''

RETURN = r'''
node:
  description: The node name given.
  type: str
  returned: always
  sample: rabbit@rmq1
package_version:
  description: Installed C(rabbitmq-server) package version, empty when it is not installed.
  type: str
  returned: always
  sample: 4.0.5-1
version:
  description: The upstream part of it (no epoch, no Debian revision), empty when not installed.
  type: str
  returned: always
  sample: 4.0.5
active:
  description: Whether the C(rabbitmq-server) service runs.
  type: bool
  returned: always
cookie_sha1:
  description: SHA-1 of the cookie file, empty when there is none.
  type: str
  returned: always
database:
  description: Whether the node has a database. False means blank (new, or wiped).
  type: bool
  returned: always
unresolved:
  description: The names of O(resolve) that do not resolve on this host.
  type: list
  elements: str
  returned: always
members:
  description: Cluster members the node knows of (C(disk_nodes)); null when it was not asked.
  type: list
  elements: str
  returned: always
running:
  description: Members the node sees running; null when it was not asked.
  type: list
  elements: str
  returned: always
queues:
  description: Number of queues the node holds, when counted (see O(expected_nodes)); else null.
  type: int
  returned: always
'''

import hashlib
import json
import os
import re
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.warren.rabbitmq.plugins.module_utils.cluster_plan import needs_queue_count


def upstream_version(package_version):
    """4.0.5 from 4.0.5-1 or 1:27.3.4-1; '' stays ''."""
    return re.sub(r'-[^-]*$', '', re.sub(r'^[0-9]+:', '', package_version or ''))


def package_version(module):
    dpkg = module.get_bin_path('dpkg-query')
    if not dpkg:
        return ''
    rc, out, _err = module.run_command([dpkg, '-W', '-f', '${db:Status-Abbrev} ${Version}', 'rabbitmq-server'])
    if rc != 0:
        return ''
    fields = out.split()
    return fields[-1] if fields and fields[0] == 'ii' and len(fields) > 1 else ''


def service_active(module):
    systemctl = module.get_bin_path('systemctl')
    if not systemctl:
        return False
    rc, out, _err = module.run_command([systemctl, 'is-active', 'rabbitmq-server'])
    return rc == 0 and out.strip() == 'active'


def cookie_sha1(path):
    try:
        with open(path, 'rb') as handle:
            return hashlib.sha1(handle.read()).hexdigest()
    except (IOError, OSError):
        return ''


def unresolved(names):
    out = []
    for name in names:
        try:
            socket.getaddrinfo(name, None)
        except (socket.gaierror, UnicodeError):
            out.append(name)
    return out


def read_cluster_status(module, wait):
    rabbitmqctl = module.get_bin_path('rabbitmqctl', required=True)
    deadline = time.time() + max(wait, 0)
    while True:
        rc, out, err = module.run_command([rabbitmqctl, '-q', 'cluster_status', '--formatter', 'json'])
        if rc == 0:
            try:
                status = json.loads(out)
                return list(status.get('disk_nodes') or []), list(status.get('running_nodes') or [])
            except ValueError:
                err = 'not JSON: %s' % out[:200]
        if time.time() >= deadline:
            module.fail_json(msg='rabbitmq-server runs, but `rabbitmqctl cluster_status` did not answer within '
                                 '%d s: %s. Look at `journalctl -u rabbitmq-server` on this node.' % (wait, (err or out).strip()))
        time.sleep(2)


def count_queues(module):
    rabbitmqctl = module.get_bin_path('rabbitmqctl', required=True)
    rc, out, err = module.run_command([rabbitmqctl, '-q', 'eval', 'length(rabbit_amqqueue:list()).'])
    if rc != 0:
        return None
    try:
        return int(out.strip())
    except ValueError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            node=dict(type='str', required=True),
            data_dir=dict(type='path', default='/var/lib/rabbitmq'),
            cookie_path=dict(type='path', default='/var/lib/rabbitmq/.erlang.cookie'),
            resolve=dict(type='list', elements='str', default=[]),
            cluster_status=dict(type='bool', default=True),
            expected_nodes=dict(type='list', elements='str', default=[]),
            wait=dict(type='int', default=60),
        ),
        supports_check_mode=True,
    )
    p = module.params
    version = package_version(module)
    active = service_active(module)
    result = dict(
        changed=False,
        node=p['node'],
        package_version=version,
        version=upstream_version(version),
        active=active,
        cookie_sha1=cookie_sha1(p['cookie_path']),
        database=os.path.isdir(os.path.join(p['data_dir'], 'mnesia', p['node'])),
        unresolved=unresolved(p['resolve']),
        members=None,
        running=None,
        queues=None,
    )
    if active and p['cluster_status']:
        result['members'], result['running'] = read_cluster_status(module, p['wait'])
        if needs_queue_count(result['running'], p['expected_nodes']):
            result['queues'] = count_queues(module)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
