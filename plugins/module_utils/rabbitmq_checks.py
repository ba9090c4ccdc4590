# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks that need no server: policy keys and values, regular expressions, queue arguments.

Shared by warren.rabbitmq.definitions and warren.rabbitmq.policy, so that what RabbitMQ 4.x
would reject is refused before the first write. Each check returns a list of problems (plain
sentences that say how to fix them); the caller names the object.

Regular expressions: RabbitMQ compiles policy patterns and permission patterns with Erlang's
``re`` module, which is PCRE. They are checked here with Python's ``re``, which accepts most of
the same syntax. Where they differ the check stays silent rather than refuse a valid PCRE
pattern: a pattern that uses PCRE-only syntax (``\\Q...\\E``, ``(?<name>...)`` before Python
3.12, ``(?|...)``, recursion ``(?R)``/``(?1)``, ``\\h``, ``\\R``, ``\\x{...}``, ``(*VERB)``) is
left to the server, whose rejection is then rolled back.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import re

# RabbitMQ 4.x policy keys: kind of value and the accepted values. ``int>=N`` means an integer
# of at least N; ``enum`` a fixed set of strings; ``str`` any non-empty string; ``bool`` a boolean.
POLICY_KEYS = {
    'alternate-exchange': ('str', None),
    'dead-letter-exchange': ('str', None),
    'dead-letter-routing-key': ('str', None),
    'dead-letter-strategy': ('enum', ('at-most-once', 'at-least-once')),
    'delivery-limit': ('int>=-1', None),
    'expires': ('int>=1', None),
    'federation-upstream': ('str', None),
    'federation-upstream-set': ('str', None),
    'initial-cluster-size': ('int>=1', None),
    'max-age': ('age', None),
    'max-length': ('int>=0', None),
    'max-length-bytes': ('int>=0', None),
    'message-ttl': ('int>=0', None),
    'overflow': ('enum', ('drop-head', 'reject-publish', 'reject-publish-dlx')),
    'queue-leader-locator': ('enum', ('client-local', 'balanced')),
    'queue-version': ('enum', (1, 2)),
    'stream-filter-size-bytes': ('int>=16', None),
    'stream-max-segment-size-bytes': ('int>=1', None),
    'target-group-size': ('int>=1', None),
    'consumer-timeout': ('int>=1', None),
    'single-active-consumer': ('bool', None),
}
# Keys RabbitMQ 4.0 removed (classic queue mirroring, lazy mode): say so instead of "unknown".
REMOVED_POLICY_KEYS = {
    'ha-mode': 'classic queue mirroring was removed in RabbitMQ 4.0; use quorum queues '
               '(x-queue-type: quorum) instead',
    'ha-params': 'classic queue mirroring was removed in RabbitMQ 4.0; use quorum queues instead',
    'ha-sync-mode': 'classic queue mirroring was removed in RabbitMQ 4.0; use quorum queues instead',
    'ha-promote-on-shutdown': 'classic queue mirroring was removed in RabbitMQ 4.0',
    'ha-promote-on-failure': 'classic queue mirroring was removed in RabbitMQ 4.0',
    'queue-mode': 'lazy mode is gone since RabbitMQ 3.12 (classic queues v2 always page to disk); remove the key',
    'queue-master-locator': 'renamed queue-leader-locator (client-local or balanced)',
}
# Queue arguments (x-...) warren knows: same value rules as the policy key of the same name.
ARGUMENT_KEYS = dict(('x-' + k, v) for k, v in POLICY_KEYS.items()
                     if k not in ('federation-upstream', 'federation-upstream-set', 'alternate-exchange',
                                  'target-group-size'))
ARGUMENT_KEYS.update({
    'x-max-priority': ('int1-255', None),
    'x-queue-type': ('enum', ('classic', 'quorum', 'stream')),
    'x-quorum-initial-group-size': ('int>=1', None),
    'x-quorum-target-group-size': ('int>=1', None),
})
EXCHANGE_ARGUMENT_KEYS = {'alternate-exchange': ('str', None)}

