"""Latency histograms (warren_amqp.hist): merging across processes, never averaging percentiles."""

import json
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'roles', 'amqp_client',
                                'files'))

from warren_amqp import hist  # noqa: E402  (path set just above)


def test_merged_percentiles_are_those_of_all_values_not_the_mean_of_percentiles():
    # Process A: 990 fast confirms (1 ms). Process B: 10 slow ones (500 ms).
    a, b = hist.new(), hist.new()
    for _ in range(990):
        hist.record(a, 0.001)
    for _ in range(10):
        hist.record(b, 0.5)
    merged = hist.summary(hist.merge([hist.encode(a), hist.encode(b)]))
    assert merged['count'] == 1000
    assert merged['p99'] == pytest.approx(1.0, rel=0.001)      # rank 990 is still fast
    assert merged['p99_9'] == pytest.approx(500, rel=0.001)
    assert merged['max'] == pytest.approx(500, rel=0.001)
    averaged = (hist.summary(a)['p99'] + hist.summary(b)['p99']) / 2
    assert averaged == pytest.approx(250.5, rel=0.01)          # what averaging would claim


def test_merge_equals_recording_everything_in_one_histogram():
    rng = random.Random(7)
    values = [rng.lognormvariate(-5, 1.5) for _ in range(20000)]
    parts = [hist.new() for _ in range(4)]
    single = hist.new()
    for i, v in enumerate(values):
        hist.record(parts[i % 4], v)
        hist.record(single, v)
    merged = hist.merge(hist.encode(p) for p in parts)
    assert hist.summary(merged) == hist.summary(single)


def test_step_recorders_round_trip_through_json_and_merge():
    r1, r2 = hist.StepRecorder(), hist.StepRecorder()
    r1.record(1, 'confirm', 0.002)
    r2.record(1, 'confirm', 0.004)
    r2.record(2, 'e2e', 0.010)
    docs = [json.loads(json.dumps(r.to_dict())) for r in (r1, r2)]
    merged = hist.merge_step_dicts(docs)
    assert merged['1']['confirm'].get_total_count() == 2
    assert hist.summary(merged['1']['confirm'])['max'] == pytest.approx(4.0, rel=0.001)
    assert hist.summary(merged['2']['e2e'])['count'] == 1


def test_range_and_empty():
    h = hist.new()
    assert hist.summary(h)['p99'] is None
    hist.record(h, -0.5)          # clock skew between hosts: stored as 1 us, not an error
    hist.record(h, 10 ** 6)       # beyond an hour: clamped
    s = hist.summary(h)
    assert s['count'] == 2 and s['max'] >= 3600 * 1000 * 0.999
