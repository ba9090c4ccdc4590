#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: alertmanager_silence
short_description: Create and expire Alertmanager silences, so that planned work does not page
description:
  - O(state=present) makes sure an active silence with exactly these O(matchers), O(created_by)
    and O(comment) exists; it creates one (starting now, lasting O(duration)) when there is none,
    and leaves an existing one alone, so re-running a play does not stack silences. With
    O(extend=true) it replaces a matching silence that has less than half of O(duration) left by
    a new one that lasts O(duration) (a standing silence that renews itself on every run).
  - O(state=absent) expires silences - the ones named by O(silence_id), or every active or pending
    silence with exactly these O(matchers) and O(created_by).
  - With O(state=absent) and O(settle) or O(wait_timeout), it first waits until no alert is muted
    by those silences any more. An alert that fired during the work and is still resolving (the
    node is back but Prometheus has not scraped it yet, or the rule has C(keep_firing_for)) would
    otherwise notify the moment its silence ends - a page for planned work.
  - Uses Alertmanager's v2 API (C(/api/v2/silences)); silences are shared by all peers of an
    Alertmanager cluster, so any one peer will do.
  - For planned work such as rolling restarts and upgrades - silence the node being worked on
    before, expire the silence after (also when the work fails), and RabbitMQNodeDown pages only
    for unplanned outages. The rabbitmq role's C(tasks/silence_start.yml) and
    C(tasks/silence_end.yml) do this for its rolling restarts and C(playbooks/upgrade.yml).
    Failure drills do not silence - they measure these alerts.
version_added: 0.2.0
author:
  - warren SRE team (@warren-sre)