_AGE_RE = re.compile(r'^[0-9]+(Y|M|D|h|m|s)$')
_PCRE_ONLY = re.compile(r'\\Q|\\E|\(\?\||\(\?R\)|\(\?[0-9]+\)|\(\?&|\\h|\\H|\\R|\\x\{|\(\*[A-Z]|\\g\{|\(\?P>')


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def value_problem(key, value, rule):
    """Why ``value`` is not acceptable for ``key`` under ``rule``, or None."""
    kind, allowed = rule
    if kind.startswith('int'):
        if not _is_int(value):
            return '%s must be an integer, got %s' % (key, _show(value))
        if kind == 'int1-255':
            if not 1 <= value <= 255:
                return '%s must be between 1 and 255, got %s' % (key, value)
            return None
        low = int(kind[len('int>='):])
        if value < low:
            return '%s must be %s, got %s' % (key, 'zero or more' if low == 0 else 'at least %d' % low, value)
        return None
    if kind == 'enum':
        if value not in allowed:
            return '%s must be one of %s, got %s' % (key, ', '.join(str(a) for a in allowed), _show(value))
        return None
    if kind == 'bool':
        if not isinstance(value, bool):
            return '%s must be true or false, got %s' % (key, _show(value))
        return None
    if kind == 'age':
        if not isinstance(value, str) or not _AGE_RE.match(value):
            return '%s must be a duration such as 7D, 12h, 30m or 1Y (a number and one of Y M D h m s), got %s' % (
                key, _show(value))
        return None
    if not isinstance(value, str) or not value:
        return '%s must be a non-empty string, got %s' % (key, _show(value))
    return None


def _show(value):
    return "'%s'" % value if isinstance(value, str) else repr(value)


def _unknown(key, known):
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = " - did you mean '%s'?" % close[0] if close else ''
    return "unknown key '%s'%s (known: %s)" % (key, hint, ', '.join(sorted(known)))


def policy_definition_problems(definition):
    """Problems of a normalised policy definition (numbers already numbers, see normalise_mapping)."""
    problems = []
    for key in sorted(definition):
        if key in REMOVED_POLICY_KEYS:
            problems.append("key '%s' is not accepted by RabbitMQ 4.x: %s" % (key, REMOVED_POLICY_KEYS[key]))
        elif key not in POLICY_KEYS:
            problems.append(_unknown(key, POLICY_KEYS))
        else:
            problem = value_problem(key, definition[key], POLICY_KEYS[key])
            if problem:
                problems.append(problem)
    if 'federation-upstream' in definition and 'federation-upstream-set' in definition:
        problems.append('federation-upstream and federation-upstream-set exclude each other; keep one')
    return problems


def argument_problems(arguments, known=None):
    """Problems of a normalised x-argument table; arguments warren does not know are left alone."""
    known = ARGUMENT_KEYS if known is None else known
    problems = []
    for key in sorted(arguments):
        if key in known:
            problem = value_problem(key, arguments[key], known[key])
            if problem:
                problems.append(problem)
    return problems


def regex_problem(pattern):
    """Why ``pattern`` does not compile as a regular expression, or None (see the module docstring)."""
    if not isinstance(pattern, str):
        return 'must be a string (a regular expression), got %s' % _show(pattern)
    try:
        re.compile(pattern)
    except re.error as e:
        if _PCRE_ONLY.search(pattern) or '(?<' in pattern.replace('(?<=', '').replace('(?<!', ''):
            return None  # PCRE syntax Python does not know: left to RabbitMQ
        return "is not a valid regular expression (%s at position %s): '%s'" % (e.msg, e.pos, pattern)
    return None


def regex_matches(pattern, name):
    """True/False when ``pattern`` (as RabbitMQ applies it: a search) matches ``name``; None if unknown."""
    if pattern == '':
        return False
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return None
