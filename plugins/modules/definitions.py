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
    exist nor are part of the same set, bindings whose source exchange or destination neither
    exists nor is in the set, policy keys and values RabbitMQ 4.x does not accept, regular
    expressions that do not compile (policy patterns, permissions), x-arguments with a wrong
    sign or type, and queues or exchanges whose type or arguments differ from the existing
    ones. The message names the object and the field and says how to fix it.
  - With O(state=present) a run never half-applies. If RabbitMQ still refuses a write, the
    writes done so far are undone in reverse order from the snapshot the plan was made from -
    created objects deleted, updated ones put back (users with their stored password hash),
    deleted ones recreated - and the task fails with RabbitMQ's message. C(changed) is false only
    when the rollback restored everything; RV(rollback) says what it did and, when a step failed,
    exactly what is still changed. Messages of a deleted queue cannot come back.
  - The login user cannot lock itself out. A set that takes the C(administrator) tag from
    O(login_user), or gives it a permission too narrow for the objects this run declares, is
    refused. A change of the login user's own password is applied only in a run of its own
    (a set that changes nothing else); mixed with other changes it is refused, because every
    request after it would need the new password.
  - For every vhost the set lists and this run creates or declares objects in, O(login_user)
    gets configure, write and read C(.*) there unless the set gives it a permission of its own.
    RabbitMQ grants the creator of a vhost that permission anyway, but two runs that meet (one
    creates the vhost, the other declares a queue in it a moment later) then fail half the time;
    an explicit permission, and a few retries of a write that races it, make both succeed.
  - Supports check mode and diff mode (the diff lists what would be created, changed and deleted).
version_added: 0.1.0
author:
  - warren SRE team (@warren-sre)
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
      - Guarded by O(prune_scope), O(prune_max_deletions) and O(prune_max_percent); the planned
        deletions are in RV(deletions) and, in diff mode, in the diff's C(before).
    type: bool
    default: false
  prune_scope:
    description:
      - V(cluster) prunes the whole cluster - every vhost, user, global parameter and every object in
        every vhost that the set does not name.
      - V(vhosts) prunes only inside the vhosts the set lists under C(vhosts) - their permissions,
        parameters, policies, exchanges, queues and bindings. Vhosts, users and global parameters are
        then never deleted. Use it when other teams own other vhosts of the same cluster.
    type: str
    choices: [cluster, vhosts]
    default: cluster
  prune_max_deletions:
    description:
      - Refuse a prune that would delete more than this many objects (the task fails and lists
        them) unless O(prune_force=true). The check runs in check mode too.
    type: int
    default: 50
  prune_max_percent:
    description:
      - Refuse a prune that would delete more than this share (in percent) of the objects in its
        scope unless O(prune_force=true). A set that names almost nothing would otherwise empty
        the cluster.
    type: float
    default: 50.0
  prune_force:
    description: Go ahead with a prune above O(prune_max_deletions) or O(prune_max_percent).
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
  - warren.rabbitmq.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: posix
    details: Any host that reaches the management API over HTTP(S); the controller with C(delegate_to=localhost) works.
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
    O(state=present) the module puts that permission explicitly (see the description) and leaves
    it in place (O(prune) never removes the login user's permissions). With O(state=imported) it
    is taken back when the file does not grant it, so that a re-export is byte-identical to the
    imported file.
  - Regular expressions are checked with Python's C(re); RabbitMQ uses PCRE. Patterns that use
    PCRE-only syntax (for example C(\\Q...\\E), C((?|...)), recursion) are left to RabbitMQ,
    whose refusal is then rolled back.
  - Two runs of the same set at the same time both succeed. Two runs of different sets that
    touch the same objects are not serialised - the last write wins.
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
        # The login user needs configure/write/read in a vhost to declare its exchanges, queues
        # and bindings. The module adds this permission by itself for a vhost the set creates;
        # writing it down keeps it visible and lets prune runs and audits see it.
        - {user: admin, vhost: orders, configure: ".*", write: ".*", read: ".*"}
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

- name: Apply a definitions file and delete everything it does not name (inside its own vhosts)
  warren.rabbitmq.definitions:
    src: /etc/rabbitmq/definitions.json
    prune: true
    prune_scope: vhosts
    prune_max_deletions: 20
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
deletions:
  description: The deletions among RV(changes) (planned or done); with a refused prune, in the failure result too.
  returned: state is present or imported
  type: list
  elements: str
  sample: ["delete queue 'orders.old' in vhost 'orders'"]
rollback:
  description:
    - Only when a write failed. What the rollback did - C(attempted) (writes sent, including the
      failed one), C(undone) (their undo steps that worked, newest first), C(failed) (one entry per
      object still changed, with C(object), C(left) and C(error)) and C(complete).
  returned: failure after a write
  type: dict
  sample: {attempted: 3, undone: ["create queue 'q' in vhost '/'", "create user 'u'"], failed: [], complete: true}
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
    RabbitMQAPIError,
    api_module,
    api_path,
    run_module,
)
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_checks import regex_matches
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_kinds import (
    BY_KEY,
    TYPES,
    DefinitionsError,
)
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_rollback import Journal
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_values import (
    DEFAULT_HASHING,
    canonical_json,
    check_password,
    make_password_hash,
    normalise_mapping,
    normalise_policy,
    tags_list,
)

