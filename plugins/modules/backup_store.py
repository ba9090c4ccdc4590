#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_store
short_description: Store, list, verify-mark, extract and prune RabbitMQ definitions backups
description:
  - Manages warren's backup store, a directory on the host that runs the backups with one
    folder per cluster. Each backup is a definitions export named C(<cluster>-<YYYYMMDDTHHMMSSZ>)
    (UTC), stored as C(<id>.json) or, encrypted with age, C(<id>.json.age), with a manifest
    C(<id>.manifest.json) beside it.
  - The manifest holds the sha256 and size of the stored file and of the plain JSON, the
    RabbitMQ and Erlang versions, the node names, the counts of vhosts, users, permissions,
    queues, exchanges, bindings, policies and parameters, and whether a restore verified it.
  - Every file is written under a temporary dot-name and renamed into place, data first and
    manifest last. A backup exists only once its manifest does, so a failed or interrupted run
    never leaves a partial file under a final name, and it never touches older backups.
  - O(action=store) refuses, before writing anything, an export that is empty, not JSON or not a
    definitions export, a missing or unreadable age recipients file, a key file kept inside the
    store, an unwritable directory and a disk without room for the backup.
  - O(action=prune) keeps the newest backup of each of the O(keep_daily) most recent days and
    O(keep_weekly) most recent ISO weeks. A backup whose verification failed fills no slot. The
    newest backup and the newest verified backup are always kept.
  - O(action=metrics) writes Prometheus metrics for node_exporter's textfile collector.
  - Supports check mode (nothing is written, the result says what would be).
version_added: 0.2.0
author:
  - warren SRE team (@warren-sre)
options:
  action:
    description:
      - V(store) stores O(src) as a new backup of O(cluster).
      - V(list) returns the cluster's complete backups, newest first.
      - V(select) returns one backup's manifest (O(backup), default the newest verified one)
        and, with O(dest), writes its plain JSON there (decrypted with O(age_identity_file) when
        encrypted), checking the stored sha256 and the plain-text sha256 on the way.
      - V(mark) records a verification's result (O(verified), O(detail)) in O(backup)'s manifest.
      - V(prune) applies the retention policy.
      - V(metrics) writes the textfile metrics of the store and of this run.
    type: str
    required: true
    choices: [store, list, select, mark, prune, metrics]
  store_dir:
    description: Root of the backup store. Created with mode C(0700) when missing.
    type: path
    required: true
  cluster:
    description:
      - The cluster's name (RabbitMQ's cluster name). Characters other than letters, digits,
        C(.), C(_) and C(-) become C(_) in file names.
    type: str
    required: true
  src:
    description: With O(action=store), the plain JSON export to store.
    type: path
  remove_src:
    description: With O(action=store), delete O(src) once the backup is stored.
    type: bool
    default: false
  source:
    description:
      - With O(action=store), facts about the cluster for the manifest - C(rabbitmq_version),
        C(erlang_version), C(nodes) (list of node names) and C(source_node).
    type: dict
    default: {}
  encrypt:
    description: With O(action=store), V(age) encrypts the backup to O(age_recipients_file).
    type: str
    choices: [none, age]
    default: none
  age_recipients_file:
    description:
      - File of age recipients (public keys), one a line. Must not be inside O(store_dir).
    type: path
  age_identity_file:
    description:
      - age identity (private key) file, needed by O(action=select) with O(dest) for encrypted
        backups. Must not be inside O(store_dir).
    type: path
  min_free_bytes:
    description: With O(action=store), free space to leave on the store's file system.
    type: int
    default: 0
  backup:
    description:
      - A backup id. With O(action=select), V(latest-verified) (the default) or V(latest) pick by
        age. Required with O(action=mark).
    type: str
  dest:
    description: With O(action=select), where to write the plain JSON (mode C(0600)).
    type: path
  verified:
    description: With O(action=mark), the verification's outcome.
    type: bool
  detail:
    description: With O(action=mark), what the verification found, in words.
    type: str
    default: ''
  verification:
    description: With O(action=mark), further facts to record (checksums, durations).
    type: dict
    default: {}
  keep_daily:
    description: With O(action=prune), how many days keep their newest backup (at least 1).
    type: int
    default: 7
  keep_weekly:
    description: With O(action=prune), how many ISO weeks keep their newest backup.
    type: int
    default: 4
  textfile_dir:
    description: With O(action=metrics), node_exporter's textfile collector directory.
    type: path
  phase:
    description: With O(action=metrics), which run this is (V(backup) or V(verify)).
    type: str
    choices: [backup, verify]
    default: backup
  run_ok:
    description: With O(action=metrics), whether this run succeeded.
    type: bool
    default: true
  run_seconds:
    description: With O(action=metrics), how long this run took.
    type: float
    default: 0
  max_age_seconds:
    description:
      - With O(action=metrics), the age after which the newest verified backup is stale
        (exported as C(warren_backup_max_age_seconds); the RabbitMQBackupStale alert compares
        against it, so the alert follows the schedule).
    type: int
    default: 7200
