#!/usr/bin/env python3
"""Print the metric names found in Prometheus text exposition read from stdin, sorted, one a line.

A name counts when it has a sample line, or when a ``# TYPE`` line declares it (histograms and
summaries expand to their ``_bucket``/``_sum``/``_count`` series). Used to refresh
``tests/unit/fixtures/metric-names-*.txt`` from live endpoints; see that file's first line.
"""

import re
import sys

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def names(lines):
    found = set()
    for line in lines:
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                for suffix in SUFFIXES.get(parts[3], ("",)):
                    found.add(parts[2] + suffix)
            continue
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if match:
            found.add(match.group(1))
    return sorted(found)


if __name__ == "__main__":
    for name in names(sys.stdin):
        print(name)
