#!/usr/bin/env python3
"""Print the metric names found in Prometheus text exposition, sorted, one a line.

The one collector of warren's metric-name fixture, tests/unit/fixtures/metric-names-<version>.txt,
which both the dashboard tests (tests/unit/test_dashboards.py) and the rule checks
(tests/promtool/check_runbooks.py) read. Refresh it on a broker host (or inside a lab container)
that has the rabbitmq_prometheus plugin and node_exporter, e.g.:

    podman exec -i warren-lab-rmq1 python3 - --fixture < tools/dashboards/collect_metric_names.py \\
        > tests/unit/fixtures/metric-names-4.0.5.txt

With --fixture it reads the endpoints itself (the aggregated /metrics, the /metrics/detailed
families the prometheus role scrapes, node_exporter) and writes the fixture's two header lines
(command, versions); without it, it reads exposition text from stdin.

A name counts when it has a sample line, or when a ``# TYPE`` line declares it (histograms and
summaries expand to their ``_bucket``/``_sum``/``_count`` series), so families with no sample
right now (erlang_vm_dist_* on a lone node) are still listed. Standard library only.
"""

import argparse
import re
import subprocess
import sys
import time
import urllib.request

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
ENDPOINTS = (
    "http://localhost:15692/metrics",
    "http://localhost:15692/metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count"
    "&family=ra_metrics",
    "http://localhost:9100/metrics",
)


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


def version(command):
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", action="store_true",
                        help="read the broker's and node_exporter's endpoints and print a fixture")
    args = parser.parse_args(argv)
    if not args.fixture:
        for name in names(sys.stdin):
            print(name)
        return 0
    lines = []
    for url in ENDPOINTS:
        with urllib.request.urlopen(url, timeout=30) as response:
            lines.extend(response.read().decode("utf-8").splitlines(True))
    print("# for u in %s; do curl -s \"$u\"; done | python3 tools/dashboards/collect_metric_names.py"
          % " ".join('"%s"' % u for u in ENDPOINTS))
    print("# RabbitMQ %s, %s, %s" % (version(["rabbitmqctl", "version"]),
                                      version(["prometheus-node-exporter", "--version"]),
                                      time.strftime("%Y-%m-%d", time.gmtime())))
    for name in names(lines):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
