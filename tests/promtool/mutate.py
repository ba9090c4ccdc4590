#!/usr/bin/env python3
"""Mutation testing for warren's Prometheus rules: do the promtool tests notice a broken rule?

    tests/promtool/mutate.py [--promtool PATH] [--only ID ...] [--list]

Each entry of tests/promtool/mutations.yml is a small, plausible mistake in one rule: a
threshold moved, a short burn-rate window dropped, a `for:` shortened, a guard removed. For
each one this script copies the rules and tests into a scratch folder, applies the change to
that rule only (the `find` text must occur exactly once inside the rule), and runs promtool on
the test groups that exercise the rule. A mutation the tests still pass on "survives": some
behaviour is not pinned down by any test. Exit status 1 if any listed mutation survives or if a
`find` text no longer matches (the list went stale). Run it after the tests pass unmutated
(run.sh does): a failing suite would "kill" every mutation.

Only the groups that test the mutated rule run (for an alert, the groups with an
alert_rule_test for it; for a recording rule, the groups named in the entry's `tests`, else
every group of the files that load its rule file), which keeps the whole list to a minute or so.
Needs PyYAML and promtool (run.sh fetches it).
"""

import argparse
import concurrent.futures
import copy
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
RULES = os.path.join(ROOT, "roles", "prometheus", "files", "rules")
MUTATIONS = os.path.join(HERE, "mutations.yml")
DEFAULT_PROMTOOL = os.path.join(ROOT, ".build", "tools", "prometheus", "root", "usr", "bin", "promtool")


def rule_span(text, name):
    """(start, end) of the rule `- alert: name` / `- record: name` in a rule file's text."""
    start = re.search(r"^\s*- (?:alert|record): %s\s*$" % re.escape(name), text, re.M)
    if not start:
        raise KeyError(name)
    following = re.compile(r"^\s*- (?:alert|record): |^\s*- name: |^\s*# ", re.M)
    nxt = following.search(text, start.end())
    return start.start(), nxt.start() if nxt else len(text)


def mutate(text, name, find, replace):
    start, end = rule_span(text, name)
    block = text[start:end]
    count = block.count(find)
    if count != 1:
        raise ValueError("%r occurs %d times in rule %s (must be exactly once)" % (find, count, name))
    return text[:start] + block.replace(find, replace) + text[end:]


def rule_file_of(name):
    for path in sorted(glob.glob(os.path.join(RULES, "*.yml"))):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if re.search(r"^\s*- (?:alert|record): %s\s*$" % re.escape(name), text, re.M):
            return path, "record" if re.search(r"- record: %s\s*$" % re.escape(name), text, re.M) else "alert"
    raise KeyError("no rule named %s under %s" % (name, RULES))


def test_files():
    return sorted(p for p in glob.glob(os.path.join(HERE, "*_test.yml")))


def groups_for(rule_file, name, kind, wanted):
    """{test file name: [groups]} exercising rule `name` of rule_file."""
    out = {}
    base = os.path.basename(rule_file)
    for path in test_files():
        with open(path, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle) or {}
        if not any(os.path.basename(r) == base for r in doc.get("rule_files", [])):
            continue
        chosen = []
        for group in doc.get("tests", []):
            title = " ".join(group.get("name", "").split())
            if wanted:
                if any(w in title for w in wanted):
                    chosen.append(group)
            elif kind == "record" or any(c.get("alertname") == name for c in group.get("alert_rule_test") or []):
                chosen.append(group)
        if chosen:
            out[os.path.basename(path)] = (doc, chosen)
    return out


def try_mutation(promtool, m):
    """("killed" | "survived" | "stale", detail) of one mutation, in a scratch copy of its own."""
    try:
        rule_file, kind = rule_file_of(m["rule"])
        with open(rule_file, encoding="utf-8") as handle:
            changed = mutate(handle.read(), m["rule"], m["find"], m["replace"])
    except (KeyError, ValueError) as exc:
        return "stale", str(exc)
    selection = groups_for(rule_file, m["rule"], kind, m.get("tests"))
    if not selection:
        return "stale", "no test group exercises %s" % m["rule"]
    with tempfile.TemporaryDirectory(prefix="warren-mutate-") as scratch:
        rules_copy = os.path.join(scratch, "roles", "prometheus", "files", "rules")
        shutil.copytree(RULES, rules_copy)
        os.makedirs(os.path.join(scratch, "tests", "promtool"))
        with open(os.path.join(rules_copy, os.path.basename(rule_file)), "w", encoding="utf-8") as handle:
            handle.write(changed)
        passed = run_groups(promtool, scratch, selection)
    groups = sum(len(g) for _, g in selection.values())
    return ("survived", "%d test groups ran" % groups) if passed else ("killed", "")


def run_groups(promtool, scratch, selection):
    """True when promtool passes every selected group."""
    ok = True
    for file_name, (doc, groups) in selection.items():
        trimmed = copy.deepcopy(doc)
        trimmed["tests"] = groups
        path = os.path.join(scratch, "tests", "promtool", "mut-" + file_name)
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(trimmed, handle, sort_keys=False)
        result = subprocess.run([promtool, "test", "rules", os.path.basename(path)],
                                cwd=os.path.dirname(path), capture_output=True, text=True)
        ok = ok and result.returncode == 0
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", default=os.environ.get("PROMTOOL", DEFAULT_PROMTOOL))
    parser.add_argument("--only", nargs="*", default=[], help="run only these mutation ids")
    parser.add_argument("--list", action="store_true", help="print the mutation list and exit")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="mutations tried at once (default: the CPU count)")
    args = parser.parse_args(argv)

    with open(MUTATIONS, encoding="utf-8") as handle:
        mutations = yaml.safe_load(handle)["mutations"]
    ids = [m["id"] for m in mutations]
    if len(ids) != len(set(ids)):
        print("mutations.yml: duplicate ids", file=sys.stderr)
        return 2
    if args.list:
        for m in mutations:
            print("%-40s %s: %s" % (m["id"], m["rule"], m["why"]))
        return 0
    if args.only:
        mutations = [m for m in mutations if m["id"] in args.only]

    started = time.monotonic()
    killed, survived, stale = [], [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = pool.map(lambda m: (m, try_mutation(args.promtool, m)), mutations)
        for m, (outcome, detail) in outcomes:
            if outcome == "stale":
                stale.append("%s: %s" % (m["id"], detail))
                print("  STALE    %-40s %s" % (m["id"], detail), flush=True)
            elif outcome == "survived":
                survived.append(m["id"])
                print("  SURVIVED %-40s %s (%s)" % (m["id"], m["why"], detail), flush=True)
            else:
                killed.append(m["id"])
                print("  killed   %-40s %s" % (m["id"], m["why"]), flush=True)

    total = len(killed) + len(survived)
    print("mutation score: %d/%d killed, %d survived, %d stale (%.0f s)" % (
        len(killed), total, len(survived), len(stale), time.monotonic() - started))
    for item in survived:
        print("survived: " + item)
    for item in stale:
        print("stale: " + item)
    return 1 if survived or stale else 0


if __name__ == "__main__":
    sys.exit(main())
