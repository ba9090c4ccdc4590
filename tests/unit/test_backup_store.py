"""warren.rabbitmq.backup_store: naming, manifest, atomic store, refusals, retention, metrics."""

import datetime
import errno
import json
import os
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.warren.rabbitmq.plugins.module_utils import backup_store as bs
from ansible_collections.warren.rabbitmq.plugins.modules import backup_store as module

from utils import run_fail, run_ok

UTC = datetime.timezone.utc
HAS_AGE = shutil.which('age') is not None and shutil.which('age-keygen') is not None

EXPORT = {
    'rabbitmq_version': '4.0.5',
    'rabbit_version': '4.0.5',
    'vhosts': [{'name': '/'}, {'name': 'orders'}],
    'users': [{'name': 'admin', 'password_hash': 'x', 'tags': ['administrator']},
              {'name': 'app', 'password_hash': 'y', 'tags': []}],
    'permissions': [{'user': 'admin', 'vhost': '/', 'configure': '.*', 'write': '.*', 'read': '.*'}],
    'queues': [{'vhost': 'orders', 'name': 'q%d' % i, 'durable': True, 'auto_delete': False,
                'arguments': {'x-queue-type': 'quorum'}} for i in range(3)],
    'exchanges': [{'vhost': 'orders', 'name': 'dlx', 'type': 'fanout'}],
    'bindings': [{'vhost': 'orders', 'source': 'dlx', 'destination': 'q0', 'destination_type': 'queue',
                  'routing_key': '', 'arguments': {}}],
    'policies': [{'vhost': 'orders', 'name': 'p', 'pattern': '.*', 'apply-to': 'queues',
                  'definition': {'max-length': 10}, 'priority': 0}],
    'parameters': [],
    'global_parameters': [{'name': 'cluster_name', 'value': 'warren-lab'}],
}
SOURCE = {'rabbitmq_version': '4.0.5', 'erlang_version': '27.3.4.1',
          'nodes': ['rabbit@rmq2', 'rabbit@rmq1'], 'source_node': 'rabbit@rmq1'}


def at(day, hour=3, minute=0, month=12):
    return datetime.datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def export(tmp_path):
    path = tmp_path / 'staging' / 'export.json'
    path.parent.mkdir()
    path.write_text(json.dumps(EXPORT, indent=2, sort_keys=True) + '\n')
    return str(path)


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / 'store')


