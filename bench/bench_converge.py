#!/usr/bin/env python3
"""Converge benchmark: how long `make lab` takes from nothing, and how long a re-run takes.

1. `make lab-down`, then `make lab`   -> the cold time (fresh lab hosts; the base image is
   reused when its recipe is unchanged, and the image build time is reported on its own).
2. `make lab` again                   -> the warm time and its `changed` count (aim: < 60 s, 0).

Prints progress and a summary, and writes bench/results/converge-<UTC time>.json.
Run it with `make bench-converge`. It replaces the lab hosts: do not run it on a lab you need.
"""

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def run(label, args):
    """Run a command from the repo root, stream nothing, return (seconds, output)."""
    print(f"[bench] {label}: {' '.join(args)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = round(time.monotonic() - start, 1)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-4000:])
        sys.exit(f"[bench] {label} failed (exit {proc.returncode}) after {seconds} s")
    print(f"[bench] {label}: {seconds} s", flush=True)
    return seconds, proc.stdout


def recap(output):
    """Sum the PLAY RECAP lines of every playbook run in the output, per host."""
    hosts = {}
    for host, ok, changed, unreachable, failed in RECAP.findall(output):
        entry = hosts.setdefault(host, {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0})
        for key, value in (("ok", ok), ("changed", changed), ("unreachable", unreachable), ("failed", failed)):
            entry[key] += int(value)
    return hosts


def loadavg():
    """The 1-minute load average: on a 2-core machine, anything above 2 means contention."""
    with open("/proc/loadavg", encoding="ascii") as handle:
        return float(handle.read().split()[0])


def main():
    load_before = loadavg()
    image_seconds, _ = run("base image", ["make", "-s", "image"])
    run("remove lab hosts", ["make", "-s", "lab-down"])
    cold_seconds, cold_out = run("cold make lab", ["make", "-s", "lab"])
    warm_seconds, warm_out = run("warm make lab", ["make", "-s", "lab"])
    warm = recap(warm_out)
    cold = recap(cold_out)
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "command": "make bench-converge",
        "image_seconds": image_seconds,
        "cold_lab_seconds": cold_seconds,
        "cold_changed": sum(h["changed"] for h in cold.values()),
        "warm_lab_seconds": warm_seconds,
        "warm_changed": sum(h["changed"] for h in warm.values()),
        "warm_recap": warm,
        "aim": {"warm_lab_seconds_below": 60, "warm_changed": 0},
        "load_1m": {"before": load_before, "after": loadavg()},
    }
    result["aim_met"] = result["warm_lab_seconds"] < 60 and result["warm_changed"] == 0
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "converge-" + result["when"].replace(":", "").replace("+0000", "Z") + ".json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
        handle.write("\n")
    print()
    print("converge benchmark")
    print(f"  base image (cached unless its recipe changed)  {image_seconds:7.1f} s")
    print(f"  cold make lab (fresh hosts)                    {cold_seconds:7.1f} s  changed={result['cold_changed']}")
    print(f"  warm make lab (re-run)                         {warm_seconds:7.1f} s  changed={result['warm_changed']}")
    print(f"  load average (1 min) before / after             {load_before:5.2f} / {result['load_1m']['after']:.2f}")
    print(f"  aim (warm < 60 s, changed=0)                   {'met' if result['aim_met'] else 'NOT met'}")
    print(f"  written to {os.path.relpath(path, ROOT)}")
    return 0 if result["aim_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
