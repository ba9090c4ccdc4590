# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup store of warren.rabbitmq.backup_store: naming, manifests, retention, atomic writes.

Layout of a store (one directory per cluster)::

    <store>/<cluster>/<cluster>-<YYYYMMDDTHHMMSSZ>.json            the export (or .json.age)
    <store>/<cluster>/<cluster>-<YYYYMMDDTHHMMSSZ>.manifest.json   what it is, written last

A backup exists only once its manifest exists: the data file is renamed into place first, the
manifest second, and both are written under a dot-name ending in ``.tmp`` first. A crash
leaves at most a ``.tmp`` file (ignored by every listing, removed by a later prune) or a data
file without a manifest (ignored too), never a partial file under a final name.

Everything here is plain Python (no Ansible), so it is unit-tested directly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = '.manifest.json'
TIME_FORMAT = '%Y%m%dT%H%M%SZ'
ID_RE = re.compile(r'^(?P<cluster>[A-Za-z0-9][A-Za-z0-9._-]*)-(?P<ts>\d{8}T\d{6}Z)$')
# The object types a definitions export holds, counted in the manifest.
COUNTED = ('vhosts', 'users', 'permissions', 'topic_permissions', 'queues', 'exchanges',
           'bindings', 'policies', 'parameters', 'global_parameters')
TMP_PREFIX = '.warren-backup-'
TMP_SUFFIX = '.tmp'


class BackupError(Exception):
    """A refusal or a failure with a message an operator can act on."""


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def safe_cluster(cluster):
    """A cluster name as a file-name part: letters, digits, '.', '_' and '-' only."""
    if not isinstance(cluster, str) or not cluster.strip():
        raise BackupError('cluster name is empty: set it (the cluster_health result or rabbitmq_cluster_name)')
    out = re.sub(r'[^A-Za-z0-9._-]', '_', cluster.strip())
    if not out[0].isalnum():
        out = 'c' + out
    return out


def backup_id(cluster, when):
    """``<cluster>-<UTC time>``: sorts by time within a cluster, readable at 3 a.m."""
    if when.tzinfo is None:
        raise BackupError('backup time must be timezone-aware (UTC)')
    return '%s-%s' % (safe_cluster(cluster), when.astimezone(datetime.timezone.utc).strftime(TIME_FORMAT))


