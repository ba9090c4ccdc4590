"""playbooks/dr/files/standby_rpo.py: lag and RPO window of the warm standby from histories."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'playbooks', 'dr', 'files'))

import standby_rpo  # noqa: E402  (path set just above)


def write(path, records):
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))


def pub(seq, confirmed, outcome='confirmed'):
    return {'t': 'pub', 'run': 'r', 'pub': 'p0', 'seq': seq, 'outcome': outcome,
            'confirmed': confirmed if outcome == 'confirmed' else None}


def dele(seq, when):
    return {'t': 'del', 'run': 'r', 'pub': 'p0', 'seq': seq, 'delivered': when}


def test_everything_copied_gives_zero_rpo_and_the_lag(tmp_path):
    write(tmp_path / 'ops-main-0.jsonl', [pub(i, 100.0 + i) for i in range(4)])
    (tmp_path / 'dr').mkdir()
    write(tmp_path / 'dr' / 'ops-drain-x-0.jsonl',
          [dele(0, 100.5), dele(1, 101.25), dele(1, 109.0), dele(2, 103.0), dele(3, 103.5)])
    r = standby_rpo.analyse(*standby_rpo.read_history([str(tmp_path)]))
    assert (r['confirmed'], r['on_standby'], r['missing']) == (4, 4, 0)
    assert r['rpo']['window_seconds'] == 0.0
    # lags 0.5, 0.25 (the first delivery counts), 1.0, 0.5
    assert r['lag_seconds']['p50'] == pytest.approx(0.5)
    assert r['lag_seconds']['max'] == pytest.approx(1.0)


def test_missing_confirmed_messages_make_the_rpo_window(tmp_path):
    write(tmp_path / 'ops-main-0.jsonl',
          [pub(0, 10.0), pub(1, 11.0), pub(2, 12.0), pub(3, 13.5), pub(4, None, 'indeterminate')])
    write(tmp_path / 'ops-drain-0.jsonl', [dele(0, 20.0), dele(1, 20.1)])
    r = standby_rpo.analyse(*standby_rpo.read_history([str(tmp_path)]))
    assert (r['confirmed'], r['missing']) == (4, 2)      # the unconfirmed one is not counted
    assert r['rpo']['first_missing_confirm'] == 12.0
    assert r['rpo']['window_seconds'] == pytest.approx(1.5)


def test_no_history_is_an_error(tmp_path, capsys):
    assert standby_rpo.main([str(tmp_path)]) == 2
    assert 'no ops-*.jsonl' in capsys.readouterr().err


def test_cli_writes_json(tmp_path, capsys):
    write(tmp_path / 'ops-a.jsonl', [pub(0, 1.0), dele(0, 1.2)])
    out = tmp_path / 'r.json'
    assert standby_rpo.main([str(tmp_path / 'ops-a.jsonl'), '--json', str(out)]) == 0
    assert json.loads(out.read_text())['on_standby'] == 1
    assert 'missing 0' in capsys.readouterr().out
