# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One descriptor per RabbitMQ object kind, for warren.rabbitmq.definitions.

Each kind (vhost, user, permission, topic permission, parameter, global parameter, policy,
operator policy, exchange, queue, binding) is a subclass of :class:`Kind` that says, in one
place:

* ``key`` (the name in a definitions document), ``singular`` and ``required`` fields;
* ``identity(obj)``, ``label(key)`` and ``diff_key(key)``;
* ``normalise(raw, desired)``: the comparable form of an object;
* ``check_values(where, item)``: the checks that need no server;
* ``compare(want, have)``: which managed fields differ, and ``immutable`` when RabbitMQ cannot
  change an existing object in place (a difference is then a conflict, see ``conflict()``);
* ``protected(key, login_user)``: what prune never deletes;
* ``put(client, obj, have)`` and ``delete(client, key, have, current)``: the API calls;
* ``path(key)``: the API path that reads one object (used to name what a 404 is about).

Limits are the :class:`Limits` component of vhosts and users (the definitions format nests them
there; the API keeps them under ``/api/vhost-limits`` and ``/api/user-limits``).

Adding a kind: write its class and add it to :data:`KINDS` (creation order; deletes run in
reverse).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_api import api_path
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_checks import (
    EXCHANGE_ARGUMENT_KEYS,
    argument_problems,
    policy_definition_problems,
    regex_problem,
)
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_values import (
    APPLY_TO,
    ARGUMENT_POLICY_KEYS,
    DEFAULT_HASHING,
    HASH_FUNCTIONS,
    QUEUE_TYPES,
    canonical_json,
    normalise_mapping,
    normalise_policy,
    tags_list,
)


class DefinitionsError(Exception):
    """Bad input or a plan RabbitMQ cannot carry out; ``result`` holds extra fields for the task result."""

    def __init__(self, msg, **result):
        super(DefinitionsError, self).__init__(msg)
        self.result = result


def check_regex_fields(where, item, fields):
    for field in fields:
        problem = regex_problem(item[field])
        if problem:
            raise DefinitionsError("%s: %s %s. Fix: escape the special character (for example '\\\\.' for a "
                                   "dot) or use '.*' for everything, '' for nothing" % (where, field, problem))


def check_arguments(where, arguments, known=None):
    problems = argument_problems(normalise_mapping(arguments or {}), known)
    if problems:
        raise DefinitionsError('%s: arguments: %s. Fix the value; RabbitMQ would refuse it'
                               % (where, '; '.join(problems)))


def as_bool(value, default):
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ('true', 'yes', '1', 'on')
    return bool(value)


class Limits:
    """Per-owner limits (``max-connections``...), one API object per limit name."""

    def __init__(self, resource, allowed):
        self.resource, self.allowed = resource, allowed

    def check(self, where, limits):
        if limits is None:
            return
        if not isinstance(limits, dict):
            raise DefinitionsError('%s: limits must be a dict' % where)
        for name, value in limits.items():
            if name not in self.allowed:
                raise DefinitionsError("%s: unknown limit '%s' (known: %s)" % (where, name, ', '.join(self.allowed)))
            try:
                int(value)
            except (TypeError, ValueError):
                raise DefinitionsError("%s: limit %s must be an integer, got '%s'" % (where, name, value))

    def sync(self, client, owner, want, have):
        """Set the limits in ``want`` and remove the others; ``want=None`` leaves them unmanaged."""
        if want is None:
            return
        have = have or {}
        for name, value in sorted(want.items()):
            if have.get(name) != value:
                client.put(api_path(self.resource, owner, name), {'value': int(value)})
        for name in sorted(set(have) - set(want)):
            client.delete(api_path(self.resource, owner, name))


VHOST_LIMITS = Limits('vhost-limits', ('max-connections', 'max-queues'))
USER_LIMITS = Limits('user-limits', ('max-connections', 'max-channels'))


class Kind:
    """Defaults for an object that lives in a vhost and is named by ``name``."""

    key = None
    singular = None
    required = ()
    fields = ()                 # fields sent on PUT
    resource = None             # first API path segment
    in_vhost = True             # identity starts with the vhost; dies with it
    first = False               # applied before deletes (others need it)
    immutable = False           # a difference is a conflict, not an update

    # -- identity ----------------------------------------------------------------------------

    def identity(self, obj):
        return (obj['vhost'], obj['name'])

    def label(self, key):
        return "%s '%s' in vhost '%s'" % (self.singular, key[1], key[0])

    def diff_key(self, key):
        return ' | '.join(key)

    def path(self, key):
        return api_path(self.resource, *key)

    # -- values ------------------------------------------------------------------------------

    def normalise(self, raw, desired):
        return dict((f, raw[f]) for f in self.required)

    def check_values(self, where, item):
        """Checks of one desired item that need no server; raise DefinitionsError."""

    def compare(self, want, have):
        return sorted(f for f in set(want) | set(have) if want.get(f) != have.get(f))

    def conflict(self, key, want, have, fields):
        raise NotImplementedError

    def protected(self, key, login_user):
        return False

    # -- API ---------------------------------------------------------------------------------

    def put(self, client, obj, have):
        client.put(self.path(self.identity(obj)), dict((f, obj[f]) for f in self.fields), vhost=obj['vhost'])

    def delete(self, client, key, have, current):
        client.delete(self.path(key), vhost=key[0])


