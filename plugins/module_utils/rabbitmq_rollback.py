# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Undo for warren.rabbitmq.definitions: put the cluster back to the snapshot a plan was made from.

The module records every action in a :class:`Journal` *before* it sends it (a write that fails
may still have been half applied, for example a vhost created whose limits then failed). When a
write fails, :meth:`Journal.undo` walks the journal backwards:

* created -> deleted;
* updated -> put back as it was in the snapshot (users with their stored ``password_hash``, so
  the old password works again without being known);
* deleted -> recreated from the snapshot; a deleted vhost comes back with everything the
  snapshot held in it, a deleted user with its permissions.

What cannot come back: the messages of a deleted queue, and connections RabbitMQ closed when a
user or vhost was deleted. Every undo step that fails is reported by name.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_kinds import BY_KEY, KINDS


class Journal:
    def __init__(self, snapshot, login_user):
        self.snapshot = snapshot          # the model the plan was computed from
        self.login_user = login_user
        self.entries = []                 # actions sent (or being sent), in order

    def record(self, action):
        self.entries.append(action)

    def undo(self, client):
        """Undo every recorded action, newest first; return (undone, failed) descriptions.

        ``failed`` holds ``{'object': ..., 'left': ..., 'error': ...}`` for each step that did not
        work: exactly what is still changed.
        """
        undone, failed = [], []
        for action in reversed(self.entries):
            try:
                self._undo_one(client, action)
                undone.append(action.describe())
            except Exception as e:  # pylint: disable=broad-except
                failed.append({'object': action.describe(), 'left': _left(action), 'error': str(e)})
        return undone, failed

    def _undo_one(self, client, action):
        kind = BY_KEY[action.kind]
        if action.op == 'create':
            kind.delete(client, action.key, action.after, self.snapshot)
        elif action.op == 'update':
            kind.put(client, action.before, action.after)
        else:
            kind.put(client, action.before, None)
            if action.kind == 'vhosts':
                self._restore_vhost_contents(client, action.key[0])
            elif action.kind == 'users':
                self._restore_user_permissions(client, action.key[0])

    def _restore_vhost_contents(self, client, vhost):
        """A deleted vhost took its contents with it: recreate them from the snapshot, parents first."""
        for kind in KINDS:
            if not kind.in_vhost:
                continue
            for key, obj in sorted(self.snapshot[kind.key].items()):
                if key[0] == vhost:
                    kind.put(client, obj, None)
        # RabbitMQ granted the login user full permissions when the vhost was recreated
        if (vhost, self.login_user) not in self.snapshot['permissions']:
            BY_KEY['permissions'].delete(client, (vhost, self.login_user), None, self.snapshot)

    def _restore_user_permissions(self, client, user):
        for kind in (BY_KEY['permissions'], BY_KEY['topic_permissions']):
            for key, obj in sorted(self.snapshot[kind.key].items()):
                if key[1] == user:
                    kind.put(client, obj, None)


def _left(action):
    if action.op == 'create':
        return 'created and still there'
    if action.op == 'update':
        return 'changed (%s) and not put back' % action.detail if action.detail else 'changed and not put back'
    return 'deleted and not recreated'