METADATA_KEYS = ('rabbit_version', 'rabbitmq_version', 'product_name', 'product_version',
                 'rabbitmq_definition_format', 'original_cluster_name', 'explanation')
MASK = '********'


def identity(kind, obj):
    return BY_KEY[kind].identity(obj)


def label(kind, key):
    return BY_KEY[kind].label(key)


# -- normalisation -----------------------------------------------------------------------------

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
    for kind in BY_KEY.values():
        objs = {}
        for raw in source.get(kind.key) or []:
            if kind.key == 'vhosts' and raw['name'] in limits and raw.get('limits') is None:
                raw = dict(raw, limits=limits[raw['name']])
            if kind.key == 'exchanges' and not desired and kind.builtin(raw['name']):
                continue
            obj = kind.normalise(raw, desired)
            objs[kind.identity(obj)] = obj
        out[kind.key] = objs
    if desired:
        # limits given as a vhost-limits parameter for a vhost the set does not list: manage only them
        for name, value in sorted(limits.items()):
            if (name,) not in out['vhosts']:
                out['vhosts'][(name,)] = BY_KEY['vhosts'].normalise({'name': name, 'limits': value}, True)
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
    for kind in BY_KEY.values():
        items = doc.get(kind.key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise DefinitionsError("'%s' must be a list, got %s" % (kind.key, type(items).__name__))
        for index, item in enumerate(items):
            where = _item_label(kind.key, index, item)
            if not isinstance(item, dict):
                raise DefinitionsError('%s must be a dict, got %s' % (where, type(item).__name__))
            missing = [f for f in kind.required if item.get(f) is None]
            if missing:
                raise DefinitionsError('%s is missing required field%s: %s'
                                       % (where, 's' if len(missing) > 1 else '', ', '.join(missing)))
            for f in kind.required:
                if f not in ('value', 'definition') and not isinstance(item[f], str):
                    raise DefinitionsError('%s: field %s must be a string' % (where, f))
            kind.check_values(where, item)
            key = kind.identity(kind.normalise(item, True))
            if key in seen.setdefault(kind.key, set()):
                raise DefinitionsError('%s is a duplicate of an earlier %s' % (where, kind.singular))
            seen[kind.key].add(key)

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


# -- planning ----------------------------------------------------------------------------------

class Action:
    def __init__(self, op, kind, key, before, after, detail=''):
        self.op, self.kind, self.key, self.before, self.after, self.detail = op, kind, key, before, after, detail

    def describe(self):
        text = '%s %s' % (self.op, label(self.kind, self.key))
        return text + (' (%s)' % self.detail if self.detail else '')


def _effective(want, have):
    """The object as it will be: unmanaged (missing) fields keep their current values."""
    merged = dict(have)
    merged.update(want)
    return merged


def _password_state(want, have):
    """Return (changed, unverifiable) for the password part of a user."""
    if 'password' in want:
        ok = check_password(want['password'], have.get('password_hash'), have.get('hashing_algorithm'))
        if ok is None:
            return True, True
        return not ok, False
    if 'password_hash' in want:
        return (want['password_hash'] != have.get('password_hash')
                or want['hashing_algorithm'] != have.get('hashing_algorithm')), False
    return False, False


def plan(desired, current, prune, login_user, prune_vhosts=None):
    """Compare models; return (actions, conflicts).

    ``prune_vhosts``: a set of vhost names to limit prune to (objects inside them only), or None
    for the whole cluster.
    """
    actions, conflicts = [], []
    for kind in BY_KEY.values():
        want_all, have_all = desired[kind.key], current[kind.key]
        for key, want in want_all.items():
            have = have_all.get(key)
            if have is None:
                actions.append(Action('create', kind.key, key, None, want))
                continue
            fields = kind.compare(want, have)
            if kind.immutable and fields:
                conflicts.append(kind.conflict(key, want, have, fields))
                continue
            if kind.key == 'users':
                pw_changed, unverifiable = _password_state(want, have)
                if pw_changed:
                    fields.append('password' + (' (stored hash cannot be checked)' if unverifiable else ''))
            if fields:
                actions.append(Action('update', kind.key, key, have, _effective(want, have), ', '.join(fields)))
        if prune:
            for key, have in have_all.items():
                if key in want_all or kind.protected(key, login_user):
                    continue
                if prune_vhosts is not None and not (kind.in_vhost and key[0] in prune_vhosts):
                    continue
                actions.append(Action('delete', kind.key, key, have, None))
    return actions, conflicts


# -- applying ----------------------------------------------------------------------------------

RACE_RETRIES = 3


def apply_action(client, action, current, journal=None, race_vhosts=()):
    """Send one action; writes into a vhost the set lists are retried when they race.

    Right after a vhost is created (by this run or by another one a moment before), the login
    user's permission in it may not be visible yet: a 401 or 404 there is retried a few times
    before it counts as a failure.
    """
    kind = BY_KEY[action.kind]
    if journal is not None:
        journal.record(action)
    for attempt in range(RACE_RETRIES + 1):
        try:
            if action.op == 'delete':
                kind.delete(client, action.key, action.before, current)
            else:
                kind.put(client, action.after, action.before)
            return
        except RabbitMQAPIError as e:
            racing = e.status in (401, 404) and kind.in_vhost and action.key[0] in race_vhosts
            if not racing or attempt == RACE_RETRIES:
                raise
            client.sleep(max(0.5, client.retry_delay))


def execute(client, actions, current, journal=None, race_vhosts=()):
    """Vhosts, users and permissions first, then deletes (children first), then everything else."""
    def send(a):
        apply_action(client, a, current, journal, race_vhosts)

    for a in actions:
        if a.op != 'delete' and BY_KEY[a.kind].first:
            send(a)
    deletes = [a for a in actions if a.op == 'delete']
    doomed_vhosts = set(a.key[0] for a in deletes if a.kind == 'vhosts')
    doomed_users = set(a.key[0] for a in deletes if a.kind == 'users')
    # Deletes first, children before parents; what dies with its vhost or user is skipped.
    for a in sorted(deletes, key=lambda a: -TYPES.index(a.kind)):
        if BY_KEY[a.kind].in_vhost and a.key[0] in doomed_vhosts:
            continue
        if a.kind in ('permissions', 'topic_permissions') and a.key[1] in doomed_users:
            continue
        send(a)
    for a in actions:
        if a.op != 'delete' and not BY_KEY[a.kind].first:
            send(a)


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
        k = BY_KEY[a.kind].diff_key(a.key)
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


# Exchanges every vhost has; the nameless default exchange takes no explicit bindings.
BUILTIN_EXCHANGES = ('amq.direct', 'amq.fanout', 'amq.headers', 'amq.match', 'amq.topic', 'amq.rabbitmq.trace')
LOGIN_PERMISSION = {'configure': '.*', 'write': '.*', 'read': '.*'}


def prepare(module, client, prune, object_by_object=True):
    p = module.params
    login_user = p['login_user']
    doc = load_desired(module)
    current = current_model(client)
    scope = p.get('prune_scope') or 'cluster'
    validate(doc, current, prune and scope == 'cluster', login_user)
    desired = model(doc, desired=True)
    prune_vhosts = set(k[0] for k in desired['vhosts']) if prune and scope == 'vhosts' else None
    actions, conflicts = plan(desired, current, prune, login_user, prune_vhosts)
    if conflicts:
        raise DefinitionsError('; '.join(conflicts))
    check_references(desired, current, actions)
    if object_by_object:
        actions += grant_login_user(actions, current, desired, login_user)
        check_self_lockout(actions, current, desired, login_user)
        # a wholesale import (POST /api/definitions) does not need the login user's vhost permissions
        check_login_permissions(actions, current, desired, login_user)
    if prune:
        check_prune(actions, current, p, prune_vhosts)
    return doc, current, actions


def check_references(desired, current, actions):
    """Every binding's source exchange and destination must exist after the run (set or server)."""
    deleted = set((a.kind, a.key) for a in actions if a.op == 'delete')
    doomed_vhosts = set(k[0] for kind, k in deleted if kind == 'vhosts')

    def exists(kind, vhost, name):
        if kind == 'exchanges' and name in BUILTIN_EXCHANGES:
            return vhost not in doomed_vhosts
        key = (vhost, name)
        if key in desired[kind]:
            return True
        return key in current[kind] and (kind, key) not in deleted and vhost not in doomed_vhosts

    for key, b in sorted(desired['bindings'].items()):
        where = BY_KEY['bindings'].label(key)
        if b['source'] == '':
            raise DefinitionsError("%s: source '' is the default exchange, which binds every queue by its name "
                                   "on its own; remove the binding or bind from a named exchange" % where)
        if not exists('exchanges', b['vhost'], b['source']):
            raise DefinitionsError("%s: source exchange '%s' does not exist in vhost '%s' and is not in the set. "
                                   "Fix: add it to 'exchanges' or correct the binding's source"
                                   % (where, b['source'], b['vhost']))
        dkind = 'queues' if b['destination_type'] == 'queue' else 'exchanges'
        if not exists(dkind, b['vhost'], b['destination']):
            raise DefinitionsError("%s: destination %s '%s' does not exist in vhost '%s' and is not in the set. "
                                   "Fix: add it to '%s' or correct the binding's destination"
                                   % (where, b['destination_type'], b['destination'], b['vhost'], dkind))


def grant_login_user(actions, current, desired, login_user):
    """Permission for the login user in vhosts the set lists and this run needs to write into.

    A vhost the set creates (or declares exchanges, queues or bindings in) needs configure, write
    and read for the login user, or the run fails half-way - also when another run created the
    vhost a moment before. A permission the set gives the login user there wins.
    """
    needs = set(a.key[0] for a in actions if a.op == 'create' and a.kind == 'vhosts')
    needs |= set(a.key[0] for a in actions if a.kind in ('exchanges', 'queues', 'bindings') and a.op != 'delete')
    grants = []
    for vhost in sorted(needs):
        key = (vhost, login_user)
        if (vhost,) in desired['vhosts'] and key not in desired['permissions'] and key not in current['permissions']:
            obj = dict(LOGIN_PERMISSION, user=login_user, vhost=vhost)
            grants.append(Action('create', 'permissions', key, None, obj,
                                 'login user, needed to declare objects in the vhost'))
    return grants


def check_self_lockout(actions, current, desired, login_user):
    """Refuse a set that would take away what the login user needs to run the module again."""
    want = desired['users'].get((login_user,))
    if want is not None and 'tags' in want and 'administrator' not in want['tags']:
        raise DefinitionsError(
            "refused: the set gives the login user '%s' the tags %s, without 'administrator'; the module needs that "
            "tag, so the next run could not log in to manage definitions. Fix: add 'administrator' to its tags, or "
            "change this user while logged in as another administrator" % (login_user, json.dumps(want['tags'])))
    others = [a for a in actions if not (a.kind == 'users' and a.key == (login_user,))]
    own = [a for a in actions if a.kind == 'users' and a.key == (login_user,) and 'password' in a.detail]
    if own and others:
        raise DefinitionsError(
            "refused: the set changes the password of the login user '%s' together with %d other change%s. "
            "Every request after the password change would need the new password. Fix: change that password in a "
            "run of its own (a set with only that user), then use the new password as login_password for the rest"
            % (login_user, len(others), '' if len(others) == 1 else 's'))
    for vhost, perm, need in _needed_access(actions, desired, login_user):
        raise DefinitionsError(
            "refused: the set gives the login user '%s' the permission %s in vhost '%s', but this run needs %s "
            "there. Fix: widen that permission (configure/write/read '.*' is what the module grants a vhost it "
            "creates), or leave the login user's permission out of the set"
            % (login_user, json.dumps(dict((f, perm[f]) for f in ('configure', 'write', 'read')), sort_keys=True),
               vhost, need))


def _needed_access(actions, desired, login_user):
    """(vhost, permission, what is missing) where the set's own permission for the login user is too narrow."""
    for a in actions:
        if a.kind not in ('exchanges', 'queues', 'bindings'):
            continue
        perm = desired['permissions'].get((a.key[0], login_user))
        if perm is None:
            continue
        if a.kind == 'bindings':
            obj = a.after or a.before
            needs = [('write', obj['destination']), ('read', obj['source'])]
        else:
            needs = [('configure', a.key[1])]
        for field, name in needs:
            if regex_matches(perm[field], name) is False:
                yield a.key[0], perm, "%s access to '%s' (to %s %s)" % (field, name, a.op, label(a.kind, a.key))


def check_login_permissions(actions, current, desired, login_user):
    """Declaring or deleting exchanges, queues and bindings needs a permission in their vhost."""
    doomed = set(a.key[0] for a in actions if a.op == 'delete' and a.kind == 'vhosts')
    # RabbitMQ grants the user who creates a vhost through the API full permissions in it
    created = set(a.key[0] for a in actions if a.op == 'create' and a.kind == 'vhosts')
    # permissions are put before anything is deleted (see execute), and prune never removes the login user's
    later = set(k[0] for k in current['permissions'] if k[1] == login_user) | set(
        a.key[0] for a in actions if a.kind == 'permissions' and a.key[1] == login_user and a.op != 'delete') | set(
        k[0] for k in desired['permissions'] if k[1] == login_user)
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


def check_prune(actions, current, params, prune_vhosts):
    """Refuse a prune that deletes more than prune_max_deletions objects or prune_max_percent of them."""
    deletions = [a for a in actions if a.op == 'delete']
    in_scope = sum(1 for kind in BY_KEY.values() for key in current[kind.key]
                   if prune_vhosts is None or (kind.in_vhost and key[0] in prune_vhosts))
    limit, percent = params.get('prune_max_deletions'), params.get('prune_max_percent')
    share = 100.0 * len(deletions) / in_scope if in_scope else 0.0
    over = []
    if limit is not None and len(deletions) > limit:
        over.append('%d deletions, more than prune_max_deletions=%d' % (len(deletions), limit))
    if percent is not None and share > percent:
        over.append('%.0f%% of the %d objects in scope, more than prune_max_percent=%s' % (share, in_scope, percent))
    if over and not params.get('prune_force'):
        raise DefinitionsError(
            'refused to prune: %s. Planned deletions: %s. Fix: check the list; narrow it with prune_scope=vhosts '
            '(only inside the vhosts the set names), or set prune_force=true to go ahead'
            % ('; '.join(over), '; '.join(a.describe() for a in deletions)),
            deletions=[a.describe() for a in deletions])


def _plan_result(actions, diff):
    summary = dict((op, sum(1 for a in actions if a.op == op)) for op in ('create', 'update', 'delete'))
    result = dict(changed=bool(actions), changes=[a.describe() for a in actions], summary=summary,
                  deletions=[a.describe() for a in actions if a.op == 'delete'])
    if diff:
        result['diff'] = build_diff(actions)
    return result


def _not_found_message(client, action, error):
    """Name the object a 404 is about: the vhost, or a binding's exchange or queue."""
    vhost = action.key[0]
    if BY_KEY[action.kind].in_vhost and not client.vhost_exists(vhost):
        return "vhost '%s' does not exist" % vhost
    if action.kind == 'bindings':
        b = action.after or action.before
        dkind = 'queues' if b['destination_type'] == 'queue' else 'exchanges'
        for what, name in (('exchanges', b['source']), (dkind, b['destination'])):
            if client.get(api_path(what, vhost, name), missing_ok=True, vhost=vhost) is None:
                return "%s '%s' does not exist in vhost '%s'" % (BY_KEY[what].singular, name, vhost)
    return str(error)


def do_present(module, client):
    doc, current, actions = prepare(module, client, module.params['prune'])
    result = _plan_result(actions, module._diff)
    if not actions or module.check_mode:
        return result
    journal = Journal(current, module.params['login_user'])
    race_vhosts = set(k[0] for k in model(doc, desired=True)['vhosts'])
    try:
        execute(client, actions, current, journal, race_vhosts)
    except RabbitMQAPIError as e:
        failed_action = journal.entries[-1]
        reason = _not_found_message(client, failed_action, e) if e.status == 404 else str(e)
        undone, leftovers = journal.undo(client)
        rollback = dict(attempted=len(journal.entries), undone=undone, failed=leftovers,
                        complete=not leftovers)
        if leftovers:
            state = ('the rollback did NOT restore everything; still changed: %s'
                     % '; '.join('%s: %s (%s)' % (f['object'], f['left'], f['error']) for f in leftovers))
        else:
            state = 'all %d write%s of this run were rolled back; the cluster is as before' % (
                len(journal.entries), '' if len(journal.entries) == 1 else 's')
        raise DefinitionsError('RabbitMQ refused to %s: %s. %s'
                               % (failed_action.describe(), reason, state),
                               changed=bool(leftovers), status=e.status, rollback=rollback,
                               changes=result['changes'], summary=result['summary'])
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
        prune_scope=dict(type='str', default='cluster', choices=['cluster', 'vhosts']),
        prune_max_deletions=dict(type='int', default=50),
        prune_max_percent=dict(type='float', default=50.0),
        prune_force=dict(type='bool', default=False),
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
