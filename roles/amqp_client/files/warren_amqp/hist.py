"""Latency histograms per process, merged across processes and hosts (HdrHistogram).

Every process records into its own ``HdrHistogram`` (values in microseconds, 1 us to 1 hour,
3 significant digits: any value is stored to within 0.1 %). A histogram travels as its
``encode()`` string (compressed, base64), and the report merges the encoded histograms of all
processes and hosts before it reads a percentile. Percentiles are never averaged: the p99 of
two processes is not the mean of their p99s.

Library: the ``hdrhistogram`` PyPI package (``from hdrh.histogram import HdrHistogram``). On a
load host it lives in the virtualenv of the ``warren.rabbitmq.loadgen`` role (the
``warren-traffic`` command uses that virtualenv's Python); a plain ``python3 -m
warren_amqp.traffic`` with ``PYTHONPATH`` set finds it there too (``WARREN_LOADGEN_VENV``,
default ``/opt/warren/loadgen``), after the system's own packages.
"""

import glob
import os
import sys

try:
    from hdrh.histogram import HdrHistogram
except ImportError:
    _VENV = os.environ.get('WARREN_LOADGEN_VENV', '/opt/warren/loadgen')
    _SITES = sorted(glob.glob(os.path.join(_VENV, 'lib', 'python%d.%d' % sys.version_info[:2],
                                           'site-packages')))
    if not _SITES:
        raise ImportError('hdrhistogram is not installed: apply the warren.rabbitmq.loadgen role '
                          '(it installs it into %s) or pip install hdrhistogram' % _VENV) from None
    sys.path.extend(_SITES)
    from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3600 * 1000 * 1000
SIGNIFICANT = 3
POINTS = (('p50', 50.0), ('p90', 90.0), ('p99', 99.0), ('p99_9', 99.9))


def new():
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


def record(histogram, seconds):
    """Record a duration in seconds (clamped to the trackable range; negatives as 1 us)."""
    us = int(round(seconds * 1e6))
    histogram.record_value(min(max(us, LOWEST_US), HIGHEST_US))


def encode(histogram):
    return histogram.encode().decode('ascii')


def decode(text):
    return HdrHistogram.decode(text.encode('ascii') if isinstance(text, str) else text)


def merge(encoded):
    """One histogram holding every value of the encoded histograms given."""
    total = new()
    for text in encoded:
        if text:
            total.decode_and_add(text.encode('ascii') if isinstance(text, str) else text)
    return total


def summary(histogram):
    """count, mean, p50, p90, p99, p99.9 and max, in milliseconds (None when empty)."""
    count = histogram.get_total_count()
    out = {'count': count}
    if not count:
        out.update({k: None for k, _ in POINTS})
        out.update(max=None, mean=None)
        return out
    for key, p in POINTS:
        out[key] = histogram.get_value_at_percentile(p) / 1000.0
    out['max'] = histogram.get_max_value() / 1000.0
    out['mean'] = round(histogram.get_mean_value() / 1000.0, 3)
    return out


class StepRecorder:
    """Histograms by (step index, metric name) for one process; serialisable as a dict."""

    def __init__(self):
        self.histograms = {}

    def get(self, step_index, name):
        key = (step_index, name)
        h = self.histograms.get(key)
        if h is None:
            h = self.histograms[key] = new()
        return h

    def record(self, step_index, name, seconds):
        record(self.get(step_index, name), seconds)

    def to_dict(self):
        """{"<step index>": {"<metric>": "<encoded>"}}, JSON-ready."""
        out = {}
        for (step, name), h in sorted(self.histograms.items()):
            out.setdefault(str(step), {})[name] = encode(h)
        return out


def merge_step_dicts(dicts):
    """Merge several ``StepRecorder.to_dict()`` results: {"step": {"metric": histogram}}."""
    merged = {}
    for d in dicts:
        for step, metrics in d.items():
            for name, text in metrics.items():
                slot = merged.setdefault(step, {})
                if name not in slot:
                    slot[name] = new()
                slot[name].decode_and_add(text.encode('ascii'))
    return merged