class VhostKind(Kind):
    key, singular, required = 'vhosts', 'vhost', ('name',)
    resource, in_vhost, first = 'vhosts', False, True
    limits = VHOST_LIMITS

    def identity(self, obj):
        return (obj['name'],)

    def label(self, key):
        return "vhost '%s'" % key[0]

    def normalise(self, raw, desired):
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

    def check_values(self, where, item):
        dqt = item.get('default_queue_type', (item.get('metadata') or {}).get('default_queue_type'))
        if dqt is not None and dqt not in QUEUE_TYPES:
            raise DefinitionsError("%s: default_queue_type '%s' is not one of %s" % (where, dqt, ', '.join(QUEUE_TYPES)))
        self.limits.check(where, item.get('limits'))

    def compare(self, want, have):
        return [f for f in ('description', 'tags', 'default_queue_type', 'limits') if f in want and want[f] != have.get(f)]

    def put(self, client, obj, have):
        body = dict((f, obj[f]) for f in ('description', 'default_queue_type') if obj.get(f) is not None)
        if obj.get('tags') is not None:
            body['tags'] = ','.join(obj['tags'])
        client.put(api_path('vhosts', obj['name']), body)
        self.limits.sync(client, obj['name'], obj.get('limits'), (have or {}).get('limits'))

    def delete(self, client, key, have, current):
        client.delete(api_path('vhosts', key[0]))


class UserKind(Kind):
    key, singular, required = 'users', 'user', ('name',)
    resource, in_vhost, first = 'users', False, True
    limits = USER_LIMITS

    def identity(self, obj):
        return (obj['name'],)

    def label(self, key):
        return "user '%s'" % key[0]

    def normalise(self, raw, desired):
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

    def check_values(self, where, item):
        algo = item.get('hashing_algorithm')
        if algo is not None and algo not in HASH_FUNCTIONS:
            raise DefinitionsError("%s: unknown hashing_algorithm '%s'" % (where, algo))
        if item.get('password') is not None and item.get('password_hash') is not None:
            raise DefinitionsError('%s: give password or password_hash, not both' % where)
        self.limits.check(where, item.get('limits'))

    def compare(self, want, have):
        return [f for f in ('tags', 'limits') if f in want and want[f] != have.get(f)]

    def protected(self, key, login_user):
        return key[0] == login_user

    @staticmethod
    def body(obj, have):
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

    def put(self, client, obj, have):
        client.put(api_path('users', obj['name']), self.body(obj, have))
        self.limits.sync(client, obj['name'], obj.get('limits'), (have or {}).get('limits'))

    def delete(self, client, key, have, current):
        client.delete(api_path('users', key[0]))


class PermissionKind(Kind):
    key, singular = 'permissions', 'permission'
    required = fields = ('user', 'vhost', 'configure', 'write', 'read')
    resource, first = 'permissions', True

    def identity(self, obj):
        return (obj['vhost'], obj['user'])

    def label(self, key):
        return "permission of user '%s' in vhost '%s'" % (key[1], key[0])

    regex_fields = ('configure', 'write', 'read')

    def check_values(self, where, item):
        check_regex_fields(where, item, self.regex_fields)

    def protected(self, key, login_user):
        return key[1] == login_user

    def put(self, client, obj, have):
        client.put(self.path(self.identity(obj)), dict((f, obj[f]) for f in ('configure', 'write', 'read')),
                   vhost=obj['vhost'])


class TopicPermissionKind(PermissionKind):
    key, singular = 'topic_permissions', 'topic permission'
    required = fields = ('user', 'vhost', 'exchange', 'write', 'read')
    resource = 'topic-permissions'
    regex_fields = ('write', 'read')

    def identity(self, obj):
        return (obj['vhost'], obj['user'], obj['exchange'])

    def label(self, key):
        return "topic permission of user '%s' on exchange '%s' in vhost '%s'" % (key[1], key[2], key[0])

    def path(self, key):
        return api_path(self.resource, key[0], key[1])

    def put(self, client, obj, have):
        client.put(self.path(self.identity(obj)), dict((f, obj[f]) for f in ('exchange', 'write', 'read')),
                   vhost=obj['vhost'])

    def delete(self, client, key, have, current):
        # The API deletes all topic permissions of a user in a vhost at once; put back the others.
        client.delete(self.path(key), vhost=key[0])
        for other_key, other in sorted(current[self.key].items()):
            if other_key[:2] == key[:2] and other_key != key:
                self.put(client, other, None)


