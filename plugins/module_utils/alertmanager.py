# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private client for Alertmanager's v2 API (silences), used by warren.rabbitmq.alertmanager_silence.

Built on ``ansible.module_utils.urls.open_url``: nothing beyond ansible-core is needed. Matchers
are written the way amtool and Alertmanager's routing config write them (``name="value"``,
``name=~"regex"``, ``name!="value"``, ``name!~"regex"``) and turned into the API's objects.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


class AlertmanagerError(Exception):
    """An API call failed; the message says what and why."""


def parse_matcher(text):
    """``name="value"`` (or =~, !=, !~) -> the API's matcher dict. ValueError when malformed."""
    match = MATCHER.match(text)
    if not match:
        raise ValueError('matcher %r must look like name="value", name=~"regex", name!="value" '
                         'or name!~"regex"' % text)
    name, op, value = match.groups()
    value = value.replace('\\"', '"').replace('\\\\', '\\')
    return {"name": name, "value": value, "isRegex": op in ("=~", "!~"), "isEqual": op in ("=", "=~")}


def matcher_key(matchers):
    """Order-independent identity of a matcher list, for comparing silences."""
    return sorted((m["name"], m["value"], bool(m.get("isRegex")), bool(m.get("isEqual", True)))
                  for m in matchers)


class AlertmanagerClient:
    """Silences through ``<url>/api/v2``."""

    def __init__(self, url, timeout=10, validate_certs=True, ca_path=None, headers=None,
                 url_username=None, url_password=None):
        self.base = url.rstrip("/")
        if self.base.endswith("/api/v2"):
            self.base = self.base[:-len("/api/v2")]
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.headers = dict(headers or {})
        # HTTP basic authentication, for an Alertmanager behind a proxy (or its own web config)
        # that asks for it. Sent with the first request (force_basic_auth): a proxy that answers
        # 401 without a WWW-Authenticate challenge would otherwise never receive it.
        self.auth = {}
        if url_username:
            self.auth = {"url_username": url_username, "url_password": url_password or "",
                         "force_basic_auth": True}

    def _call(self, method, path, body=None):
        url = self.base + "/api/v2" + path
        headers = dict(self.headers, Accept="application/json")
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            response = open_url(url, method=method, data=data, headers=headers, timeout=self.timeout,
                                validate_certs=self.validate_certs, ca_path=self.ca_path, **self.auth)
            text = response.read()
        except HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500] if hasattr(exc, "read") else ""
            raise AlertmanagerError("%s %s: HTTP %s %s" % (method, url, exc.code, detail.strip()))
        except (URLError, UrlsConnectionError, OSError) as exc:
            raise AlertmanagerError("%s %s: cannot reach Alertmanager (%s)" % (method, url, exc))
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise AlertmanagerError("%s %s: answer is not JSON" % (method, url))

    def silences(self):
        return self._call("GET", "/silences") or []

    def active_silences(self):
        """Silences that are active or pending (not expired)."""
        return [s for s in self.silences() if s.get("status", {}).get("state") in ("active", "pending")]

    def alerts(self):
        """Every alert Alertmanager holds that has not resolved, silenced and inhibited ones included."""
        return self._call("GET", "/alerts?active=true&silenced=true&inhibited=true&unprocessed=true") or []

    def muted_only_by(self, silence_ids):
        """The alerts these silences mute and no other silence does: they notify once these end.

        An alert that another silence also mutes (a standing one, say) stays quiet after these
        silences end, so it is not theirs to wait for.
        """
        wanted = set(silence_ids)
        out = []
        for alert in self.alerts():
            by = set(alert.get("status", {}).get("silencedBy") or [])
            if by and by <= wanted:
                out.append(alert)
        return out

    def create(self, matchers, starts_at, ends_at, created_by, comment):
        body = {"matchers": matchers, "startsAt": starts_at, "endsAt": ends_at,
                "createdBy": created_by, "comment": comment}
        result = self._call("POST", "/silences", body) or {}
        return result.get("silenceID")

    def expire(self, silence_id):
        self._call("DELETE", "/silence/%s" % silence_id)