requirements:
  - age (Debian package C(age)) when O(encrypt=age) or when extracting an encrypted backup
  - prometheus_client (Debian package C(python3-prometheus-client)) for O(action=metrics)
notes:
  - The store holds password hashes. Directories are created C(0700), files C(0600).
seealso:
  - module: warren.rabbitmq.definitions
  - module: warren.rabbitmq.backup_filter
'''

EXAMPLES = r'''
- name: Export the definitions to a staging file
  warren.rabbitmq.definitions:
    state: exported
    dest: /var/backups/warren/.staging/export.json
    url: https://rmq1:15671
    ca_cert: /etc/warren-backup/ca.pem
    login_user: admin
    login_password: "{{ rabbitmq_admin_password }}"

- name: Store it as a backup, encrypted
  warren.rabbitmq.backup_store:
    action: store
    store_dir: /var/backups/warren
    cluster: warren-lab
    src: /var/backups/warren/.staging/export.json
    encrypt: age
    age_recipients_file: /etc/warren-backup/keys/recipients.txt
    source:
      rabbitmq_version: 4.0.5
      erlang_version: 27.3.4.1
      nodes: [rabbit@rmq1, rabbit@rmq2, rabbit@rmq3]
      source_node: rabbit@rmq1
  register: stored

- name: Keep 7 daily and 4 weekly backups
  warren.rabbitmq.backup_store:
    action: prune
    store_dir: /var/backups/warren
    cluster: warren-lab
    keep_daily: 7
    keep_weekly: 4

- name: The newest verified backup, decrypted for a restore
  warren.rabbitmq.backup_store:
    action: select
    store_dir: /var/backups/warren
    cluster: warren-lab
    dest: /var/tmp/warren-restore/definitions.json
    age_identity_file: /etc/warren-backup/keys/identity.txt
'''

RETURN = r'''
id:
  description: The backup's id (store, select, mark).
  returned: action is store, select or mark
  type: str
  sample: warren-lab-20261203T090000Z
path:
  description: The stored backup file.
  returned: action is store or select
  type: str
manifest:
  description: The backup's manifest.
  returned: action is store, select or mark
  type: dict
backups:
  description: Manifests of the cluster's complete backups, newest first.
  returned: action is list or prune
  type: list
  elements: dict
kept:
  description: Backups kept by the retention policy, with the reasons (daily, weekly, newest, newest verified).
  returned: action is prune
  type: dict
deleted:
  description: Backups deleted (or that would be, in check mode).
  returned: action is prune
  type: list
  elements: str
removed_tmp:
  description: Temporary files older than an hour that were removed (left by interrupted runs).
  returned: action is prune
  type: list
  elements: str
metrics_files:
  description: The textfile metric files written.
  returned: action is metrics
  type: list
  elements: str
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.warren.rabbitmq.plugins.module_utils.backup_store import (
    BackupError,
    extract,
    find_backup,
    list_backups,
    mark_verified,
    prune,
    read_manifest,
    run_module,
    safe_cluster,
    store_backup,
)

try:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
    HAS_PROMETHEUS_CLIENT = True
except ImportError:
    HAS_PROMETHEUS_CLIENT = False


def write_metrics(p, backups, check_mode):
    """Two files: the store's state (rebuilt from the manifests) and this phase's run."""
    cluster = p['cluster']
    labels = dict(rabbitmq_cluster=cluster)
    store = CollectorRegistry()

    def gauge(registry, name, doc, value, extra=None):
        keys = sorted(labels) + sorted(extra or {})
        g = Gauge(name, doc, keys, registry=registry)
        values = dict(labels)
        values.update(extra or {})
        g.labels(**values).set(value)

    newest = backups[0] if backups else None
    verified = [m for m in backups if m.get('verified') is True]
    gauge(store, 'warren_backup_count', 'Complete backups in the store.', len(backups))
    gauge(store, 'warren_backup_max_age_seconds',
          'Age after which the newest verified backup is stale (from the schedule).', p['max_age_seconds'])
    if newest:
        gauge(store, 'warren_backup_last_success_timestamp_seconds',
              'Creation time of the newest stored backup.', newest['created_epoch'])
        gauge(store, 'warren_backup_last_size_bytes', 'Size of the newest stored backup file.', newest['size'] or 0)
        gauge(store, 'warren_backup_last_verified',
              'Whether the newest backup passed a restore verification (1), failed or is not verified yet (0).',
              1 if newest.get('verified') is True else 0)
        gauge(store, 'warren_backup_last_verification_failed',
              'Whether the newest backup failed its restore verification.', 1 if newest.get('verified') is False else 0)
    if verified:
        gauge(store, 'warren_backup_last_verified_timestamp_seconds',
              'Creation time of the newest backup that a restore verified.', verified[0]['created_epoch'])
    run = CollectorRegistry()
    phase = dict(phase=p['phase'])
    gauge(run, 'warren_backup_run_timestamp_seconds', 'When this backup phase last ran.', time.time(), phase)
    gauge(run, 'warren_backup_run_success', 'Whether this backup phase last succeeded.', 1 if p['run_ok'] else 0, phase)
    gauge(run, 'warren_backup_run_duration_seconds', 'How long this backup phase last took.', p['run_seconds'], phase)
    base = os.path.join(p['textfile_dir'], 'warren_backup_%s' % safe_cluster(cluster))
    files = [base + '.prom', '%s_%s.prom' % (base, p['phase'])]
    if not check_mode:
        if not os.path.isdir(p['textfile_dir']):
            raise BackupError('textfile directory %s does not exist: is node_exporter installed with the '
                              'textfile collector on this host?' % p['textfile_dir'])
        write_to_textfile(files[0], store)
        write_to_textfile(files[1], run)
        for f in files:
            os.chmod(f, 0o644)
    return files