class ParameterKind(Kind):
    key, singular = 'parameters', 'parameter'
    required = fields = ('vhost', 'component', 'name', 'value')
    resource = 'parameters'

    def identity(self, obj):
        return (obj['vhost'], obj['component'], obj['name'])

    def label(self, key):
        return "parameter '%s' of component '%s' in vhost '%s'" % (key[2], key[1], key[0])

    def path(self, key):
        return api_path(self.resource, key[1], key[0], key[2])


class GlobalParameterKind(Kind):
    key, singular = 'global_parameters', 'global parameter'
    required = fields = ('name', 'value')
    resource, in_vhost = 'global-parameters', False
    # internal to RabbitMQ: prune never deletes them
    internal = ('internal_cluster_id', 'cluster_name', 'cluster_tags')

    def identity(self, obj):
        return (obj['name'],)

    def label(self, key):
        return "global parameter '%s'" % key[0]

    def protected(self, key, login_user):
        return key[0] in self.internal

    def put(self, client, obj, have):
        client.put(self.path(self.identity(obj)), {'name': obj['name'], 'value': obj['value']})

    def delete(self, client, key, have, current):
        client.delete(self.path(key))


class PolicyKind(Kind):
    key, singular = 'policies', 'policy'
    required = ('vhost', 'name', 'pattern', 'definition')
    fields = ('pattern', 'apply-to', 'definition', 'priority')
    resource = 'policies'

    def normalise(self, raw, desired):
        out = normalise_policy(raw)
        out.update(vhost=raw['vhost'], name=raw['name'])
        return out

    def check_values(self, where, item):
        if not isinstance(item['definition'], dict) or not item['definition']:
            raise DefinitionsError('%s: definition must be a non-empty dict' % where)
        apply_to = item.get('apply-to', item.get('apply_to')) or 'all'
        if apply_to not in APPLY_TO:
            raise DefinitionsError("%s: apply-to '%s' is not one of %s" % (where, apply_to, ', '.join(APPLY_TO)))
        try:
            int(item.get('priority') or 0)
        except (TypeError, ValueError):
            raise DefinitionsError("%s: priority '%s' is not an integer" % (where, item.get('priority')))
        check_regex_fields(where, item, ('pattern',))
        problems = policy_definition_problems(normalise_mapping(item['definition']))
        if problems:
            raise DefinitionsError('%s: definition: %s. RabbitMQ 4.x would reject this policy; fix the key or '
                                   'value' % (where, '; '.join(problems)))


class OperatorPolicyKind(PolicyKind):
    key, singular = 'operator_policies', 'operator policy'
    resource = 'operator-policies'


class ExchangeKind(Kind):
    key, singular, required = 'exchanges', 'exchange', ('vhost', 'name', 'type')
    fields = ('type', 'durable', 'auto_delete', 'internal', 'arguments')
    resource, immutable = 'exchanges', True

    @staticmethod
    def builtin(name):
        return name == '' or name.startswith('amq.')

    def normalise(self, raw, desired):
        return {'vhost': raw['vhost'], 'name': raw['name'], 'type': raw['type'],
                'durable': as_bool(raw.get('durable'), True),
                'auto_delete': as_bool(raw.get('auto_delete'), False),
                'internal': as_bool(raw.get('internal'), False),
                'arguments': normalise_mapping(raw.get('arguments') or {})}

    types = ('direct', 'fanout', 'topic', 'headers')

    def check_values(self, where, item):
        if self.builtin(item['name']):
            raise DefinitionsError("%s: exchange names '' and 'amq.*' are reserved by RabbitMQ" % where)
        if item['type'] not in self.types and not item['type'].startswith('x-'):
            raise DefinitionsError("%s: type '%s' is not an exchange type (%s, or x-... from a plugin)"
                                   % (where, item['type'], ', '.join(self.types)))
        if item.get('arguments') is not None and not isinstance(item['arguments'], dict):
            raise DefinitionsError('%s: arguments must be a dict' % where)
        check_arguments(where, item.get('arguments'), EXCHANGE_ARGUMENT_KEYS)

    def protected(self, key, login_user):
        return self.builtin(key[1])

    def conflict(self, key, want, have, fields):
        diffs = ', '.join('%s: current %s, wanted %s' % (f, json.dumps(have.get(f)), json.dumps(want.get(f)))
                          for f in fields)
        return ("exchange '%s' in vhost '%s' exists with different properties, which RabbitMQ cannot change "
                "in place (%s). Fix: declare an exchange under a new name and move the bindings, or delete "
                "the exchange first." % (key[1], key[0], diffs))


