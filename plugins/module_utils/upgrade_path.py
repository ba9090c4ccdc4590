# -*- coding: utf-8 -*-
# Copyright: (c) 2026, warren SRE team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which rolling upgrades of RabbitMQ (and Erlang) a cluster may take, as pure functions.

The rules, from RabbitMQ's upgrade guides (rabbitmq.com/docs/upgrade, rolling-upgrade,
feature-flags and which-erlang):

- A rolling upgrade moves one release series at a time: 3.12 -> 3.13 -> 4.0 -> 4.1 -> ...
  Patch releases inside a series may be skipped (3.13.0 -> 3.13.7). 3.12 -> 4.0 is refused: go
  through 3.13 first. Downgrades are refused (a node's data is not readable by older releases).
- Every stable feature flag must be enabled before the upgrade: new series make older flags
  required and refuse to boot without them.
- The cluster must already run one version everywhere (a half-finished upgrade is finished first).
- Erlang: every node's Erlang must be in the range the target release supports; an Erlang upgrade
  rides along in the same node restart.

Nothing here talks to a node: the caller gathers versions and flags and passes them in.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# Release series in order. A rolling upgrade goes from one to the next.
SERIES = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "4.0", "4.1", "4.2", "4.3", "4.4")

# Erlang/OTP range each RabbitMQ release supports: (first release it applies to, minimum OTP,
# maximum OTP major). Read top-down; the first row whose release is <= the target applies.
# Source: rabbitmq.com/docs/which-erlang (compatibility matrix). 4.0.4 was the first release to
# support Erlang 27; 4.2 and later need 27.
ERLANG_REQUIREMENTS = (
    ("4.2.0", (27, 0), 27),
    ("4.0.4", (26, 2), 27),
    ("4.0.0", (26, 2), 26),
    ("3.13.0", (26, 0), 26),
    ("3.12.10", (25, 0), 26),
    ("3.12.0", (25, 0), 26),
)


class UpgradeRefused(Exception):
    """The requested upgrade is not a supported rolling upgrade; the message says what to do."""


def parse_version(text):
    """'4.0.5', '4.0.5-1', '4.0.5-5+deb13u1' or '1:27.3.4.1+dfsg-1' -> tuple of ints.

    Debian epochs (N:) and packaging suffixes (-N, +...) are dropped. Raises ValueError on text
    that holds no version.
    """
    if text is None:
        raise ValueError('no version given')
    value = str(text).strip()
    value = re.sub(r'^\d+:', '', value)  # Debian epoch
    match = re.match(r'^(\d+(?:\.\d+)*)', value)
    if not match:
        raise ValueError('not a version: %r' % (text,))
    return tuple(int(p) for p in match.group(1).split('.'))


def series_of(version):
    """(4, 0, 5) -> '4.0'."""
    return '%d.%d' % (version[0], version[1] if len(version) > 1 else 0)


def fmt(version):
    return '.'.join(str(p) for p in version)


def erlang_range(target):
    """Supported (min, max_major) Erlang for a RabbitMQ version tuple, or None if unknown."""
    for first, minimum, maximum in ERLANG_REQUIREMENTS:
        if target >= parse_version(first):
            return minimum, maximum
    return None


def check_erlang(target_rabbitmq, erlang):
    """Refuse an Erlang the target release cannot run on. Returns a note, or raises."""
    rng = erlang_range(target_rabbitmq)
    if rng is None:
        return 'no Erlang requirements known for RabbitMQ %s: check rabbitmq.com/docs/which-erlang' % fmt(
            target_rabbitmq)
    minimum, maximum = rng
    if erlang < minimum or erlang[0] > maximum:
        raise UpgradeRefused(
            'RabbitMQ %s needs Erlang %s to %d.x, but the upgrade would run it on Erlang %s. Upgrade '
            'Erlang in the same step (set the Erlang package version too) or pick a RabbitMQ release '
            'that supports Erlang %s.' % (fmt(target_rabbitmq), fmt(minimum), maximum, fmt(erlang), fmt(erlang)))
    return None


def plan(current, target_rabbitmq, target_erlang=None, disabled_stable_flags=()):
    """Decide whether a rolling upgrade of the cluster to target_rabbitmq may start.

    current: {node: {'rabbitmq': version text, 'erlang': version text}} for every cluster member.
    target_rabbitmq: the RabbitMQ version to install. target_erlang: the Erlang version the nodes
    will run afterwards (None: they keep their current one).
    disabled_stable_flags: stable feature flags that are not enabled yet.

    Returns a dict: kind ('patch', 'minor', 'major', 'reinstall'), from, to, the nodes in order,
    and notes. Raises UpgradeRefused with what to do otherwise.
    """
    if not current:
        raise UpgradeRefused('no cluster members given: gather every node\'s versions first')
    target = parse_version(target_rabbitmq)
    versions = {}
    for node, v in sorted(current.items()):
        try:
            versions[node] = (parse_version(v.get('rabbitmq')), parse_version(v.get('erlang')))
        except ValueError as exc:
            raise UpgradeRefused('cannot read the versions of %s: %s' % (node, exc))
    running = sorted(set(r for r, _e in versions.values()))
    if len(running) > 1:
        raise UpgradeRefused(
            'the cluster runs mixed RabbitMQ versions (%s): finish the upgrade that is in progress '
            '(every node on one version) before starting another' % ', '.join(
                '%s on %s' % (fmt(r), ', '.join(n for n, (rv, _e) in sorted(versions.items()) if rv == r))
                for r in running))
    source = running[0]
    if target < source:
        raise UpgradeRefused(
            'RabbitMQ %s -> %s is a downgrade: nodes cannot read data written by a newer release. '
            'Restore from a backup onto new nodes instead (docs/dr-plan.md).' % (fmt(source), fmt(target)))
    src_series, dst_series = series_of(source), series_of(target)
    for s in (src_series, dst_series):
        if s not in SERIES:
            raise UpgradeRefused('RabbitMQ series %s is unknown to warren\'s upgrade rules (known: %s)'
                                 % (s, ', '.join(SERIES)))
    step = SERIES.index(dst_series) - SERIES.index(src_series)
    if step > 1:
        path = SERIES[SERIES.index(src_series):SERIES.index(dst_series) + 1]
        raise UpgradeRefused(
            'RabbitMQ %s -> %s skips a release series: rolling upgrades go one series at a time. '
            'Upgrade through %s, enabling all stable feature flags after each step.'
            % (fmt(source), fmt(target), ' -> '.join(path)))
    flags = sorted(disabled_stable_flags or ())
    if flags and step > 0:
        raise UpgradeRefused(
            'stable feature flags are still disabled: %s. Enable them before moving to a new series '
            '(warren.rabbitmq.feature_flags with names: [all], or rabbitmqctl enable_feature_flag all); '
            'a newer series may refuse to boot without them.' % ', '.join(flags))
    notes = []
    if flags:
        notes.append('stable feature flags still disabled (%s): enable them after this upgrade' % ', '.join(flags))
    for node, (_r, erlang) in sorted(versions.items()):
        after = parse_version(target_erlang) if target_erlang else erlang
        note = check_erlang(target, after)
        if note and note not in notes:
            notes.append(note)
    if target == source:
        kind = 'reinstall'
    elif step == 0:
        kind = 'patch'
    elif source[0] != target[0]:
        kind = 'major'
    else:
        kind = 'minor'
    return {
        'kind': kind,
        'from': fmt(source),
        'to': fmt(target),
        'nodes': sorted(versions),
        'notes': notes,
    }
