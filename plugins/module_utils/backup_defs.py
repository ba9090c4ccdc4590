# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading definitions exports for restores: object identities, "is this cluster blank?",
and the subset of a backup that a selective restore applies.

Used by warren.rabbitmq.backup_filter; plain Python, unit-tested directly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.warren.rabbitmq.plugins.module_utils.backup_store import BackupError

# What identifies an object of each type in an export (RabbitMQ's own keys).
IDENTITY_FIELDS = {
    'vhosts': ('name',),
    'users': ('name',),
    'permissions': ('vhost', 'user'),
    'topic_permissions': ('vhost', 'user', 'exchange'),
    'parameters': ('vhost', 'component', 'name'),
    'global_parameters': ('name',),
    'policies': ('vhost', 'name'),
    'queues': ('vhost', 'name'),
    'exchanges': ('vhost', 'name'),
    'bindings': ('vhost', 'source', 'destination', 'destination_type', 'routing_key', 'arguments'),
}
SINGULAR = {'vhosts': 'vhost', 'users': 'user', 'permissions': 'permission',
            'topic_permissions': 'topic permission', 'parameters': 'parameter',
            'global_parameters': 'global parameter', 'policies': 'policy', 'queues': 'queue',
            'exchanges': 'exchange', 'bindings': 'binding'}
# Scoped to a vhost: restored with it.
VHOST_SCOPED = ('permissions', 'topic_permissions', 'parameters', 'policies', 'queues', 'exchanges', 'bindings')
# What a freshly started node holds before anyone defines anything (RabbitMQ 4.0).
FRESH_DEFAULTS = {
    'vhosts': {('/',)},
    'users': {('guest',)},
    'permissions': {('/', 'guest')},
    'global_parameters': {('internal_cluster_id',), ('cluster_name',), ('cluster_tags',)},
}
METADATA_KEYS = ('rabbit_version', 'rabbitmq_version', 'product_name', 'product_version',
                 'rabbitmq_definition_format', 'original_cluster_name', 'explanation')


def identity(kind, obj):
    out = []
    for field in IDENTITY_FIELDS[kind]:
        value = obj.get(field)
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        elif field == 'routing_key' and value is None:
            value = ''
        out.append(value if value is not None else '')
    return tuple(out)


def label(kind, key):
    fields = IDENTITY_FIELDS[kind]
    parts = ', '.join("%s '%s'" % (f, v) for f, v in zip(fields, key) if f != 'arguments')
    return '%s (%s)' % (SINGULAR[kind], parts)


def identities(doc, kind):
    return set(identity(kind, o) for o in (doc.get(kind) or []) if isinstance(o, dict))


def foreign_objects(current, backup, allowed=None, login_user=None, ignore_vhosts=()):
    """Objects the cluster holds that neither a fresh node, ``allowed`` nor the backup has.

    A cluster with such objects is not blank: importing a backup into it mixes two sets of
    definitions. ``allowed`` is a definitions document of what deploying the cluster creates by
    itself (the inventory's rabbitmq_definitions). The login user (the admin the deployment
    creates) and its permissions are allowed too, and so is whatever lives in ``ignore_vhosts``
    (the canary's vhost: the canary declares its own queues there as soon as the cluster runs).
    """
    allowed = allowed or {}
    out = []
    for kind in IDENTITY_FIELDS:
        known = identities(backup, kind) | identities(allowed, kind) | FRESH_DEFAULTS.get(kind, set())
        if login_user:
            if kind == 'users':
                known.add((login_user,))
            if kind in ('permissions', 'topic_permissions'):
                known |= set(k for k in identities(current, kind) if k[1] == login_user)
        scoped = kind in VHOST_SCOPED
        for key in sorted(identities(current, kind) - known, key=str):
            if (scoped and key[0] in ignore_vhosts) or (kind == 'vhosts' and key[0] in ignore_vhosts):
                continue
            if kind in FEDERATION_KINDS and federation_internal(key):
                continue
            out.append(label(kind, key))
    return out


# A federation link declares its own exchange, queue and bindings on the upstream cluster, all
# named "federation: ...". A warm standby's link reconnects to a freshly deployed main cluster
# within seconds, before any restore: those objects belong to the link, not to an operator.
FEDERATION_PREFIX = 'federation: '
FEDERATION_KINDS = ('exchanges', 'queues', 'bindings')


def federation_internal(key):
    """Whether an object's identity names a federation link's own exchange or queue."""
    return any(isinstance(part, str) and part.startswith(FEDERATION_PREFIX) for part in key[1:])


def _pick(doc, kind, pred):
    return [o for o in (doc.get(kind) or []) if isinstance(o, dict) and pred(o)]


def _names(doc, kind):
    return set(o.get('name') for o in (doc.get(kind) or []) if isinstance(o, dict))


def subset(backup, current, vhost=None, user=None, policy=None, policy_vhost='/'):
    """The part of ``backup`` that restores one vhost, one user or one policy.

    - vhost: the vhost and everything scoped to it (permissions, topic permissions,
      parameters, policies, exchanges, queues, bindings), plus the users its permissions name
      that the cluster no longer has. Users that still exist are left as they are (their
      password may have changed since the backup).
    - user: the user and its permissions in vhosts the cluster has now.
    - policy: that policy in ``policy_vhost``, which must exist in the cluster.

    ``current`` is the cluster's export now. Returns (document, list of what it restores).
    """
    chosen = [x for x in (vhost, user, policy) if x]
    if len(chosen) != 1:
        raise BackupError('name exactly one of vhost, user or policy to restore (got %d)' % len(chosen))
    out = {}
    cur_vhosts = _names(current, 'vhosts')
    cur_users = _names(current, 'users')
    if vhost:
        if vhost not in _names(backup, 'vhosts'):
            raise BackupError("vhost '%s' is not in this backup (it has: %s)"
                              % (vhost, ', '.join(sorted(_names(backup, 'vhosts')))))
        out['vhosts'] = _pick(backup, 'vhosts', lambda o: o.get('name') == vhost)
        for kind in VHOST_SCOPED:
            out[kind] = _pick(backup, kind, lambda o: o.get('vhost') == vhost)
        needed = set(p.get('user') for p in out['permissions'] + out['topic_permissions'])
        out['users'] = _pick(backup, 'users', lambda o: o.get('name') in needed - cur_users)
        # a permission for a user that neither exists nor is in the backup cannot be restored
        known_users = cur_users | _names(out, 'users')
        for kind in ('permissions', 'topic_permissions'):
            out[kind] = [p for p in out[kind] if p.get('user') in known_users]
    elif user:
        if user not in _names(backup, 'users'):
            raise BackupError("user '%s' is not in this backup" % user)
        out['users'] = _pick(backup, 'users', lambda o: o.get('name') == user)
        for kind in ('permissions', 'topic_permissions'):
            out[kind] = _pick(backup, kind, lambda o: o.get('user') == user and o.get('vhost') in cur_vhosts)
    else:
        if policy_vhost not in cur_vhosts:
            raise BackupError("vhost '%s' of policy '%s' does not exist in the cluster: restore the vhost "
                              "instead (dr_restore_vhost)" % (policy_vhost, policy))
        out['policies'] = _pick(backup, 'policies', lambda o: o.get('name') == policy and o.get('vhost') == policy_vhost)
        if not out['policies']:
            raise BackupError("policy '%s' in vhost '%s' is not in this backup" % (policy, policy_vhost))
    out = dict((k, v) for k, v in out.items() if v)
    what = []
    for kind in sorted(out):
        for obj in out[kind]:
            what.append(label(kind, identity(kind, obj)))
    return out, what