options:
  url:
    description:
      - Base URL of Alertmanager, for example V(http://mon1.example.net:9093). A trailing
        C(/api/v2) is accepted and ignored.
    type: str
    required: true
  state:
    description: Whether the silence should exist (V(present)) or be expired (V(absent)).
    type: str
    choices: [present, absent]
    default: present
  matchers:
    description:
      - Label matchers of the silence, in the syntax of amtool and of Alertmanager's routes -
        V(name="value"), V(name=~"regex"), V(name!="value") or V(name!~"regex").
      - Required with O(state=present), and with O(state=absent) unless O(silence_id) is given.
      - Compared as a set, so their order does not matter.
    type: list
    elements: str
  duration:
    description:
      - How long a new silence lasts, from now - a number of seconds or a number with a unit
        V(s), V(m), V(h) or V(d) (V(90m), V(2h)). Keep it short and expire the silence when the
        work is done; a forgotten silence hides real outages until it ends.
    type: str
    default: 1h
  comment:
    description: Why the silence exists (shown in the Alertmanager UI and by amtool). Part of its identity.
    type: str
    default: planned work (warren)
  created_by:
    description: Who or what created it. Part of its identity.
    type: str
    default: warren
  silence_id:
    description:
      - With O(state=absent), expire these silences only (IDs as returned by O(state=present)).
      - One ID or a list of them.
    type: list
    elements: str
    aliases: [silence_ids]
  settle:
    description:
      - With O(state=absent), seconds to wait before looking at the alerts at all. Prometheus needs
        one scrape and one rule evaluation after the work ends to resolve an alert (or drop a
        pending one that would otherwise fire once the silence is gone) - at least its scrape
        interval plus its evaluation interval.
      - Not waited in check mode, nor when there is no silence to expire.
    type: int
    default: 0
  wait_timeout:
    description:
      - With O(state=absent), after O(settle), wait up to this many seconds until no alert is
        muted by the silences being expired, polling every O(wait_delay) seconds. Alerts that
        another silence mutes too (a standing silence) are not waited for - they stay quiet.
      - When the time is up the silences are expired anyway, the module warns, and RV(still_silenced)
        names the alerts - they are no longer planned work and notify now.
    type: int
    default: 0
  wait_delay:
    description: Seconds between two looks at the alerts while waiting (O(wait_timeout)).
    type: int
    default: 5
  extend:
    description: With O(state=present), replace a matching silence that ends too early (see description).
    type: bool
    default: false
  validate_certs:
    description: Verify the TLS certificate when O(url) is https.
    type: bool
    default: true
  ca_path:
    description: CA bundle to verify Alertmanager's certificate with.
    type: path
  url_username:
    description:
      - User name for HTTP basic authentication, when Alertmanager sits behind a proxy (or its own
        web config) that asks for it. Warren's alertmanager role itself serves plain HTTP
        without authentication.
    type: str
  url_password:
    description: Password for O(url_username).
    type: str
  timeout:
    description: Seconds to wait for each API call.
    type: int
    default: 10
extends_documentation_fragment:
  - warren.rabbitmq.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    details: Any host that reaches Alertmanager's API, usually the controller (C(delegate_to) V(localhost)).
notes:
  - A silence only stops notifications; the alert still fires in Prometheus and shows in the
    Alertmanager UI as suppressed.
  - Never silence the C(Watchdog) alert - it is the dead man's switch.
seealso:
  - name: Alertmanager silences
    description: How silences work, in Alertmanager's documentation.
    link: https://prometheus.io/docs/alerting/latest/alertmanager/#silences
'''

EXAMPLES = r'''
- name: Silence the node before restarting it (planned work must not page)
  warren.rabbitmq.alertmanager_silence:
    url: "http://{{ groups['monitoring'][0] }}:9093"
    matchers:
      - rabbitmq_cluster="{{ rabbitmq_cluster_name }}"
      - rabbitmq_node="rabbit@{{ inventory_hostname }}"
    duration: 20m
    comment: "rolling restart of {{ inventory_hostname }}"
    created_by: warren-rolling-restart
  delegate_to: localhost
  register: __silence

- name: Expire it when the node is back (once its alerts have resolved, at most 3 minutes later)
  warren.rabbitmq.alertmanager_silence:
    url: "http://{{ groups['monitoring'][0] }}:9093"
    silence_id: "{{ __silence.silence_id }}"
    state: absent
    settle: 30
    wait_timeout: 180
  delegate_to: localhost

- name: Lab only - the lab's containers share an unsynchronised host clock
  warren.rabbitmq.alertmanager_silence:
    url: http://127.0.0.1:9093
    matchers:
      - alertname="HostClockNotSynchronising"
    duration: 30d
    extend: true
    comment: lab containers share the host's kernel clock (docs/runbooks/README.md)
    created_by: warren-lab
'''

RETURN = r'''
silence_id:
  description: ID of the silence created or found (O(state=present)).
  returned: state is present
  type: str
  sample: 6d4f8a9e-5b1c-4c61-a1c2-0a4a1e0b9e31
expired:
  description: IDs of the silences expired (O(state=absent)).
  returned: state is absent
  type: list
  elements: str
still_silenced:
  description:
    - Alerts the expired silences still muted when O(wait_timeout) ran out, as
      C(alertname{label="value",...}). They notify now.
  returned: state is absent
  type: list
  elements: str
  sample: ['RabbitMQNodeDown{rabbitmq_cluster="prod",rabbitmq_node="rabbit@rmq2"}']
waited:
  description: Seconds spent in O(settle) and O(wait_timeout) before expiring.
  returned: state is absent
  type: float
ends_at:
  description: End of the silence (RFC 3339, UTC). In check mode, when it would be created.
  returned: state is present
  type: str
'''

import datetime
import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.warren.rabbitmq.plugins.module_utils.alertmanager import (
    AlertmanagerClient, AlertmanagerError, matcher_key, parse_matcher)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text):
    match = re.match(r"^\s*(\d+)\s*([smhd]?)\s*$", str(text))
    if not match or int(match.group(1)) <= 0:
        raise ValueError("duration %r must be a positive number of seconds, or a number with s, m, h or d" % text)
    return int(match.group(1)) * UNITS[match.group(2) or "s"]


def rfc3339(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_time(text):
    text = text.replace("Z", "+00:00")
    if "." in text:  # Alertmanager writes nanoseconds; Python takes at most microseconds
        head, tail = text.split(".", 1)
        digits = re.match(r"\d*", tail).group(0)
        text = head + "." + digits[:6].ljust(6, "0") + tail[len(digits):]
    return datetime.datetime.fromisoformat(text)


def describe(alert):
    """alertname{label="value",...} of an alert from the v2 API, for messages."""
    labels = dict(alert.get("labels") or {})
    name = labels.pop("alertname", "?")
    return "%s{%s}" % (name, ",".join('%s="%s"' % (k, labels[k]) for k in sorted(labels)))


def wait_until_unmuted(client, silence_ids, settle, wait_timeout, wait_delay):
    """Sleep settle seconds, then poll until no alert is muted by silence_ids alone, or wait_timeout passes.

    Returns (seconds waited, alerts still muted).
    """
    start = time.monotonic()
    if settle > 0:
        time.sleep(settle)
    deadline = time.monotonic() + max(wait_timeout, 0)
    while True:
        muted = client.muted_only_by(silence_ids)
        now = time.monotonic()
        if not muted or now >= deadline:
            return round(now - start, 1), [describe(a) for a in muted]
        time.sleep(max(min(wait_delay, deadline - now), 0.1))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            matchers=dict(type="list", elements="str"),
            duration=dict(type="str", default="1h"),
            comment=dict(type="str", default="planned work (warren)"),
            created_by=dict(type="str", default="warren"),
            silence_id=dict(type="list", elements="str", aliases=["silence_ids"]),
            settle=dict(type="int", default=0),
            wait_timeout=dict(type="int", default=0),
            wait_delay=dict(type="int", default=5),
            extend=dict(type="bool", default=False),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            timeout=dict(type="int", default=10),
            url_username=dict(type="str"),
            url_password=dict(type="str", no_log=True),
        ),
        required_if=[("state", "present", ["matchers"])],
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "absent" and not p["silence_id"] and not p["matchers"]:
        module.fail_json(msg="state=absent needs silence_id, or matchers (with created_by) to find the silences to expire")
    try:
        wanted = [parse_matcher(m) for m in p["matchers"] or []]
        seconds = parse_duration(p["duration"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if p["state"] == "present" and any(m["name"] == "alertname" and m["value"] == "Watchdog" for m in wanted):
        module.fail_json(msg="refusing to silence the Watchdog: it is the dead man's switch (docs/runbooks/Watchdog.md)")

    client = AlertmanagerClient(p["url"], timeout=p["timeout"], validate_certs=p["validate_certs"], ca_path=p["ca_path"],
                                url_username=p["url_username"], url_password=p["url_password"])
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        active = client.active_silences()
        if p["state"] == "absent":
            if p["silence_id"]:
                doomed = [s for s in active if s.get("id") in p["silence_id"]]
            else:
                doomed = [s for s in active if matcher_key(s.get("matchers", [])) == matcher_key(wanted)
                          and s.get("createdBy") == p["created_by"]]
            ids = [s["id"] for s in doomed]
            waited, still = 0.0, []
            if ids and not module.check_mode:
                if p["settle"] > 0 or p["wait_timeout"] > 0:
                    waited, still = wait_until_unmuted(client, ids, p["settle"], p["wait_timeout"], p["wait_delay"])
                if still:
                    module.warn("expiring silence(s) %s while they still mute %d alert(s) after %ss: %s - "
                                "these notify now" % (", ".join(ids), len(still), waited, "; ".join(still)))
                for silence_id in ids:
                    client.expire(silence_id)
            module.exit_json(changed=bool(ids), expired=ids, still_silenced=still, waited=waited)

        same = [s for s in active if matcher_key(s.get("matchers", [])) == matcher_key(wanted)
                and s.get("createdBy") == p["created_by"] and s.get("comment") == p["comment"]]
        ends_at = now + datetime.timedelta(seconds=seconds)
        keep = [s for s in same if not p["extend"]
                or parse_time(s["endsAt"]) >= now + datetime.timedelta(seconds=seconds / 2.0)]
        if keep:
            module.exit_json(changed=False, silence_id=keep[0]["id"], ends_at=keep[0]["endsAt"])
        if module.check_mode:
            module.exit_json(changed=True, silence_id=None, ends_at=rfc3339(ends_at))
        silence_id = client.create(wanted, rfc3339(now), rfc3339(ends_at), p["created_by"], p["comment"])
        for old in same:  # extend: the new silence replaces the ones that ended too early
            client.expire(old["id"])
        module.exit_json(changed=True, silence_id=silence_id, ends_at=rfc3339(ends_at))
    except AlertmanagerError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
