# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the rabbitmq role converges cluster membership, as pure functions.

The role gathers one state per node (``warren.rabbitmq.node_state``), asks these functions
what to do, and carries the answer out. Nothing here touches a node, so every case is a unit
test (tests/unit/test_cluster_plan.py).

A node's state, as the functions read it (keys the module returns):

``node``      its Erlang node name, ``rabbit@<host>``
``active``    the service runs
``database``  it has a database (``/var/lib/rabbitmq/mnesia/<node>``); a node without one is
              *blank*: new, or wiped, and it runs peer discovery when it starts
``members``   the cluster members it knows of (``disk_nodes``), when it runs; else None
``running``   the members it sees running, when it runs; else None
``queues``    how many queues it holds, when they were counted; else None

Two decisions, at two moments of the run:

1. ``plan_start`` - before any node starts. A blank, stopped node whose name the running
   members still list must be forgotten by them first: started under that name it would boot
   alone once peer discovery gives up, and its peers would refuse to restart next to it
   (``inconsistent_cluster``).
2. ``plan_join`` - after every node was started. The seed is the node that sees the most
   running members (ties go to inventory order). Every other node that is not a running member
   of the seed's cluster is outside it; it is stopped, forgotten by the seed, its database
   removed, and started blank so that peer discovery joins it to the seed - unless it holds
   queues, which a reset would delete: such a node is refused unless the caller allows it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def _ordered(states):
    """(host, state) pairs in inventory order from a mapping or a list of states with 'host'."""
    if isinstance(states, dict):
        return list(states.items())
    return [(s['host'], s) for s in states]


def _blank(state):
    return not state.get('database', False)


def _running_size(state):
    return (len(state.get('running') or []),)


def _running_then_members(state):
    return (len(state.get('running') or []), len(state.get('members') or []))


def _largest_view(candidates, size=_running_size):
    """The (host, state) with the largest view by ``size``; the earliest host wins a tie."""
    best, best_size = None, None
    for h, s in candidates:
        if best_size is None or size(s) > best_size:  # strictly more: ties keep the earlier host
            best, best_size = (h, s), size(s)
    return best


def plan_start(states):
    """What to do before nodes start: which stale names to forget, asked of which member.

    Returns ``{'anchor': host or None, 'forget': [node, ...], 'blank': [host, ...]}``. The anchor
    is the running node that sees the most running members, then the most members (then the
    earliest in inventory order), so a node that runs alone outside the cluster is not asked; ``forget`` lists, in inventory
    order, the node names of blank, stopped nodes that the anchor's cluster still lists.
    """
    hosts = _ordered(states)
    blank_stopped = [(h, s) for h, s in hosts if _blank(s) and not s.get('active')]
    anchor = _largest_view([(h, s) for h, s in hosts if s.get('active')], _running_then_members)
    forget = []
    if anchor is not None:
        listed = anchor[1].get('members') or []
        forget = [s['node'] for _h, s in blank_stopped if s['node'] in listed]
    return {
        'anchor': anchor[0] if anchor is not None else None,
        'forget': forget,
        'blank': [h for h, _s in blank_stopped],
    }


def plan_join(states, allow_reset_of_node_with_data=False):
    """What to do once every node was started: the seed, and the nodes that must join it.

    Nodes without a view (not running: check mode) neither seed nor join. Returns::

        {'seed': host,
         'seed_node': node,
         'join': [{'host', 'node', 'forget', 'queues'}, ...],   # in inventory order
         'refused': [{'host', 'node', 'queues'}, ...]}          # outside, with data

    ``forget`` says whether the seed still lists the joiner (then it must forget it first).
    A joiner whose queues were not counted (None) is refused too: a reset it cannot vouch for
    might delete data.
    """
    hosts = _ordered(states)
    if not hosts:
        return {'seed': None, 'seed_node': None, 'join': [], 'refused': []}
    views = [(h, s) for h, s in hosts if s.get('running') is not None]
    seed_host, seed = _largest_view(views) or hosts[0]
    seed_running = seed.get('running') or []
    seed_members = seed.get('members') or []
    join, refused = [], []
    for h, s in views:
        if h == seed_host or s['node'] in seed_running:
            continue
        queues = s.get('queues')
        entry = {'host': h, 'node': s['node'], 'forget': s['node'] in seed_members, 'queues': queues}
        if (queues is None or queues > 0) and not allow_reset_of_node_with_data:
            refused.append({'host': h, 'node': s['node'], 'queues': queues})
        else:
            join.append(entry)
    return {'seed': seed_host, 'seed_node': seed['node'], 'join': join, 'refused': refused}


def needs_queue_count(running, expected_nodes):
    """Whether a node should count its queues: only when it does not see the whole cluster.

    A node that sees every expected node running is a member in good standing and can never
    be asked to join; counting (one more CLI call) is then skipped.
    """
    if running is None:
        return False
    return not set(expected_nodes).issubset(set(running))