class QueueKind(Kind):
    key, singular, required = 'queues', 'queue', ('vhost', 'name')
    fields = ('durable', 'auto_delete', 'arguments')
    resource, immutable = 'queues', True

    def normalise(self, raw, desired):
        args = dict(raw.get('arguments') or {})
        if raw.get('type') and 'x-queue-type' not in args:
            args['x-queue-type'] = raw['type']
        return {'vhost': raw['vhost'], 'name': raw['name'],
                'durable': as_bool(raw.get('durable'), True),
                'auto_delete': as_bool(raw.get('auto_delete'), False),
                'arguments': normalise_mapping(args)}

    def check_values(self, where, item):
        qtype = (item.get('arguments') or {}).get('x-queue-type') or item.get('type')
        if qtype is not None and qtype not in QUEUE_TYPES:
            raise DefinitionsError("%s: queue type '%s' is not one of %s" % (where, qtype, ', '.join(QUEUE_TYPES)))
        if item.get('arguments') is not None and not isinstance(item['arguments'], dict):
            raise DefinitionsError('%s: arguments must be a dict' % where)
        check_arguments(where, item.get('arguments'))

    def compare(self, want, have):
        wanted = dict(want['arguments'])
        current = dict(have['arguments'])
        if 'x-queue-type' not in wanted:
            current.pop('x-queue-type', None)
        fields = [f for f in ('durable', 'auto_delete') if want[f] != have[f]]
        fields += ['argument %s' % a for a in sorted(set(wanted) | set(current)) if wanted.get(a) != current.get(a)]
        return fields

    def conflict(self, key, want, have, fields):
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
                "place: %s. Fix: %s." % (key[1], key[0], '; '.join(parts), '; and '.join(fixes)))


class BindingKind(Kind):
    key, singular = 'bindings', 'binding'
    required = ('vhost', 'source', 'destination', 'destination_type')
    resource = 'bindings'

    def identity(self, obj):
        return (obj['vhost'], obj['source'], obj['destination_type'], obj['destination'],
                obj.get('routing_key') or '', canonical_json(obj.get('arguments') or {}))

    def label(self, key):
        return "binding from exchange '%s' to %s '%s' with routing key '%s' in vhost '%s'" % (
            key[1], key[2], key[3], key[4], key[0])

    def diff_key(self, key):
        return '%s: %s -> %s %s [%s] %s' % (key[0], key[1], key[2], key[3], key[4], key[5].strip().replace('\n', ''))

    def path(self, key, *extra):
        dest = 'q' if key[2] == 'queue' else 'e'
        return api_path('bindings', key[0], 'e', key[1], dest, key[3], *extra)

    def normalise(self, raw, desired):
        return {'vhost': raw['vhost'], 'source': raw['source'], 'destination': raw['destination'],
                'destination_type': raw['destination_type'], 'routing_key': raw.get('routing_key') or '',
                'arguments': normalise_mapping(raw.get('arguments') or {})}

    def check_values(self, where, item):
        if item['destination_type'] not in ('queue', 'exchange'):
            raise DefinitionsError("%s: destination_type '%s' must be queue or exchange"
                                   % (where, item['destination_type']))

    def protected(self, key, login_user):
        return key[1] == ''  # the default exchange's implicit bindings

    def put(self, client, obj, have):
        client.post(self.path(self.identity(obj)), {'routing_key': obj['routing_key'], 'arguments': obj['arguments']},
                    vhost=obj['vhost'])

    def delete(self, client, key, have, current):
        for b in client.get(self.path(key), missing_ok=True, vhost=key[0]) or []:
            if (b.get('routing_key') or '') == have['routing_key'] and \
                    normalise_mapping(b.get('arguments') or {}) == have['arguments']:
                # properties_key is used verbatim as one more path segment (so it is encoded again)
                client.delete(self.path(key, b['properties_key']), vhost=key[0])


# Creation order; deletion runs in reverse.
KINDS = (VhostKind(), UserKind(), PermissionKind(), TopicPermissionKind(), GlobalParameterKind(),
         ParameterKind(), PolicyKind(), OperatorPolicyKind(), ExchangeKind(), QueueKind(), BindingKind())
BY_KEY = dict((k.key, k) for k in KINDS)
TYPES = tuple(k.key for k in KINDS)
