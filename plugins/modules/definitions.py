#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: definitions
short_description: RabbitMQ definitions as code, export and import
description:
  - O(state=exported) writes the cluster's definitions to O(dest) as stable JSON (sorted keys,
    lists sorted by object identity, two-space indent), mode C(0600). Two exports of an
    unchanged cluster are byte-identical, so the file only changes (and the task only reports
    C(changed)) when the definitions changed.
  - O(state=present) applies a declarative set of definitions object by object - vhosts (with
    description, tags, default queue type and limits), users (with tags, password and limits),
    permissions, topic permissions, parameters, global parameters, policies, operator policies,
    exchanges, queues and bindings. Objects that are not named are left alone unless O(prune=true).
  - O(state=imported) loads a definitions file wholesale through C(POST /api/definitions), for a
    disaster-recovery restore. It first saves the current definitions to O(safety_export), then
    imports, then checks that everything it imported is present. When the cluster already holds
    everything in the file it does nothing.
  - All input is validated before anything is changed - malformed JSON, unknown object types,
    missing required fields, bad values, duplicates, references to vhosts or users that neither
    exist nor are part of the same set, and queues or exchanges whose type or arguments differ
    from the existing ones. The message names the offending item.
  - Supports check mode and diff mode (the diff lists what would be created, changed and deleted).
version_added: 0.1.0
author:
  - warren SRE team
options:
  state:
    description: What to do; see the description.
    type: str
    choices: [present, exported, imported]
    default: present
  src:
    description:
      - Definitions file (JSON, the format C(GET /api/definitions) and O(state=exported) produce)
        on the host that runs the module. Mutually exclusive with O(definitions).
    type: path
  definitions:
    description:
      - Definitions given inline, in the same format as a definitions file.
      - Users may carry a plain-text C(password) instead of C(password_hash). It is compared with
        the stored salted hash, so an unchanged password is no change, and it is never returned.
      - Vhosts may carry C(default_queue_type) (V(classic), V(quorum) or V(stream)), C(description),
        C(tags) and C(limits) (a dict such as C(max-connections=100) and C(max-queues=50)).
      - Queues may carry C(type) as shorthand for the C(x-queue-type) argument.
      - Users may carry C(limits) (C(max-connections), C(max-channels)).
      - C(operator_policies) is accepted as an object type next to C(policies).
    type: dict
  prune:
    description:
      - With O(state=present), delete objects of every type that exist on the cluster but are not
        in the set. Deleting a vhost deletes everything in it; deleting a queue deletes its messages.
      - Never deletes O(login_user) or its permissions and topic permissions, the default exchanges
        (C(amq.*) and the nameless one), the
        internal global parameters (C(internal_cluster_id), C(cluster_name), C(cluster_tags)) or
        the implicit bindings of the default exchange.
      - Omitted attributes stay unmanaged even with O(prune=true) (for example a vhost without
        C(limits) keeps its limits).
    type: bool
    default: false
  dest:
    description:
      - With O(state=exported), the file to write (mode C(0600); missing parent directories are
        created with mode C(0700)). It is written on the host that runs the module.
      - To write the file on the controller, run the task with C(delegate_to=localhost) and
        point O(url) at the node's API.
    type: path
  strip_metadata:
    description:
      - With O(state=exported), leave out the top-level fields that describe where the export
        came from rather than what is in it - C(rabbit_version), C(rabbitmq_version), C(product_name),
        C(product_version), C(rabbitmq_definition_format), C(original_cluster_name) and C(explanation).
      - Not needed for stable output - they only change on an upgrade or a cluster rename, and
        an unchanged cluster exports byte-identical files with them. Use it to compare exports
        across versions or clusters.
    type: bool
    default: false
  safety_export:
    description:
      - With O(state=imported), where to save the current definitions before importing.
      - Defaults to C(/var/tmp/warren-definitions-pre-import-<UTC timestamp>.json).
    type: path
extends_documentation_fragment:
  - warren.rabbitmq.api
