# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Value normalisation shared by warren's RabbitMQ modules.

RabbitMQ is strict about types (``"max-length": "10"`` is rejected) while values coming out
of Jinja are often strings, so desired values are normalised *before* they are compared or
sent: numeric strings become numbers, ``"true"``/``"false"`` become booleans, except for keys
whose values are strings by nature (exchange names, routing keys, modes). Comparing the
normalised forms means ``"10"`` vs ``10`` or a different key order never show as a change.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import json
import os
import re

# Policy keys (and the same names with an ``x-`` prefix as queue arguments) whose values are
# strings even when they look like numbers: a routing key "123" must stay "123".
STRING_KEYS = frozenset([
    'alternate-exchange', 'dead-letter-exchange', 'dead-letter-routing-key', 'dead-letter-strategy',
    'federation-upstream', 'federation-upstream-set', 'ha-mode', 'ha-sync-mode',
    'ha-promote-on-shutdown', 'ha-promote-on-failure', 'max-age', 'overflow', 'queue-mode',
    'queue-master-locator', 'queue-leader-locator', 'queue-type', 'queue-version',
    'single-active-consumer-tag', 'stream-filter-size-bytes-unit', 'filter-value',
])

# Queue arguments that a policy can set instead; RabbitMQ cannot change a queue's arguments in
# place, but a policy applies to existing queues at once.
ARGUMENT_POLICY_KEYS = {
    'x-message-ttl': 'message-ttl',
    'x-expires': 'expires',
    'x-max-length': 'max-length',
    'x-max-length-bytes': 'max-length-bytes',
    'x-overflow': 'overflow',
    'x-dead-letter-exchange': 'dead-letter-exchange',
    'x-dead-letter-routing-key': 'dead-letter-routing-key',
    'x-dead-letter-strategy': 'dead-letter-strategy',
    'x-delivery-limit': 'delivery-limit',
    'x-max-age': 'max-age',
    'x-stream-max-segment-size-bytes': 'stream-max-segment-size-bytes',
    'x-queue-leader-locator': 'queue-leader-locator',
    'x-max-in-memory-length': 'max-in-memory-length',
    'x-max-in-memory-bytes': 'max-in-memory-bytes',
}

APPLY_TO = ('all', 'exchanges', 'queues', 'classic_queues', 'quorum_queues', 'streams')
QUEUE_TYPES = ('classic', 'quorum', 'stream')

_INT_RE = re.compile(r'^[+-]?[0-9]+$')
_FLOAT_RE = re.compile(r'^[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$')

HASH_FUNCTIONS = {
    'rabbit_password_hashing_sha256': hashlib.sha256,
    'rabbit_password_hashing_sha512': hashlib.sha512,
    'rabbit_password_hashing_md5': hashlib.md5,
}
DEFAULT_HASHING = 'rabbit_password_hashing_sha256'


def scalar(value):
    """``"10"`` -> 10, ``"1.5"`` -> 1.5, ``"true"`` -> True; anything else unchanged."""
    if isinstance(value, str):
        text = value.strip()
        if _INT_RE.match(text):
            return int(text)
        if _FLOAT_RE.match(text):
            return float(text)
        if text.lower() in ('true', 'false'):
            return text.lower() == 'true'
    return value


def _normalise_entry(key, value):
    bare = key[2:] if key.startswith('x-') else key
    if bare in STRING_KEYS:
        if isinstance(value, bool):
            return 'true' if value else 'false'
        if isinstance(value, (int, float)):
            return str(value)
        return value
    if isinstance(value, dict):
        return dict((str(k), scalar(v)) for k, v in value.items())
    if isinstance(value, list):
        return [scalar(v) for v in value]
    return scalar(value)


def normalise_mapping(mapping):
    """Normalise a policy definition or an argument table (see module docstring)."""
    if not mapping:
        return {}
    return dict((str(k), _normalise_entry(str(k), v)) for k, v in mapping.items())


def normalise_policy(policy):
    """The comparable form of a policy: pattern, apply-to, definition, priority."""
    apply_to = policy.get('apply-to', policy.get('apply_to')) or 'all'
    priority = policy.get('priority')
    return {
        'pattern': policy.get('pattern'),
        'apply-to': apply_to,
        'definition': normalise_mapping(policy.get('definition') or {}),
        'priority': int(scalar(priority)) if priority not in (None, '') else 0,
    }


def tags_list(tags):
    """Tags as a sorted list whether given as a list or as ``"a,b"``."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(',')
    return sorted(set(str(t).strip() for t in tags if str(t).strip()))


def check_password(password, password_hash, algorithm=None):
    """True when ``password`` matches RabbitMQ's stored ``password_hash``.

    RabbitMQ stores base64(salt + H(salt + utf8(password))) with a 4-byte salt, H chosen by
    ``hashing_algorithm``. Returns None when the hash cannot be checked (unknown algorithm or
    a malformed hash), False on mismatch or when the user has no password.
    """
    if not password_hash:
        return False
    func = HASH_FUNCTIONS.get(algorithm or DEFAULT_HASHING)
    if func is None:
        return None
    try:
        raw = base64.b64decode(password_hash)
    except (TypeError, ValueError):
        return None
    salt, digest = raw[:4], raw[4:]
    if len(raw) <= 4:
        return None
    return func(salt + password.encode('utf-8')).digest() == digest


def make_password_hash(password, algorithm=DEFAULT_HASHING, salt=None):
    """Hash a password the way RabbitMQ does, for definition imports."""
    func = HASH_FUNCTIONS[algorithm]
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + func(salt + password.encode('utf-8')).digest()).decode('ascii')


def canonical_json(doc):
    """Stable text for a JSON document: sorted keys, two-space indent, trailing newline."""
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, separators=(',', ': ')) + '\n'