def run(module):
    p = module.params
    cdir = os.path.join(p['store_dir'], safe_cluster(p['cluster']))
    action = p['action']
    if action == 'store':
        if not p['src']:
            raise BackupError('action=store needs src (the export to store)')
        out = store_backup(p['store_dir'], p['cluster'], p['src'], source=p['source'], encrypt=p['encrypt'],
                           age_recipients_file=p['age_recipients_file'], min_free_bytes=p['min_free_bytes'],
                           check_mode=module.check_mode)
        if p['remove_src'] and not module.check_mode:
            os.unlink(p['src'])
        return dict(changed=True, id=out['id'], path=out['path'], manifest=out['manifest'])
    if action == 'list':
        return dict(changed=False, backups=list_backups(cdir))
    if action == 'select':
        manifest = find_backup(cdir, p['backup'] or 'latest-verified')
        result = dict(changed=False, id=manifest['id'], path=os.path.join(cdir, manifest['file']), manifest=manifest)
        if p['dest']:
            result['dest'] = p['dest']
            if not module.check_mode:
                extract(cdir, manifest, p['dest'], p['age_identity_file'], store_dir=p['store_dir'])
            result['changed'] = True
        return result
    if action == 'mark':
        if not p['backup'] or p['verified'] is None:
            raise BackupError('action=mark needs backup and verified')
        if module.check_mode:
            manifest = read_manifest(cdir, p['backup'])
        else:
            manifest = mark_verified(cdir, p['backup'], p['verified'], p['detail'], extra=p['verification'])
        return dict(changed=True, id=p['backup'], manifest=manifest)
    if action == 'prune':
        out = prune(cdir, p['keep_daily'], p['keep_weekly'], check_mode=module.check_mode)
        return dict(changed=bool(out['deleted'] or out['removed_tmp']), kept=out['keep'], deleted=out['deleted'],
                    removed_tmp=out['removed_tmp'], backups=list_backups(cdir))
    # metrics
    if not HAS_PROMETHEUS_CLIENT:
        module.fail_json(msg=missing_required_lib('prometheus_client (Debian: python3-prometheus-client)'))
    if not p['textfile_dir']:
        raise BackupError('action=metrics needs textfile_dir')
    files = write_metrics(p, list_backups(cdir), module.check_mode)
    return dict(changed=True, metrics_files=files)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type='str', required=True, choices=['store', 'list', 'select', 'mark', 'prune', 'metrics']),
            store_dir=dict(type='path', required=True),
            cluster=dict(type='str', required=True),
            src=dict(type='path'),
            remove_src=dict(type='bool', default=False),
            source=dict(type='dict', default={}),
            encrypt=dict(type='str', default='none', choices=['none', 'age']),
            age_recipients_file=dict(type='path'),
            age_identity_file=dict(type='path', no_log=False),
            min_free_bytes=dict(type='int', default=0),
            backup=dict(type='str'),
            dest=dict(type='path'),
            verified=dict(type='bool'),
            detail=dict(type='str', default=''),
            verification=dict(type='dict', default={}),
            keep_daily=dict(type='int', default=7),
            keep_weekly=dict(type='int', default=4),
            textfile_dir=dict(type='path'),
            phase=dict(type='str', default='backup', choices=['backup', 'verify']),
            run_ok=dict(type='bool', default=True),
            run_seconds=dict(type='float', default=0),
            max_age_seconds=dict(type='int', default=7200),
        ),
        required_if=[('encrypt', 'age', ('age_recipients_file',))],
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == '__main__':
    main()