notes:
  - Needs a user with the C(administrator) tag.
  - RabbitMQ cannot change the type or the arguments of an existing queue. When they differ the
    module fails, names the queue and the differing arguments, and says what fixes it - a policy
    for arguments a policy can set (C(x-delivery-limit) is the C(delivery-limit) policy key, and
    so on), otherwise a queue under a new name and a migration of the messages, for example with
    a shovel, before the old queue is deleted.
  - C(x-queue-type) missing from a queue in the set means "the vhost's default", so it is not
    compared; RabbitMQ records the type it chose.
  - Users without C(tags) in the set keep their current tags; new users get none.
  - RabbitMQ grants the user that creates a vhost through the API full permissions in it. With
    O(state=present) that permission is left in place (the module needs it to declare the vhost's
    queues, exchanges and bindings; O(prune) never removes the login user's permissions). With
    O(state=imported) it is taken back when the file does not grant it, so that a re-export is
    byte-identical to the imported file.
seealso:
  - module: warren.rabbitmq.policy
'''

EXAMPLES = r'''
- name: Definitions as code for the orders application
  warren.rabbitmq.definitions:
    url: https://rmq1.example.net:15671
    ca_cert: /etc/rabbitmq/tls/ca.pem
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
    definitions:
      vhosts:
        - name: orders
          default_queue_type: quorum
          limits: {max-connections: 500, max-queues: 200}
        - name: team a/b
      users:
        - name: orders-app
          password: "{{ orders_app_password }}"
          tags: []
      permissions:
        - {user: orders-app, vhost: orders, configure: "^orders\\.", write: ".*", read: ".*"}
      policies:
        - vhost: orders
          name: orders-limits
          pattern: "^orders\\."
          apply-to: quorum_queues
          priority: 10
          definition: {delivery-limit: 20, max-length: 100000, overflow: reject-publish,
                       dead-letter-exchange: orders.dlx}
      exchanges:
        - {vhost: orders, name: orders.dlx, type: fanout}
      queues:
        - {vhost: orders, name: orders.created, type: quorum}
        - {vhost: orders, name: orders.dead, type: quorum}
      bindings:
        - {vhost: orders, source: orders.dlx, destination: orders.dead, destination_type: queue}

- name: Apply a definitions file and delete everything it does not name
  warren.rabbitmq.definitions:
    src: /etc/rabbitmq/definitions.json
    prune: true
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"

- name: Nightly backup, written on the controller
  warren.rabbitmq.definitions:
    state: exported
    dest: "backups/{{ inventory_hostname }}/definitions.json"
    url: "https://{{ inventory_hostname }}:15671"
    ca_cert: files/ca.pem
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
  delegate_to: localhost
  run_once: true

- name: Disaster recovery - restore a backup into a fresh cluster
  warren.rabbitmq.definitions:
    state: imported
    src: /var/backups/rabbitmq/definitions.json
    safety_export: /var/backups/rabbitmq/before-restore.json
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"
'''

RETURN = r'''
changes:
  description: One line per object created, updated or deleted (or that would be, in check mode).
  returned: state is present or imported
  type: list
  elements: str
  sample: ["create queue 'orders.created' in vhost 'orders'", "update user 'orders-app' (password)"]
summary:
  description: How many objects are (or would be) created, updated and deleted.
  returned: state is present or imported
  type: dict
  sample: {create: 3, update: 1, delete: 0}
dest:
  description: The file written by an export.
  returned: state is exported
  type: str
checksum:
  description: SHA-256 of the exported file's content.
  returned: state is exported
  type: str
counts:
  description: Number of objects per type in the export (or in the imported set).
  returned: state is exported or imported
  type: dict
  sample: {vhosts: 2, users: 3, permissions: 3, topic_permissions: 0, parameters: 1,
           global_parameters: 2, policies: 2, queues: 4, exchanges: 1, bindings: 1}
safety_export:
  description: Where the definitions from before the import were saved.
  returned: state is imported and something was imported
  type: str
auto_permissions_removed:
  description:
    - Vhosts in which the import's automatic full permission for O(login_user) was taken back
      because the imported file does not grant it (RabbitMQ grants the user that creates a vhost
      through the API full permissions in it).
  returned: state is imported and something was imported
  type: list
  elements: str
'''

import copy
import datetime
import hashlib
import json
import os
import tempfile

from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_api import (
    api_module,
    api_path,
    run_module,
)
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_values import (
    APPLY_TO,
    ARGUMENT_POLICY_KEYS,
    DEFAULT_HASHING,
    HASH_FUNCTIONS,
    QUEUE_TYPES,
    canonical_json,
    check_password,
    make_password_hash,
    normalise_mapping,
    normalise_policy,
    tags_list,
)

# Object types in the order they are created; deletion runs in reverse.
TYPES = ('vhosts', 'users', 'permissions', 'topic_permissions', 'global_parameters', 'parameters',
         'policies', 'operator_policies', 'exchanges', 'queues', 'bindings')
METADATA_KEYS = ('rabbit_version', 'rabbitmq_version', 'product_name', 'product_version',
                 'rabbitmq_definition_format', 'original_cluster_name', 'explanation')
REQUIRED = {
    'vhosts': ('name',),
    'users': ('name',),
    'permissions': ('user', 'vhost', 'configure', 'write', 'read'),
    'topic_permissions': ('user', 'vhost', 'exchange', 'write', 'read'),
    'parameters': ('vhost', 'component', 'name', 'value'),
    'global_parameters': ('name', 'value'),
    'policies': ('vhost', 'name', 'pattern', 'definition'),
    'operator_policies': ('vhost', 'name', 'pattern', 'definition'),
    'exchanges': ('vhost', 'name', 'type'),
    'queues': ('vhost', 'name'),
    'bindings': ('vhost', 'source', 'destination', 'destination_type'),
}
SINGULAR = {
    'vhosts': 'vhost', 'users': 'user', 'permissions': 'permission', 'topic_permissions': 'topic permission',
    'parameters': 'parameter', 'global_parameters': 'global parameter', 'policies': 'policy',
    'operator_policies': 'operator policy', 'exchanges': 'exchange', 'queues': 'queue', 'bindings': 'binding',
}
PROTECTED_GLOBAL_PARAMETERS = ('internal_cluster_id', 'cluster_name', 'cluster_tags')
MASK = '********'


class DefinitionsError(Exception):
    """Bad input or a plan RabbitMQ cannot carry out; raised before anything is changed."""


# -- identity and labels ----------------------------------------------------------------------

def identity(kind, obj):
    if kind in ('vhosts', 'users', 'global_parameters'):
        return (obj['name'],)
    if kind == 'permissions':
        return (obj['vhost'], obj['user'])
    if kind == 'topic_permissions':
        return (obj['vhost'], obj['user'], obj['exchange'])
    if kind == 'parameters':
        return (obj['vhost'], obj['component'], obj['name'])
    if kind == 'bindings':
        return (obj['vhost'], obj['source'], obj['destination_type'], obj['destination'],
                obj.get('routing_key') or '', canonical_json(obj.get('arguments') or {}))
    return (obj['vhost'], obj['name'])


def label(kind, key):
    what = SINGULAR[kind]
    if kind in ('vhosts', 'users', 'global_parameters'):
        return "%s '%s'" % (what, key[0])
    if kind == 'permissions':
        return "permission of user '%s' in vhost '%s'" % (key[1], key[0])
    if kind == 'topic_permissions':
        return "topic permission of user '%s' on exchange '%s' in vhost '%s'" % (key[1], key[2], key[0])
    if kind == 'parameters':
        return "parameter '%s' of component '%s' in vhost '%s'" % (key[2], key[1], key[0])
    if kind == 'bindings':
        return "binding from exchange '%s' to %s '%s' with routing key '%s' in vhost '%s'" % (
            key[1], key[2], key[3], key[4], key[0])
    return "%s '%s' in vhost '%s'" % (what, key[1], key[0])


def diff_key(kind, key):
    """A readable, unique key for the diff output."""
    if kind == 'bindings':
        return '%s: %s -> %s %s [%s] %s' % (key[0], key[1], key[2], key[3], key[4], key[5].strip().replace('\n', ''))
    return ' | '.join(key)


# -- normalisation -----------------------------------------------------------------------------

def _as_bool(value, default):
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ('true', 'yes', '1', 'on')
    return bool(value)


def norm_vhost(raw, desired):
    meta = raw.get('metadata') or {}
    out = {'name': raw['name']}
    for field in ('description', 'tags', 'default_queue_type'):
        value = raw.get(field, meta.get(field))
        if field == 'tags' and value is not None:
            value = tags_list(value)
        if value is not None or not desired:
            out[field] = value if value is not None else ([] if field == 'tags' else '')
    if 'limits' in raw and raw['limits'] is not None:
        out['limits'] = normalise_mapping(raw['limits'])
    elif not desired:
        out['limits'] = {}
    return out


def norm_user(raw, desired):
    out = {'name': raw['name']}
    if raw.get('tags') is not None or not desired:
        out['tags'] = tags_list(raw.get('tags'))
    if desired and raw.get('password') is not None:
        out['password'] = str(raw['password'])
    elif raw.get('password_hash') is not None:
        out['password_hash'] = raw['password_hash']
        out['hashing_algorithm'] = raw.get('hashing_algorithm') or DEFAULT_HASHING
    if raw.get('limits') is not None:
        out['limits'] = normalise_mapping(raw['limits'])
    elif not desired:
        out['limits'] = {}
    return out


def norm_queue(raw, desired):
    args = dict(raw.get('arguments') or {})
    if raw.get('type') and 'x-queue-type' not in args:
        args['x-queue-type'] = raw['type']
    return {'vhost': raw['vhost'], 'name': raw['name'],
            'durable': _as_bool(raw.get('durable'), True),
            'auto_delete': _as_bool(raw.get('auto_delete'), False),
            'arguments': normalise_mapping(args)}


def norm_exchange(raw, desired):
    return {'vhost': raw['vhost'], 'name': raw['name'], 'type': raw['type'],
            'durable': _as_bool(raw.get('durable'), True),
            'auto_delete': _as_bool(raw.get('auto_delete'), False),
            'internal': _as_bool(raw.get('internal'), False),
            'arguments': normalise_mapping(raw.get('arguments') or {})}


def norm_binding(raw, desired):
    return {'vhost': raw['vhost'], 'source': raw['source'], 'destination': raw['destination'],
            'destination_type': raw['destination_type'], 'routing_key': raw.get('routing_key') or '',
            'arguments': normalise_mapping(raw.get('arguments') or {})}


def norm_policy(raw, desired):
    out = normalise_policy(raw)
    out.update(vhost=raw['vhost'], name=raw['name'])
    return out


def _pick(*fields):
    def norm(raw, desired):
        return dict((f, raw[f]) for f in fields)
    return norm


NORMALISERS = {
    'vhosts': norm_vhost,
    'users': norm_user,
    'permissions': _pick('user', 'vhost', 'configure', 'write', 'read'),
    'topic_permissions': _pick('user', 'vhost', 'exchange', 'write', 'read'),
    'parameters': _pick('vhost', 'component', 'name', 'value'),
    'global_parameters': _pick('name', 'value'),
    'policies': norm_policy,
    'operator_policies': norm_policy,
    'exchanges': norm_exchange,
    'queues': norm_queue,
    'bindings': norm_binding,
}


def _fold_special_parameters(doc):
    """Exports carry vhost limits and operator policies as parameters; model them as what they are."""
    params, limits, op_policies = [], {}, list(doc.get('operator_policies') or [])
    for p in doc.get('parameters') or []:
        if not isinstance(p, dict):
            params.append(p)
        elif p.get('component') == 'vhost-limits':
            limits.setdefault(p.get('vhost'), {}).update(p.get('value') or {})
        elif p.get('component') == 'operator_policy':
            value = dict(p.get('value') or {})
            value.update(vhost=p.get('vhost'), name=p.get('name'))
            op_policies.append(value)
        else:
            params.append(p)
    return params, limits, op_policies


def model(doc, desired):
    """Turn a definitions document into {type: {identity: normalised object}}."""
    params, limits, op_policies = _fold_special_parameters(doc)
    source = dict(doc)
    source['parameters'] = params
    source['operator_policies'] = op_policies
    out = {}
    for kind in TYPES:
        objs = {}
        for raw in source.get(kind) or []:
            if kind == 'vhosts' and raw['name'] in limits and raw.get('limits') is None:
                raw = dict(raw, limits=limits[raw['name']])
            if kind == 'exchanges' and not desired and (raw['name'] == '' or raw['name'].startswith('amq.')):
                continue
            obj = NORMALISERS[kind](raw, desired)
            objs[identity(kind, obj)] = obj
        out[kind] = objs
    if desired:
        # limits given as a vhost-limits parameter for a vhost the set does not list: manage only them
        for name, value in sorted(limits.items()):
            if (name,) not in out['vhosts']:
                out['vhosts'][(name,)] = norm_vhost({'name': name, 'limits': value}, True)
    return out


# -- validation --------------------------------------------------------------------------------

def _item_label(kind, index, item):
    parts = []
    for field in ('vhost', 'name', 'user', 'component', 'exchange', 'source', 'destination'):
        if isinstance(item, dict) and field in item:
            parts.append("%s '%s'" % (field, item[field]))
    return '%s[%d]%s' % (kind, index, (' (' + ', '.join(parts) + ')') if parts else '')


def validate(doc, current, prune, login_user):
    """Check a desired definitions document; raise DefinitionsError naming the first bad item."""
    if not isinstance(doc, dict):
        raise DefinitionsError('definitions must be a JSON object (a dict), got %s' % type(doc).__name__)
    for key in doc:
        if key not in TYPES and key not in METADATA_KEYS:
            raise DefinitionsError("unknown object type '%s' in definitions; known types: %s"
                                   % (key, ', '.join(TYPES)))
    seen = {}
    for kind in TYPES:
        items = doc.get(kind)
        if items is None:
            continue
        if not isinstance(items, list):
            raise DefinitionsError("'%s' must be a list, got %s" % (kind, type(items).__name__))
        for index, item in enumerate(items):
            where = _item_label(kind, index, item)
            if not isinstance(item, dict):
                raise DefinitionsError('%s must be a dict, got %s' % (where, type(item).__name__))
            missing = [f for f in REQUIRED[kind] if item.get(f) is None]
            if missing:
                raise DefinitionsError('%s is missing required field%s: %s'
                                       % (where, 's' if len(missing) > 1 else '', ', '.join(missing)))
            for f in REQUIRED[kind]:
                if f not in ('value', 'definition') and not isinstance(item[f], str):
                    raise DefinitionsError('%s: field %s must be a string' % (where, f))
            _validate_values(kind, where, item)
            key = identity(kind, NORMALISERS[kind](item, True))
            if key in seen.setdefault(kind, set()):
                raise DefinitionsError('%s is a duplicate of an earlier %s' % (where, SINGULAR[kind]))
            seen[kind].add(key)

    desired_vhosts = set(v['name'] for v in doc.get('vhosts') or [])
    desired_users = set(u['name'] for u in doc.get('users') or [])
    known_vhosts = desired_vhosts | (set() if prune else set(k[0] for k in current['vhosts']))
    known_users = desired_users | (set() if prune else set(k[0] for k in current['users']))
    if prune:
        known_users.add(login_user)
    for kind in TYPES:
        for index, item in enumerate(doc.get(kind) or []):
            vhost = item.get('vhost')
            if vhost is not None and vhost not in known_vhosts:
                raise DefinitionsError(
                    "%s refers to vhost '%s', which does not exist and is not in the set%s"
                    % (_item_label(kind, index, item), vhost,
                       ' (prune would delete it)' if vhost in set(k[0] for k in current['vhosts']) else ''))
            if kind in ('permissions', 'topic_permissions') and item['user'] not in known_users:
                raise DefinitionsError("%s refers to user '%s', which does not exist and is not in the set"
                                       % (_item_label(kind, index, item), item['user']))


def _validate_values(kind, where, item):
    if kind == 'vhosts':
        dqt = item.get('default_queue_type', (item.get('metadata') or {}).get('default_queue_type'))
        if dqt is not None and dqt not in QUEUE_TYPES:
            raise DefinitionsError("%s: default_queue_type '%s' is not one of %s" % (where, dqt, ', '.join(QUEUE_TYPES)))
        _check_limits(where, item.get('limits'), ('max-connections', 'max-queues'))
    elif kind == 'users':
        algo = item.get('hashing_algorithm')
        if algo is not None and algo not in HASH_FUNCTIONS:
            raise DefinitionsError("%s: unknown hashing_algorithm '%s'" % (where, algo))
        if item.get('password') is not None and item.get('password_hash') is not None:
            raise DefinitionsError('%s: give password or password_hash, not both' % where)
        _check_limits(where, item.get('limits'), ('max-connections', 'max-channels'))
    elif kind in ('policies', 'operator_policies'):
        if not isinstance(item['definition'], dict) or not item['definition']:
            raise DefinitionsError('%s: definition must be a non-empty dict' % where)
        apply_to = item.get('apply-to', item.get('apply_to')) or 'all'
        if apply_to not in APPLY_TO:
            raise DefinitionsError("%s: apply-to '%s' is not one of %s" % (where, apply_to, ', '.join(APPLY_TO)))
        try:
            int(item.get('priority') or 0)
        except (TypeError, ValueError):
            raise DefinitionsError("%s: priority '%s' is not an integer" % (where, item.get('priority')))
    elif kind == 'queues':
        qtype = (item.get('arguments') or {}).get('x-queue-type') or item.get('type')
        if qtype is not None and qtype not in QUEUE_TYPES:
            raise DefinitionsError("%s: queue type '%s' is not one of %s" % (where, qtype, ', '.join(QUEUE_TYPES)))
        if item.get('arguments') is not None and not isinstance(item['arguments'], dict):
            raise DefinitionsError('%s: arguments must be a dict' % where)
    elif kind == 'exchanges':
        if item['name'] == '' or item['name'].startswith('amq.'):
            raise DefinitionsError("%s: exchange names '' and 'amq.*' are reserved by RabbitMQ" % where)
    elif kind == 'bindings':
        if item['destination_type'] not in ('queue', 'exchange'):
            raise DefinitionsError("%s: destination_type '%s' must be queue or exchange"
                                   % (where, item['destination_type']))


def _check_limits(where, limits, allowed):
    if limits is None:
        return
    if not isinstance(limits, dict):
        raise DefinitionsError('%s: limits must be a dict' % where)
    for name, value in limits.items():
        if name not in allowed:
            raise DefinitionsError("%s: unknown limit '%s' (known: %s)" % (where, name, ', '.join(allowed)))
        try:
            int(value)
        except (TypeError, ValueError):
            raise DefinitionsError("%s: limit %s must be an integer, got '%s'" % (where, name, value))


# -- planning ----------------------------------------------------------------------------------

class Action:
    def __init__(self, op, kind, key, before, after, detail=''):
        self.op, self.kind, self.key, self.before, self.after, self.detail = op, kind, key, before, after, detail

    def describe(self):
        text = '%s %s' % (self.op, label(self.kind, self.key))
        return text + (' (%s)' % self.detail if self.detail else '')


def _effective(kind, want, have):
    """The object as it will be: unmanaged (missing) fields keep their current values."""
    if have is None:
        return want
    merged = dict(have)
    merged.update(want)
    return merged


def _password_state(want, have):
    """Return (changed, unverifiable) for the password part of a user."""
    if 'password' in want:
        if have is None:
            return True, False
        ok = check_password(want['password'], have.get('password_hash'), have.get('hashing_algorithm'))
        if ok is None:
            return True, True
        return not ok, False
    if 'password_hash' in want:
        if have is None:
            return True, False
        return (want['password_hash'] != have.get('password_hash')
                or want['hashing_algorithm'] != have.get('hashing_algorithm')), False
    return False, False


def _compare_fields(kind, want, have):
    if kind == 'users':
        return [f for f in ('tags', 'limits') if f in want and want[f] != have.get(f)]
    if kind == 'vhosts':
        return [f for f in ('description', 'tags', 'default_queue_type', 'limits') if f in want and want[f] != have.get(f)]
    if kind == 'queues':
        wanted = dict(want['arguments'])
        current = dict(have['arguments'])
        if 'x-queue-type' not in wanted:
            current.pop('x-queue-type', None)
        fields = [f for f in ('durable', 'auto_delete') if want[f] != have[f]]
        fields += ['argument %s' % a for a in sorted(set(wanted) | set(current)) if wanted.get(a) != current.get(a)]
        return fields
    return sorted(f for f in set(want) | set(have) if want.get(f) != have.get(f))


def conflict_message(kind, key, want, have, fields):
    name, vhost = key[1], key[0]
    if kind == 'exchanges':
        diffs = ', '.join('%s: current %s, wanted %s' % (f, json.dumps(have.get(f)), json.dumps(want.get(f)))
                          for f in fields)
        return ("exchange '%s' in vhost '%s' exists with different properties, which RabbitMQ cannot change "
                "in place (%s). Fix: declare an exchange under a new name and move the bindings, or delete "
                "the exchange first." % (name, vhost, diffs))
    parts, policy_keys, needs_migration = [], [], False
    for f in fields:
        if f.startswith('argument '):
            arg = f[len('argument '):]
            cur, new = have['arguments'].get(arg), want['arguments'].get(arg)
            parts.append('%s: current %s, wanted %s' % (arg, json.dumps(cur), json.dumps(new)))
            if arg in ARGUMENT_POLICY_KEYS:
                policy_keys.append('%s (for %s)' % (ARGUMENT_POLICY_KEYS[arg], arg))
            else:
                needs_migration = True
        else:
            parts.append('%s: current %s, wanted %s' % (f, json.dumps(have.get(f)), json.dumps(want.get(f))))
            needs_migration = True
    fixes = []
    if policy_keys:
        fixes.append('keep the queue\'s current arguments and set %s through a policy (warren.rabbitmq.policy '
                     'or "policies" in the definitions) - a policy applies to existing queues at once'
                     % ', '.join(policy_keys))
    if needs_migration:
        fixes.append('declare a queue under a new name with the wanted type/properties, move the messages '
                     '(for example with a shovel) and consumers to it, then delete the old queue')
    return ("queue '%s' in vhost '%s' exists with different type or arguments, which RabbitMQ cannot change in "
            "place: %s. Fix: %s." % (name, vhost, '; '.join(parts), '; and '.join(fixes)))


def plan(desired, current, prune, login_user):
    """Compare models; return (actions, conflicts)."""
    actions, conflicts = [], []
    for kind in TYPES:
        want_all, have_all = desired[kind], current[kind]
        for key, want in want_all.items():
            have = have_all.get(key)
            if have is None:
                detail = ''
                actions.append(Action('create', kind, key, None, want, detail))
                continue
            fields = _compare_fields(kind, want, have)
            if kind in ('queues', 'exchanges') and fields:
                conflicts.append(conflict_message(kind, key, want, have, fields))
                continue
            if kind == 'users':
                pw_changed, unverifiable = _password_state(want, have)
                if pw_changed:
                    fields.append('password' + (' (stored hash cannot be checked)' if unverifiable else ''))
            if fields:
                actions.append(Action('update', kind, key, have, _effective(kind, want, have), ', '.join(fields)))
        if prune:
            for key, have in have_all.items():
                if key in want_all or _protected(kind, key, have, login_user):
                    continue
                actions.append(Action('delete', kind, key, have, None))
    return actions, conflicts


def _protected(kind, key, have, login_user):
    if kind == 'users':
        return key[0] == login_user
    if kind in ('permissions', 'topic_permissions'):
        return key[1] == login_user
    if kind == 'exchanges':
        return key[1] == '' or key[1].startswith('amq.')
    if kind == 'global_parameters':
        return key[0] in PROTECTED_GLOBAL_PARAMETERS
    if kind == 'bindings':
        return key[1] == ''
    return False


# -- applying ----------------------------------------------------------------------------------

def _user_body(obj, have):
    body = {'tags': ','.join(obj.get('tags') or [])}
    if 'password' in obj:
        body['password'] = obj['password']
    elif 'password_hash' in obj:
        body['password_hash'] = obj['password_hash']
        body['hashing_algorithm'] = obj['hashing_algorithm']
    elif have is not None:
        body['password_hash'] = have.get('password_hash') or ''
        body['hashing_algorithm'] = have.get('hashing_algorithm') or DEFAULT_HASHING
    else:
        body['password_hash'] = ''
    return body


def _sync_limits(client, resource, owner, want, have):
    if want is None:
        return
    have = have or {}
    for name, value in sorted(want.items()):
        if have.get(name) != value:
            client.put(api_path(resource, owner, name), {'value': int(value)})
    for name in sorted(set(have) - set(want)):
        client.delete(api_path(resource, owner, name))


def apply_action(client, action, current):
    kind, key, obj = action.kind, action.key, action.after
    vhost = key[0]
    if action.op == 'delete':
        _delete(client, kind, key, action.before, current)
        return
    if kind == 'vhosts':
        body = dict((f, obj[f]) for f in ('description', 'default_queue_type') if obj.get(f) is not None)
        if obj.get('tags') is not None:
            body['tags'] = ','.join(obj['tags'])
        client.put(api_path('vhosts', vhost), body)
        _sync_limits(client, 'vhost-limits', vhost, obj.get('limits'), (action.before or {}).get('limits'))
    elif kind == 'users':
        client.put(api_path('users', key[0]), _user_body(obj, action.before))
        _sync_limits(client, 'user-limits', key[0], obj.get('limits'), (action.before or {}).get('limits'))
    elif kind == 'permissions':
        client.put(api_path('permissions', vhost, key[1]),
                   dict((f, obj[f]) for f in ('configure', 'write', 'read')), vhost=vhost)
    elif kind == 'topic_permissions':
        client.put(api_path('topic-permissions', vhost, key[1]),
                   dict((f, obj[f]) for f in ('exchange', 'write', 'read')), vhost=vhost)
    elif kind == 'parameters':
        client.put(api_path('parameters', key[1], vhost, key[2]),
                   {'vhost': vhost, 'component': key[1], 'name': key[2], 'value': obj['value']}, vhost=vhost)
    elif kind == 'global_parameters':
        client.put(api_path('global-parameters', key[0]), {'name': key[0], 'value': obj['value']})
    elif kind in ('policies', 'operator_policies'):
        resource = 'policies' if kind == 'policies' else 'operator-policies'
        client.put(api_path(resource, vhost, key[1]),
                   dict((f, obj[f]) for f in ('pattern', 'apply-to', 'definition', 'priority')), vhost=vhost)
    elif kind == 'exchanges':
        client.put(api_path('exchanges', vhost, key[1]),
                   dict((f, obj[f]) for f in ('type', 'durable', 'auto_delete', 'internal', 'arguments')), vhost=vhost)
    elif kind == 'queues':
        client.put(api_path('queues', vhost, key[1]),
                   dict((f, obj[f]) for f in ('durable', 'auto_delete', 'arguments')), vhost=vhost)
    elif kind == 'bindings':
        dest = 'q' if obj['destination_type'] == 'queue' else 'e'
        client.post(api_path('bindings', vhost, 'e', obj['source'], dest, obj['destination']),
                    {'routing_key': obj['routing_key'], 'arguments': obj['arguments']}, vhost=vhost)


def _delete(client, kind, key, have, current):
    vhost = key[0]
    if kind == 'vhosts':
        client.delete(api_path('vhosts', vhost))
    elif kind == 'users':
        client.delete(api_path('users', key[0]))
    elif kind == 'permissions':
        client.delete(api_path('permissions', vhost, key[1]), vhost=vhost)
    elif kind == 'topic_permissions':
        # The API deletes all topic permissions of a user in a vhost at once; put back the others.
        client.delete(api_path('topic-permissions', vhost, key[1]), vhost=vhost)
        for other_key, other in sorted(current['topic_permissions'].items()):
            if other_key[:2] == key[:2] and other_key != key:
                client.put(api_path('topic-permissions', vhost, key[1]),
                           dict((f, other[f]) for f in ('exchange', 'write', 'read')), vhost=vhost)
    elif kind == 'parameters':
        client.delete(api_path('parameters', key[1], vhost, key[2]), vhost=vhost)
    elif kind == 'global_parameters':
        client.delete(api_path('global-parameters', key[0]))
    elif kind in ('policies', 'operator_policies'):
        client.delete(api_path('policies' if kind == 'policies' else 'operator-policies', vhost, key[1]), vhost=vhost)
    elif kind in ('exchanges', 'queues'):
        client.delete(api_path(kind, vhost, key[1]), vhost=vhost)
    elif kind == 'bindings':
        dest = 'q' if have['destination_type'] == 'queue' else 'e'
        path = api_path('bindings', vhost, 'e', have['source'], dest, have['destination'])
        for b in client.get(path, missing_ok=True, vhost=vhost) or []:
            if (b.get('routing_key') or '') == have['routing_key'] and \
                    normalise_mapping(b.get('arguments') or {}) == have['arguments']:
                # properties_key is used verbatim as one more path segment (so it is encoded again)
                client.delete(api_path('bindings', vhost, 'e', have['source'], dest, have['destination'],
                                       b['properties_key']), vhost=vhost)


FIRST = ('vhosts', 'users', 'permissions', 'topic_permissions')


def execute(client, actions, current):
    """Vhosts, users and permissions first, then deletes (children first), then everything else."""
    for a in actions:
        if a.op != 'delete' and a.kind in FIRST:
            apply_action(client, a, current)
    deletes = [a for a in actions if a.op == 'delete']
    doomed_vhosts = set(a.key[0] for a in deletes if a.kind == 'vhosts')
    doomed_users = set(a.key[0] for a in deletes if a.kind == 'users')
    # Deletes first, children before parents; what dies with its vhost or user is skipped.
    for a in sorted(deletes, key=lambda a: -TYPES.index(a.kind)):
        if a.kind != 'vhosts' and a.kind not in ('users', 'global_parameters') and a.key[0] in doomed_vhosts:
            continue
        if a.kind in ('permissions', 'topic_permissions') and a.key[1] in doomed_users:
            continue
        apply_action(client, a, current)
    for a in actions:
        if a.op != 'delete' and a.kind not in FIRST:
            apply_action(client, a, current)


# -- diff output -------------------------------------------------------------------------------

def _shown(obj):
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    if 'password' in out:
        out['password'] = MASK
    if 'password_hash' in out:
        out['password_hash'] = MASK
    return out


def build_diff(actions):
    before, after = {}, {}
    for a in actions:
        k = diff_key(a.kind, a.key)
        if a.before is not None:
            before.setdefault(a.kind, {})[k] = _shown(a.before)
        if a.after is not None:
            shown = _shown(a.after)
            if a.kind == 'users' and 'password' in (a.detail or ''):
                shown['password'] = MASK + ' (changed)'
            after.setdefault(a.kind, {})[k] = shown
    return {'before': before, 'after': after}


# -- export ------------------------------------------------------------------------------------

def _sort_key(kind):
    def key(obj):
        try:
            return tuple(str(v) for v in identity(kind, obj))
        except (KeyError, TypeError):
            return (canonical_json(obj),)
    return key


def stable_export(doc, strip_metadata):
    """Sort lists by identity (and tags) so an unchanged cluster exports byte-identical text."""
    out = {}
    for key, value in doc.items():
        if strip_metadata and key in METADATA_KEYS:
            continue
        if isinstance(value, list):
            kind = key
            items = [copy.deepcopy(v) for v in value]
            for item in items:
                if isinstance(item, dict) and isinstance(item.get('tags'), list):
                    item['tags'] = sorted(item['tags'])
                meta = item.get('metadata') if isinstance(item, dict) else None
                if isinstance(meta, dict) and isinstance(meta.get('tags'), list):
                    meta['tags'] = sorted(meta['tags'])
            if kind in TYPES:
                items.sort(key=_sort_key(kind))
            else:
                items.sort(key=canonical_json)
            value = items
        out[key] = value
    return out


def counts_of(doc):
    return dict((k, len(doc.get(k) or [])) for k in TYPES if k != 'operator_policies' or k in doc)


def write_file(module, dest, content):
    """Write ``content`` to ``dest`` with mode 0600, atomically; return True if it changed."""
    data = content.encode('utf-8')
    if os.path.exists(dest):
        with open(dest, 'rb') as f:
            if f.read() == data and (os.stat(dest).st_mode & 0o777) == 0o600:
                return False
    if module.check_mode:
        return True
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix='.warren-definitions-')
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        module.atomic_move(tmp, dest)
        os.chmod(dest, 0o600)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def do_export(module, client):
    p = module.params
    if not p['dest']:
        module.fail_json(msg='dest is required when state=exported')
    doc = stable_export(client.get(api_path('definitions')), p['strip_metadata'])
    content = canonical_json(doc)
    old = None
    if module._diff and os.path.exists(p['dest']):
        with open(p['dest'], 'rb') as f:
            old = f.read().decode('utf-8', 'replace')
    changed = write_file(module, p['dest'], content)
    result = dict(changed=changed, dest=p['dest'], counts=counts_of(doc),
                  checksum=hashlib.sha256(content.encode('utf-8')).hexdigest())
    if module._diff:
        result['diff'] = dict(before=old or '', after=content, before_header=p['dest'], after_header=p['dest'])
    return result


# -- present / imported ------------------------------------------------------------------------

def load_desired(module):
    p = module.params
    if p['src']:
        try:
            with open(p['src'], 'rb') as f:
                text = f.read().decode('utf-8')
        except (IOError, OSError) as e:
            raise DefinitionsError('cannot read src %s: %s' % (p['src'], e))
        except UnicodeDecodeError as e:
            raise DefinitionsError('src %s is not UTF-8: %s' % (p['src'], e))
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise DefinitionsError('src %s is not valid JSON: %s' % (p['src'], e))
    elif p['definitions'] is not None:
        doc = p['definitions']
    else:
        raise DefinitionsError('state=%s needs src or definitions' % p['state'])
    if isinstance(doc, dict):
        for user in doc.get('users') or []:
            if isinstance(user, dict) and user.get('password'):
                module.no_log_values.add(str(user['password']))
    return doc


def current_model(client):
    return model(client.get(api_path('definitions')), desired=False)


def prepare(module, client, prune, object_by_object=True):
    doc = load_desired(module)
    current = current_model(client)
    validate(doc, current, prune, module.params['login_user'])
    desired = model(doc, desired=True)
    actions, conflicts = plan(desired, current, prune, module.params['login_user'])
    if conflicts:
        raise DefinitionsError('; '.join(conflicts))
    if object_by_object:
        # a wholesale import (POST /api/definitions) does not need the login user's vhost permissions
        check_login_permissions(actions, current, desired, module.params['login_user'])
    return doc, current, actions


def check_login_permissions(actions, current, desired, login_user):
    """Declaring or deleting exchanges, queues and bindings needs a permission in their vhost."""
    doomed = set(a.key[0] for a in actions if a.op == 'delete' and a.kind == 'vhosts')
    # RabbitMQ grants the user who creates a vhost through the API full permissions in it
    created = set(a.key[0] for a in actions if a.op == 'create' and a.kind == 'vhosts')
    # permissions are put before anything is deleted (see execute), and prune never removes the login user's
    later = set(k[0] for k in current['permissions'] if k[1] == login_user) | set(k[0] for k in desired['permissions'] if k[1] == login_user)
    missing = set()
    for a in actions:
        if a.kind in ('exchanges', 'queues', 'bindings') and a.key[0] not in doomed:
            if a.key[0] not in later and a.key[0] not in created:
                missing.add(a.key[0])
    if missing:
        raise DefinitionsError(
            "login user '%s' has no permissions in vhost%s %s, which RabbitMQ requires to declare or delete "
            "exchanges, queues and bindings there; add a permission for it (for example {user: %s, vhost: ..., "
            "configure: '.*', write: '.*', read: '.*'}) to the set"
            % (login_user, 's' if len(missing) > 1 else '', ', '.join("'%s'" % v for v in sorted(missing)), login_user))


def _plan_result(actions, diff):
    summary = dict((op, sum(1 for a in actions if a.op == op)) for op in ('create', 'update', 'delete'))
    result = dict(changed=bool(actions), changes=[a.describe() for a in actions], summary=summary)
    if diff:
        result['diff'] = build_diff(actions)
    return result


def do_present(module, client):
    doc, current, actions = prepare(module, client, module.params['prune'])
    result = _plan_result(actions, module._diff)
    if actions and not module.check_mode:
        execute(client, actions, current)
    return result


def import_document(doc):
    """The document POSTed to /api/definitions: plain passwords hashed, extensions expanded."""
    out = dict((k, copy.deepcopy(v)) for k, v in doc.items() if k not in METADATA_KEYS)
    users = []
    for user in out.get('users') or []:
        user = dict(user)
        if user.get('password') is not None:
            user['hashing_algorithm'] = user.get('hashing_algorithm') or DEFAULT_HASHING
            user['password_hash'] = make_password_hash(str(user.pop('password')), user['hashing_algorithm'])
        user['tags'] = tags_list(user.get('tags'))
        if user.get('limits') is None:
            user.pop('limits', None)
        users.append(user)
    if 'users' in out:
        out['users'] = users
    params = list(out.get('parameters') or [])
    for vhost in out.get('vhosts') or []:
        limits = vhost.pop('limits', None)
        meta = dict(vhost.get('metadata') or {})
        for f in ('description', 'tags', 'default_queue_type'):
            if vhost.get(f) is not None:
                meta[f] = tags_list(vhost[f]) if f == 'tags' else vhost[f]
        if meta:
            vhost['metadata'] = meta
        if limits:
            params.append({'vhost': vhost['name'], 'component': 'vhost-limits', 'name': 'limits',
                           'value': normalise_mapping(limits)})
    for op in out.pop('operator_policies', None) or []:
        params.append({'vhost': op['vhost'], 'component': 'operator_policy', 'name': op['name'],
                       'value': dict((k, v) for k, v in normalise_policy(op).items())})
    if params:
        out['parameters'] = params
    for queue in out.get('queues') or []:
        if queue.get('type'):
            queue.setdefault('arguments', {}).setdefault('x-queue-type', queue.pop('type'))
    return out


def do_import(module, client):
    p = module.params
    doc, current, actions = prepare(module, client, prune=False, object_by_object=False)
    result = _plan_result(actions, module._diff)
    result['counts'] = counts_of(doc)
    if not actions or module.check_mode:
        return result
    safety = p['safety_export'] or '/var/tmp/warren-definitions-pre-import-%s.json' % (
        datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ'))
    write_file(module, safety, canonical_json(stable_export(client.get(api_path('definitions')), False)))
    result['safety_export'] = safety
    client.post(api_path('definitions'), import_document(doc))
    desired = model(doc, desired=True)
    after = current_model(client)
    # RabbitMQ grants the importing user full permissions in every vhost the import creates; take back
    # those the file does not have, so the cluster holds exactly what was exported.
    removed = []
    for key in sorted(after['permissions']):
        vhost, user = key
        if user == p['login_user'] and (vhost,) not in current['vhosts'] and key not in desired['permissions']:
            client.delete(api_path('permissions', vhost, user), vhost=vhost)
            removed.append(vhost)
    result['auto_permissions_removed'] = removed
    missing, conflicts = plan(desired, after, False, p['login_user'])
    if missing or conflicts:
        raise DefinitionsError('the import finished but RabbitMQ does not hold everything it should: %s. '
                               'The definitions from before the import are saved in %s'
                               % ('; '.join([a.describe() for a in missing] + conflicts), safety))
    return result


def run(module, client):
    state = module.params['state']
    if state == 'exported':
        return do_export(module, client)
    if state == 'imported':
        return do_import(module, client)
    return do_present(module, client)


def main():
    module = api_module(dict(
        state=dict(type='str', default='present', choices=['present', 'exported', 'imported']),
        src=dict(type='path'),
        definitions=dict(type='dict'),
        prune=dict(type='bool', default=False),
        dest=dict(type='path'),
        strip_metadata=dict(type='bool', default=False),
        safety_export=dict(type='path'),
    ), mutually_exclusive=[('src', 'definitions')],
        required_if=[('state', 'exported', ('dest',)),
                     ('state', 'present', ('src', 'definitions'), True),
                     ('state', 'imported', ('src', 'definitions'), True)])
    run_module(module, run, DefinitionsError)


if __name__ == '__main__':
    main()