def parse_id(name):
    """(cluster, datetime) of a backup id; BackupError if it is not one."""
    m = ID_RE.match(name or '')
    if not m:
        raise BackupError("'%s' is not a backup id (expected <cluster>-YYYYMMDDTHHMMSSZ)" % name)
    when = datetime.datetime.strptime(m.group('ts'), TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    return m.group('cluster'), when


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def load_definitions(path):
    """The export at ``path`` as a dict; refuses what is not a RabbitMQ definitions export."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except (IOError, OSError) as e:
        raise BackupError('cannot read the export %s: %s' % (path, e))
    if not raw.strip():
        raise BackupError('the export %s is empty: the export step did not write it' % path)
    try:
        doc = json.loads(raw.decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as e:
        raise BackupError('the export %s is not valid JSON (%s): refusing to store it as a backup' % (path, e))
    if not isinstance(doc, dict) or not isinstance(doc.get('vhosts'), list) or not isinstance(doc.get('users'), list):
        raise BackupError('the export %s is not a RabbitMQ definitions export (no vhosts and users lists): '
                          'refusing to store it as a backup' % path)
    return doc


def counts_of(doc):
    return dict((k, len(doc.get(k) or [])) for k in COUNTED)


def build_manifest(bid, cluster, created, doc, plain_sha256, plain_size, stored_file, stored_sha256,
                   stored_size, source=None, encryption=None):
    """The manifest written beside a backup. ``source``: versions and nodes of the cluster."""
    source = source or {}
    nodes = source.get('nodes') or []
    if not isinstance(nodes, list):
        raise BackupError('source.nodes must be a list of node names')
    return {
        'format': MANIFEST_FORMAT,
        'id': bid,
        'cluster': cluster,
        'created': created.strftime('%Y-%m-%dT%H:%M:%SZ'),
        'created_epoch': int(created.timestamp()),
        'file': stored_file,
        'size': stored_size,
        'sha256': stored_sha256,
        'plaintext_sha256': plain_sha256,
        'plaintext_size': plain_size,
        'encryption': encryption,
        'rabbitmq_version': source.get('rabbitmq_version') or doc.get('rabbitmq_version') or doc.get('rabbit_version'),
        'erlang_version': source.get('erlang_version'),
        'nodes': sorted(str(n) for n in nodes),
        'source_node': source.get('source_node'),
        'counts': counts_of(doc),
        'verified': None,
        'verification': None,
    }


def check_writable(directory, need_bytes=0):
    """Create ``directory`` (0700) if needed and prove a file can be written there."""
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700)
    except OSError as e:
        raise BackupError('cannot create the backup directory %s: %s' % (directory, e.strerror or e))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BackupError('the backup directory %s is not writable by this user: fix its owner or mode; '
                          'older backups are untouched' % directory)
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if need_bytes and free < need_bytes:
        raise BackupError('not enough free space in %s: %d bytes free, %d needed; free some space or point '
                          'the store elsewhere - older backups are untouched' % (directory, free, need_bytes))
    return free


def _explain_os_error(e, path):
    if e.errno == errno.ENOSPC:
        return 'disk full while writing %s: free some space; older backups are untouched' % path
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return 'cannot write %s (%s): fix the directory owner or mode; older backups are untouched' % (path, e.strerror)
    return 'writing %s failed: %s; older backups are untouched' % (path, e)


def _atomic(path, fill, mode):
    """Write ``path`` through a temporary dot-file in the same directory, then rename.

    ``fill(f)`` writes the content into the open temporary file. The file and the directory
    are fsynced, so after a crash ``path`` holds either the old content or the new one, never a
    part. On any error the temporary file is removed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, 'wb') as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        _fsync_dir(directory)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise BackupError(_explain_os_error(e, path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path, data, mode=0o600):
    """Write bytes to ``path`` atomically."""
    _atomic(path, lambda f: f.write(data), mode)


def atomic_copy(src, path, mode=0o600):
    """Copy the file ``src`` to ``path`` atomically."""
    def fill(f):
        with open(src, 'rb') as inp:
            shutil.copyfileobj(inp, f, 1 << 20)
    _atomic(path, fill, mode)


def run_module(module, run):
    """exit_json with ``run(module)``'s result; a BackupError becomes fail_json with its message."""
    try:
        module.exit_json(**run(module))
    except BackupError as e:
        module.fail_json(msg=str(e))


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_json(manifest):
    return (json.dumps(manifest, indent=2, sort_keys=True) + '\n').encode('utf-8')


def run_age(args, what):
    """Run age; BackupError with its stderr when it fails or is missing."""
    try:
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as e:
        raise BackupError('cannot run %s for %s: %s (install the Debian package "age")' % (args[0], what, e))
    if proc.returncode != 0:
        raise BackupError('%s failed (%s): %s' % (what, ' '.join(args[:2]), proc.stderr.decode('utf-8', 'replace').strip()))


def check_key_file(path, what, store_dir):
    """A key file must exist, be readable, and not live inside the backup store."""
    if not path:
        raise BackupError('%s is not set' % what)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise BackupError('%s %s does not exist or is not readable: create it (see docs/dr-plan.md, '
                          '"Encryption") - older backups are untouched' % (what, path))
    key = os.path.realpath(path)
    store = os.path.realpath(store_dir)
    if key == store or key.startswith(store + os.sep):
        raise BackupError('%s %s is inside the backup store %s: keys are never kept beside the backups '
                          '(a copy of the store would carry its own key); move it out' % (what, path, store_dir))


def store_backup(store_dir, cluster, src, source=None, when=None, encrypt=None, age_recipients_file=None,
                 age_binary='age', min_free_bytes=0, check_mode=False):
    """Store the export ``src`` as a new backup; returns the manifest and the paths.

    Refuses bad input before writing anything; on a failure while writing, removes what this
    call wrote, so older backups and the store stay as they were.
    """
    if encrypt not in (None, 'none', 'age'):
        raise BackupError("encrypt must be 'none' or 'age', got '%s'" % encrypt)
    encrypt = None if encrypt in (None, 'none') else encrypt
    doc = load_definitions(src)
    cdir_name = safe_cluster(cluster)
    cdir = os.path.join(store_dir, cdir_name)
    if encrypt:
        check_key_file(age_recipients_file, 'the age recipients file', store_dir)
    when = when or utcnow()
    bid = backup_id(cluster, when)
    plain_size = os.path.getsize(src)
    data_name = bid + ('.json.age' if encrypt else '.json')
    data_path = os.path.join(cdir, data_name)
    manifest_path = os.path.join(cdir, bid + MANIFEST_SUFFIX)
    if os.path.exists(manifest_path) or os.path.exists(data_path):
        raise BackupError('a backup named %s already exists in %s: two runs in the same second? '
                          'refusing to overwrite it' % (bid, cdir))
    plain_sha = sha256_file(src)
    if check_mode:
        manifest = build_manifest(bid, cluster, when, doc, plain_sha, plain_size, data_name, None, None,
                                  source, {'tool': 'age'} if encrypt else None)
        return dict(id=bid, path=data_path, manifest_path=manifest_path, manifest=manifest)
    check_writable(cdir, need_bytes=2 * plain_size + 4096 + int(min_free_bytes or 0))
    try:
        if encrypt:
            fd, tmp = tempfile.mkstemp(dir=cdir, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
            os.close(fd)
            try:
                os.chmod(tmp, 0o600)
                run_age([age_binary, '-R', age_recipients_file, '-o', tmp, src], 'encrypting the backup with age')
                with open(tmp, 'rb') as f:
                    os.fsync(f.fileno())
                os.rename(tmp, data_path)
                _fsync_dir(cdir)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            atomic_copy(src, data_path)
        manifest = build_manifest(bid, cluster, when, doc, plain_sha, plain_size, data_name,
                                  sha256_file(data_path), os.path.getsize(data_path), source,
                                  {'tool': 'age', 'recipients_file': age_recipients_file} if encrypt else None)
        atomic_write(manifest_path, manifest_json(manifest))
    except BaseException:
        # no manifest means no backup: remove the data file this call put in place
        if os.path.exists(data_path) and not os.path.exists(manifest_path):
            os.unlink(data_path)
        raise
    return dict(id=bid, path=data_path, manifest_path=manifest_path, manifest=manifest)


def list_backups(cluster_dir):
    """Manifests of the complete backups in a cluster directory, newest first.

    A data file without a manifest, a manifest whose data file is gone, and temporary files
    are not backups.
    """
    out = []
    if not os.path.isdir(cluster_dir):
        return out
    for name in os.listdir(cluster_dir):
        if name.startswith('.') or not name.endswith(MANIFEST_SUFFIX):
            continue
        bid = name[:-len(MANIFEST_SUFFIX)]
        try:
            parse_id(bid)
            with open(os.path.join(cluster_dir, name), 'rb') as f:
                manifest = json.loads(f.read().decode('utf-8'))
        except (BackupError, ValueError, UnicodeDecodeError, IOError, OSError):
            continue
        if not isinstance(manifest, dict) or manifest.get('id') != bid:
            continue
        if not os.path.isfile(os.path.join(cluster_dir, manifest.get('file') or '')):
            continue
        out.append(manifest)
    out.sort(key=lambda m: m['id'], reverse=True)
    return out


def _created(manifest):
    return parse_id(manifest['id'])[1]


def select_retention(manifests, keep_daily, keep_weekly):
    """Which backups to keep: {id: [reasons]} and the ids to delete, newest first.

    - ``keep_daily``: the newest backup of each of the ``keep_daily`` most recent UTC days that
      have a backup; ``keep_weekly``: the same per ISO week.
    - A backup whose verification failed never fills a daily or weekly slot.
    - Always kept: the newest backup (its verification may still be to come) and the newest
      verified backup, whatever the counts say.
    """
    for name, value, low in (('keep_daily', keep_daily, 1), ('keep_weekly', keep_weekly, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise BackupError('%s must be an integer >= %d, got %r' % (name, low, value))
    ordered = sorted(manifests, key=lambda m: m['id'], reverse=True)
    keep = {}

    def mark(m, why):
        keep.setdefault(m['id'], []).append(why)

    if ordered:
        mark(ordered[0], 'newest')
    verified = [m for m in ordered if m.get('verified') is True]
    if verified:
        mark(verified[0], 'newest verified')
    candidates = [m for m in ordered if m.get('verified') is not False]
    for slot, count, period in (('daily', keep_daily, lambda d: d.date()),
                                ('weekly', keep_weekly, lambda d: tuple(d.isocalendar()[:2]))):
        seen = []
        for m in candidates:
            p = period(_created(m))
            if p in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(p)
            mark(m, slot)
    delete = [m['id'] for m in ordered if m['id'] not in keep]
    return keep, delete


def prune(cluster_dir, keep_daily, keep_weekly, check_mode=False, stale_tmp_seconds=3600, now=None):
    """Apply select_retention to a cluster directory; also clears stale temporary files."""
    manifests = list_backups(cluster_dir)
    keep, delete = select_retention(manifests, keep_daily, keep_weekly)
    by_id = dict((m['id'], m) for m in manifests)
    removed_tmp = []
    now = now or utcnow()
    if os.path.isdir(cluster_dir):
        for name in sorted(os.listdir(cluster_dir)):
            path = os.path.join(cluster_dir, name)
            if name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX):
                if now.timestamp() - os.path.getmtime(path) > stale_tmp_seconds:
                    removed_tmp.append(name)
                    if not check_mode:
                        os.unlink(path)
    if not check_mode:
        for bid in delete:
            m = by_id[bid]
            # manifest first: without it the data file is no longer a backup, even if the next unlink fails
            os.unlink(os.path.join(cluster_dir, bid + MANIFEST_SUFFIX))
            data = os.path.join(cluster_dir, m['file'])
            if os.path.exists(data):
                os.unlink(data)
    return dict(keep=keep, deleted=delete, removed_tmp=removed_tmp)


def find_backup(cluster_dir, wanted=None):
    """The manifest of backup ``wanted`` (an id), or of the newest verified backup."""
    manifests = list_backups(cluster_dir)
    if wanted and wanted not in ('latest-verified', 'latest'):
        parse_id(wanted)
        for m in manifests:
            if m['id'] == wanted:
                return m
        raise BackupError('backup %s not found in %s (complete backups there: %s)'
                          % (wanted, cluster_dir, ', '.join(m['id'] for m in manifests[:10]) or 'none'))
    if wanted == 'latest':
        if not manifests:
            raise BackupError('no backup in %s' % cluster_dir)
        return manifests[0]
    for m in manifests:
        if m.get('verified') is True:
            return m
    raise BackupError('no verified backup in %s (%d unverified or failed): run playbooks/backup-verify.yml, '
                      'or name one with -e dr_backup=<id> to use an unverified backup knowingly'
                      % (cluster_dir, len(manifests)))


def read_manifest(cluster_dir, bid):
    parse_id(bid)
    path = os.path.join(cluster_dir, bid + MANIFEST_SUFFIX)
    try:
        with open(path, 'rb') as f:
            return json.loads(f.read().decode('utf-8'))
    except (IOError, OSError, ValueError) as e:
        raise BackupError('cannot read the manifest of %s (%s): %s' % (bid, path, e))


def mark_verified(cluster_dir, bid, ok, detail, when=None, extra=None):
    """Record a verification's outcome in the manifest (atomically). Returns the new manifest."""
    manifest = read_manifest(cluster_dir, bid)
    manifest['verified'] = bool(ok)
    verification = {'time': (when or utcnow()).strftime('%Y-%m-%dT%H:%M:%SZ'), 'ok': bool(ok), 'detail': detail}
    verification.update(extra or {})
    manifest['verification'] = verification
    atomic_write(os.path.join(cluster_dir, bid + MANIFEST_SUFFIX), manifest_json(manifest))
    return manifest


def extract(cluster_dir, manifest, dest, age_identity_file=None, age_binary='age', store_dir=None):
    """Write the backup's plain JSON to ``dest`` (0600), checking both checksums on the way."""
    data = os.path.join(cluster_dir, manifest['file'])
    actual = sha256_file(data)
    if actual != manifest['sha256']:
        raise BackupError('backup %s is damaged: sha256 of %s is %s, the manifest says %s'
                          % (manifest['id'], data, actual, manifest['sha256']))
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o700)
    if manifest.get('encryption'):
        check_key_file(age_identity_file, 'the age identity (private key) file', store_dir or cluster_dir)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
        os.close(fd)
        try:
            os.chmod(tmp, 0o600)
            run_age([age_binary, '-d', '-i', age_identity_file, '-o', tmp, data], 'decrypting backup %s' % manifest['id'])
            os.rename(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        atomic_copy(data, dest)
    plain = sha256_file(dest)
    if plain != manifest['plaintext_sha256']:
        os.unlink(dest)
        raise BackupError('backup %s decrypted to content whose sha256 (%s) is not the manifest\'s (%s)'
                          % (manifest['id'], plain, manifest['plaintext_sha256']))
    return dest