def files_in(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


# -- naming ------------------------------------------------------------------------------------

def test_id_is_cluster_and_utc_time_and_parses_back():
    when = datetime.datetime(2026, 12, 3, 10, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    bid = bs.backup_id('warren-lab', when)
    assert bid == 'warren-lab-20261203T080405Z'
    assert bs.parse_id(bid) == ('warren-lab', datetime.datetime(2026, 12, 3, 8, 4, 5, tzinfo=UTC))


def test_cluster_names_become_safe_file_names():
    assert bs.backup_id('rabbit@prod eu/1', at(1)).startswith('rabbit_prod_eu_1-')
    with pytest.raises(bs.BackupError, match='cluster name is empty'):
        bs.safe_cluster('  ')


def test_naive_times_and_non_ids_are_refused():
    with pytest.raises(bs.BackupError, match='timezone-aware'):
        bs.backup_id('c', datetime.datetime(2026, 1, 1))
    with pytest.raises(bs.BackupError, match='not a backup id'):
        bs.parse_id('warren-lab-latest')


# -- manifest ----------------------------------------------------------------------------------

def test_store_writes_data_then_manifest_with_checksums_versions_nodes_and_counts(export, store):
    out = bs.store_backup(store, 'warren-lab', export, source=SOURCE, when=at(3, 9))
    cdir = os.path.join(store, 'warren-lab')
    assert files_in(cdir) == ['warren-lab-20261203T090000Z.json', 'warren-lab-20261203T090000Z.manifest.json']
    m = json.loads(open(out['manifest_path']).read())
    assert m == out['manifest']
    assert m['sha256'] == m['plaintext_sha256'] == bs.sha256_file(export) == bs.sha256_file(out['path'])
    assert m['size'] == os.path.getsize(export)
    assert m['rabbitmq_version'] == '4.0.5' and m['erlang_version'] == '27.3.4.1'
    assert m['nodes'] == ['rabbit@rmq1', 'rabbit@rmq2'] and m['source_node'] == 'rabbit@rmq1'
    assert m['counts'] == {'vhosts': 2, 'users': 2, 'permissions': 1, 'topic_permissions': 0, 'queues': 3,
                           'exchanges': 1, 'bindings': 1, 'policies': 1, 'parameters': 0, 'global_parameters': 1}
    assert m['verified'] is None and m['encryption'] is None
    assert m['created'] == '2026-12-03T09:00:00Z' and m['created_epoch'] == int(at(3, 9).timestamp())
    assert os.stat(out['path']).st_mode & 0o777 == 0o600
    assert os.stat(cdir).st_mode & 0o777 == 0o700
    assert os.path.exists(export), 'the staging export is left for the caller'


def test_store_refuses_to_overwrite_a_backup_of_the_same_second(export, store):
    bs.store_backup(store, 'c', export, when=at(3))
    with pytest.raises(bs.BackupError, match='already exists'):
        bs.store_backup(store, 'c', export, when=at(3))


# -- refusal on bad input ----------------------------------------------------------------------

@pytest.mark.parametrize('content, message', [
    ('', 'is empty'),
    ('{"vhosts": [', 'not valid JSON'),
    ('[1, 2]', 'not a RabbitMQ definitions export'),
    ('{"vhosts": []}', 'not a RabbitMQ definitions export'),
])
def test_store_refuses_what_is_not_an_export_and_writes_nothing(tmp_path, store, content, message):
    bad = tmp_path / 'bad.json'
    bad.write_text(content)
    with pytest.raises(bs.BackupError, match=message):
        bs.store_backup(store, 'c', str(bad), when=at(3))
    assert files_in(os.path.join(store, 'c')) == []


def test_missing_recipients_file_fails_before_writing(export, store, tmp_path):
    with pytest.raises(bs.BackupError, match='recipients file .* does not exist'):
        bs.store_backup(store, 'c', export, encrypt='age', age_recipients_file=str(tmp_path / 'nope.txt'), when=at(3))
    assert files_in(os.path.join(store, 'c')) == []


def test_a_key_inside_the_store_is_refused(export, store):
    os.makedirs(store)
    key = os.path.join(store, 'recipients.txt')
    open(key, 'w').write('age1xyz\n')
    with pytest.raises(bs.BackupError, match='keys are never kept beside the backups'):
        bs.store_backup(store, 'c', export, encrypt='age', age_recipients_file=key, when=at(3))


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes through directory modes')
def test_unwritable_store_is_refused_and_older_backups_stay(export, store):
    old = bs.store_backup(store, 'c', export, when=at(2))
    os.chmod(os.path.join(store, 'c'), 0o500)
    try:
        with pytest.raises(bs.BackupError, match='not writable'):
            bs.store_backup(store, 'c', export, when=at(3))
    finally:
        os.chmod(os.path.join(store, 'c'), 0o700)
    assert [m['id'] for m in bs.list_backups(os.path.join(store, 'c'))] == [old['id']]


def test_unwritable_store_is_refused_even_for_root(export, store, monkeypatch):
    bs.store_backup(store, 'c', export, when=at(2))
    monkeypatch.setattr(bs.os, 'access', lambda path, mode: False)
    with pytest.raises(bs.BackupError, match='not writable by this user'):
        bs.store_backup(store, 'c', export, when=at(3))


def test_too_little_free_space_is_refused_before_writing(export, store, monkeypatch):
    class Tiny:
        f_bavail, f_frsize = 1, 4096
    monkeypatch.setattr(bs.os, 'statvfs', lambda path: Tiny())
    with pytest.raises(bs.BackupError, match='not enough free space'):
        bs.store_backup(store, 'c', export, when=at(3))
    assert files_in(os.path.join(store, 'c')) == []


def test_disk_full_mid_write_leaves_no_partial_file_and_older_backups_intact(export, store, monkeypatch):
    old = bs.store_backup(store, 'c', export, when=at(2))
    real_fsync = os.fsync
    calls = []

    def full(fd):
        calls.append(fd)
        if len(calls) == 2:  # the manifest's write: the data file is already in place
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_fsync(fd)
    monkeypatch.setattr(bs.os, 'fsync', full)
    with pytest.raises(bs.BackupError, match='disk full'):
        bs.store_backup(store, 'c', export, when=at(3))
    monkeypatch.undo()
    cdir = os.path.join(store, 'c')
    assert files_in(cdir) == ['c-20261202T030000Z.json', 'c-20261202T030000Z.manifest.json']
    assert bs.list_backups(cdir) == [old['manifest']]


def test_listing_ignores_temporary_files_and_data_without_manifest(export, store):
    bs.store_backup(store, 'c', export, when=at(2))
    cdir = os.path.join(store, 'c')
    open(os.path.join(cdir, '.warren-backup-abc.tmp'), 'w').write('{"partial')
    shutil.copy(export, os.path.join(cdir, 'c-20261203T030000Z.json'))
    assert [m['id'] for m in bs.list_backups(cdir)] == ['c-20261202T030000Z']


# -- retention ---------------------------------------------------------------------------------

def manifests(*specs):
    out = []
    for when, verified in specs:
        out.append({'id': bs.backup_id('c', when), 'verified': verified})
    return out


def test_retention_keeps_newest_of_each_recent_day_and_week():
    # two backups a day on Dec 1..10 2026 (Dec 7 is a Monday: ISO weeks 49 and 50), all verified
    ms = manifests(*[(at(d, h), True) for d in range(1, 11) for h in (3, 15)])
    keep, delete = bs.select_retention(ms, keep_daily=3, keep_weekly=2)
    assert sorted(k for k, why in keep.items() if 'daily' in why) == [
        'c-20261208T150000Z', 'c-20261209T150000Z', 'c-20261210T150000Z']
    assert sorted(k for k, why in keep.items() if 'weekly' in why) == ['c-20261206T150000Z', 'c-20261210T150000Z']
    assert set(keep) | set(delete) == set(m['id'] for m in ms) and not set(keep) & set(delete)
    assert len(keep) == 4


def test_retention_never_prunes_the_newest_verified_backup():
    # the newest verified backup is older than every daily and weekly slot
    ms = manifests((at(1), True), (at(20), None), (at(21), None), (at(22), None))
    keep, delete = bs.select_retention(ms, keep_daily=2, keep_weekly=0)
    assert 'newest verified' in keep['c-20261201T030000Z']
    assert delete == ['c-20261220T030000Z']


def test_failed_verifications_fill_no_slot_but_the_newest_backup_is_kept():
    ms = manifests((at(1), True), (at(2), True), (at(3), False), (at(4), False))
    keep, delete = bs.select_retention(ms, keep_daily=2, keep_weekly=0)
    assert keep == {'c-20261204T030000Z': ['newest'], 'c-20261202T030000Z': ['newest verified', 'daily'],
                    'c-20261201T030000Z': ['daily']}
    assert delete == ['c-20261203T030000Z']


@pytest.mark.parametrize('daily, weekly', [(0, 1), (-1, 0), (1, -1), ('3', 1), (True, 1)])
def test_retention_refuses_bad_counts(daily, weekly):
    with pytest.raises(bs.BackupError, match='must be an integer'):
        bs.select_retention([], daily, weekly)


def test_prune_deletes_manifest_and_data_and_stale_temporaries(export, store):
    for d in (1, 2, 3):
        bs.store_backup(store, 'c', export, when=at(d))
    cdir = os.path.join(store, 'c')
    bs.mark_verified(cdir, 'c-20261201T030000Z', True, 'ok')
    stale = os.path.join(cdir, '.warren-backup-old.tmp')
    open(stale, 'w').write('x')
    os.utime(stale, (0, 0))
    out = bs.prune(cdir, keep_daily=1, keep_weekly=0, check_mode=True)
    assert out['deleted'] == ['c-20261202T030000Z'] and os.path.exists(stale)
    out = bs.prune(cdir, keep_daily=1, keep_weekly=0)
    assert out['removed_tmp'] == ['.warren-backup-old.tmp']
    assert files_in(cdir) == ['c-20261201T030000Z.json', 'c-20261201T030000Z.manifest.json',
                              'c-20261203T030000Z.json', 'c-20261203T030000Z.manifest.json']


# -- verification marks, selection, extraction -------------------------------------------------

def test_mark_and_select_latest_verified(export, store):
    for d in (1, 2):
        bs.store_backup(store, 'c', export, when=at(d))
    cdir = os.path.join(store, 'c')
    with pytest.raises(bs.BackupError, match='no verified backup'):
        bs.find_backup(cdir)
    bs.mark_verified(cdir, 'c-20261201T030000Z', True, 'byte-identical', extra={'reexport_sha256': 'abc'})
    bs.mark_verified(cdir, 'c-20261202T030000Z', False, 'differs')
    m = bs.find_backup(cdir)
    assert m['id'] == 'c-20261201T030000Z' and m['verification']['reexport_sha256'] == 'abc'
    assert bs.find_backup(cdir, 'latest')['id'] == 'c-20261202T030000Z'
    assert bs.find_backup(cdir, 'c-20261202T030000Z')['verified'] is False
    with pytest.raises(bs.BackupError, match='not found'):
        bs.find_backup(cdir, 'c-20260101T000000Z')


def test_extract_detects_a_damaged_backup(export, store, tmp_path):
    out = bs.store_backup(store, 'c', export, when=at(1))
    with open(out['path'], 'ab') as f:
        f.write(b' ')
    with pytest.raises(bs.BackupError, match='damaged'):
        bs.extract(os.path.join(store, 'c'), out['manifest'], str(tmp_path / 'restore.json'))


@pytest.mark.skipif(not HAS_AGE, reason='age is not installed (apt-get install age)')
def test_age_round_trip_and_missing_identity(export, store, tmp_path):
    keys = tmp_path / 'keys'
    keys.mkdir()
    subprocess.run(['age-keygen', '-o', str(keys / 'identity.txt')], check=True, capture_output=True)
    pub = subprocess.run(['age-keygen', '-y', str(keys / 'identity.txt')], check=True, capture_output=True).stdout
    (keys / 'recipients.txt').write_bytes(pub)
    out = bs.store_backup(store, 'c', export, encrypt='age', age_recipients_file=str(keys / 'recipients.txt'), when=at(1))
    assert out['path'].endswith('.json.age')
    assert b'password_hash' not in open(out['path'], 'rb').read()
    assert out['manifest']['sha256'] != out['manifest']['plaintext_sha256']
    cdir = os.path.join(store, 'c')
    with pytest.raises(bs.BackupError, match='identity .* does not exist'):
        bs.extract(cdir, out['manifest'], str(tmp_path / 'r.json'), str(keys / 'missing.txt'))
    bs.extract(cdir, out['manifest'], str(tmp_path / 'r.json'), str(keys / 'identity.txt'))
    assert open(str(tmp_path / 'r.json'), 'rb').read() == open(export, 'rb').read()


# -- the module --------------------------------------------------------------------------------

def test_module_store_check_mode_writes_nothing(export, store):
    res = run_ok(module.main, dict(action='store', store_dir=store, cluster='c', src=export, source=SOURCE),
                 check_mode=True)
    assert res['changed'] and res['manifest']['counts']['queues'] == 3
    assert not os.path.exists(store)


def test_module_store_fails_with_a_clear_message(tmp_path, store):
    bad = tmp_path / 'e.json'
    bad.write_text('')
    res = run_fail(module.main, dict(action='store', store_dir=store, cluster='c', src=str(bad)))
    assert 'is empty' in res['msg']


def test_module_metrics_follow_the_store(export, store, tmp_path):
    for d in (1, 2):
        bs.store_backup(store, 'warren-lab', export, when=at(d))
    cdir = os.path.join(store, 'warren-lab')
    bs.mark_verified(cdir, 'warren-lab-20261201T030000Z', True, 'ok')
    bs.mark_verified(cdir, 'warren-lab-20261202T030000Z', False, 'differs')
    textfile = tmp_path / 'textfile'
    textfile.mkdir()
    res = run_ok(module.main, dict(action='metrics', store_dir=store, cluster='warren-lab', textfile_dir=str(textfile),
                                   phase='verify', run_ok=False, run_seconds=12.5, max_age_seconds=7200))
    store_prom = samples(textfile / 'warren_backup_warren-lab.prom')
    run_prom = samples(textfile / 'warren_backup_warren-lab_verify.prom')
    assert sorted(res['metrics_files']) == sorted(str(p) for p in textfile.iterdir())
    lab = (('rabbitmq_cluster', 'warren-lab'),)
    run = (('phase', 'verify'), ('rabbitmq_cluster', 'warren-lab'))
    assert store_prom[('warren_backup_last_verified_timestamp_seconds', lab)] == at(1).timestamp()
    assert store_prom[('warren_backup_last_success_timestamp_seconds', lab)] == at(2).timestamp()
    assert store_prom[('warren_backup_last_verified', lab)] == 0
    assert store_prom[('warren_backup_last_verification_failed', lab)] == 1
    assert store_prom[('warren_backup_count', lab)] == 2
    assert store_prom[('warren_backup_max_age_seconds', lab)] == 7200
    assert run_prom[('warren_backup_run_success', run)] == 0
    assert run_prom[('warren_backup_run_duration_seconds', run)] == 12.5


def samples(path):
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_module_metrics_refuse_a_missing_textfile_dir(store, tmp_path):
    res = run_fail(module.main, dict(action='metrics', store_dir=store, cluster='c', textfile_dir=str(tmp_path / 'no')))
    assert 'textfile collector' in res['msg']
