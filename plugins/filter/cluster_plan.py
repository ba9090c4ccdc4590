# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rabbitmq role's membership decisions as filters (logic: module_utils/cluster_plan.py).

Documentation: cluster_start_plan.yml and cluster_join_plan.yml next to this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.warren.rabbitmq.plugins.module_utils import cluster_plan


def _states(hosts, hostvars, fact):
    """{host: state} in the order of hosts, from each host's registered node_state result."""
    out = {}
    for host in hosts:
        try:
            state = hostvars[host][fact]
        except KeyError:
            raise AnsibleFilterError('warren.rabbitmq cluster plan: %s has no %s (run warren.rabbitmq.node_state '
                                     'on every host first)' % (host, fact))
        if not isinstance(state, dict) or 'node' not in state:
            raise AnsibleFilterError('warren.rabbitmq cluster plan: %s of %s is not a node_state result' % (fact, host))
        out[host] = dict(state)
    return out


def cluster_start_plan(hosts, hostvars, fact):
    return cluster_plan.plan_start(_states(hosts, hostvars, fact))


def cluster_join_plan(hosts, hostvars, fact, allow_reset_of_node_with_data=False):
    return cluster_plan.plan_join(_states(hosts, hostvars, fact), boolean(allow_reset_of_node_with_data, strict=True))


class FilterModule(object):
    """warren.rabbitmq cluster membership planning filters."""

    def filters(self):
        return {
            'cluster_start_plan': cluster_start_plan,
            'cluster_join_plan': cluster_join_plan,
        }
