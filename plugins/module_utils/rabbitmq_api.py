# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private HTTP client for the RabbitMQ management API, shared by warren's modules.

Built on ``ansible.module_utils.urls.open_url`` so it needs nothing beyond ansible-core on the
node. Everything that talks to the API goes through :class:`RabbitMQClient`:

* names are percent-encoded as whole path segments (vhost ``/`` is ``%2F``, ``team a/b`` is
  ``team%20a%2Fb``), see :func:`api_path`;
* HTTP statuses become messages a person can act on (:class:`RabbitMQAPIError`);
* transient failures (502/503/504, connection refused or reset, time-outs) are retried a
  bounded number of times, which covers a node that is restarting.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import html
import json
import os
import socket
import ssl
import time

from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

TRANSIENT_STATUSES = (502, 503, 504)


def api_argument_spec():
    """Return the connection options every warren API module accepts.

    A fresh dict each call, so modules may extend it safely.
    """
    return dict(
        url=dict(type='str'),
        host=dict(type='str'),
        port=dict(type='int'),
        scheme=dict(type='str', choices=['http', 'https']),
        login_user=dict(type='str', default='guest', aliases=['user', 'username']),
        login_password=dict(type='str', default='guest', no_log=True, aliases=['password']),
        ca_cert=dict(type='path', aliases=['cacert']),
        client_cert=dict(type='path'),
        client_key=dict(type='path', no_log=False),
        validate_certs=dict(type='bool', default=True),
        request_timeout=dict(type='int', default=30),
        api_retries=dict(type='int', default=5),
        api_retry_delay=dict(type='float', default=2.0),
    )


API_MUTUALLY_EXCLUSIVE = [('url', 'host'), ('url', 'port'), ('url', 'scheme')]
API_REQUIRED_TOGETHER = [('client_cert', 'client_key')]


# Options that count seconds or attempts: never negative (request_timeout: above zero).
NON_NEGATIVE = ('api_retries', 'api_retry_delay', 'timeout', 'delay')
POSITIVE = ('request_timeout',)
TLS_FILES = ('ca_cert', 'client_cert', 'client_key')


def check_params(params):
    """Problems with the connection options that need no server, as one message, or None.

    Negative timeouts, delays or retry counts, and TLS files that are missing or unreadable
    (named, so a typo is not reported as "cannot reach" after retries).
    """
    problems = []
    for name in NON_NEGATIVE:
        if params.get(name) is not None and params[name] < 0:
            problems.append('%s must be zero or more, got %s' % (name, params[name]))
    for name in POSITIVE:
        if params.get(name) is not None and params[name] <= 0:
            problems.append('%s must be more than zero seconds, got %s' % (name, params[name]))
    for name in TLS_FILES:
        path = params.get(name)
        if not path:
            continue
        if not os.path.exists(path):
            problems.append("%s file '%s' does not exist (on the host that runs the module)" % (name, path))
        elif not os.path.isfile(path):
            problems.append("%s '%s' is not a file" % (name, path))
        elif not os.access(path, os.R_OK):
            problems.append("%s file '%s' is not readable by this user" % (name, path))
    return '; '.join(problems) or None


def api_module(argument_spec, mutually_exclusive=None, **kwargs):
    """An AnsibleModule with the shared connection options added; check mode is always supported.

    The options are checked at once (see :func:`check_params`): the module fails before any
    request when they cannot work.
    """
    spec = api_argument_spec()
    spec.update(argument_spec)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=API_MUTUALLY_EXCLUSIVE + list(mutually_exclusive or []),
                           required_together=API_REQUIRED_TOGETHER, **kwargs)
    problem = check_params(module.params)
    if problem:
        module.fail_json(msg=problem, changed=False)
    return module


def run_module(module, run, *handled):
    """Call ``run(module, client)`` and exit with its result; API errors (and ``handled``) fail the task."""
    try:
        result = run(module, RabbitMQClient(module.params))
    except RabbitMQAPIError as e:
        module.fail_json(msg=str(e), status=e.status, changed=False)
    except handled as e:
        extra = dict(getattr(e, 'result', None) or {})  # fields an error adds to the result
        extra.setdefault('changed', False)
        module.fail_json(msg=str(e), **extra)
    module.exit_json(**result)


def api_path(*segments, **query):
    """Build ``/api/<seg>/<seg>...`` with every segment percent-encoded as a whole.

    ``api_path('queues', 'team a/b', 'q one')`` gives ``/api/queues/team%20a%2Fb/q%20one``.
    Keyword arguments become a query string (values are encoded too).
    """
    path = '/api/' + '/'.join(quote(str(s), safe='') for s in segments)
    if query:
        path += '?' + '&'.join(
            '%s=%s' % (quote(str(k), safe=''), quote(str(v), safe=','))
            for k, v in sorted(query.items()))
    return path


def base_url(params):
    """The management API's base URL from ``url`` or ``scheme``/``host``/``port``."""
    url = params.get('url')
    if url:
        url = url.rstrip('/')
        if url.endswith('/api'):
            url = url[:-4]
        return url
    scheme = params.get('scheme') or 'http'
    host = params.get('host') or 'localhost'
    port = params.get('port') or (15671 if scheme == 'https' else 15672)
    if ':' in host and not host.startswith('['):
        host = '[%s]' % host  # IPv6 literal
    return '%s://%s:%s' % (scheme, host, port)


class RabbitMQAPIError(Exception):
    """An API call failed; ``str()`` is the message to show the user."""

    def __init__(self, msg, status=None, reason=None, method=None, path=None, transient=False, body=None):
        super(RabbitMQAPIError, self).__init__(msg)
        self.msg = msg
        self.status = status
        self.reason = reason
        self.method = method
        self.path = path
        self.transient = transient
        self.body = body


def _reason_from_body(raw):
    """RabbitMQ answers errors with ``{"error": ..., "reason": ...}``; the reason is HTML-escaped."""
    if not raw:
        return ''
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.strip()[:500]
    if isinstance(doc, dict):
        reason = doc.get('reason') or doc.get('error') or ''
        if not isinstance(reason, str):
            reason = json.dumps(reason, sort_keys=True)
        return html.unescape(reason).strip()
    return str(doc)[:500]


def _to_text(raw):
    if isinstance(raw, bytes):
        return raw.decode('utf-8', 'replace')
    return raw or ''


class RabbitMQClient:
    """Talks to one management API endpoint.

    ``params`` is the module's ``params`` dict (see :func:`api_argument_spec`). ``sleep`` is
    injectable so tests do not wait.
    """

    def __init__(self, params, sleep=None):
        self.params = params
        self.base = base_url(params)
        self.user = params.get('login_user')
        self.retries = max(0, int(params.get('api_retries') if params.get('api_retries') is not None else 5))
        self.retry_delay = float(params.get('api_retry_delay') if params.get('api_retry_delay') is not None else 2.0)
        self.sleep = sleep or time.sleep
        self.calls = []  # (method, path) of every request sent, for debugging and tests
        self.authenticated = False  # set once any request succeeded: later 401s are about permissions

    # -- low level -------------------------------------------------------------------------

    def _open(self, method, path, body):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode('utf-8')
            headers['Content-Type'] = 'application/json'
        return open_url(
            self.base + path,
            data=data,
            headers=headers,
            method=method,
            url_username=self.user,
            url_password=self.params.get('login_password'),
            force_basic_auth=True,
            validate_certs=self.params.get('validate_certs', True),
            ca_path=self.params.get('ca_cert'),
            client_cert=self.params.get('client_cert'),
            client_key=self.params.get('client_key'),
            timeout=self.params.get('request_timeout') or 30,
            follow_redirects='none',
        )

    def _error(self, method, path, status, raw, vhost=None):
        reason = _reason_from_body(raw)
        where = '%s %s%s' % (method, self.base, path)
        if status == 401 and self.authenticated:
            msg = ("user '%s' is not authorised for %s: the credentials work, so the user lacks permissions%s "
                   "(RabbitMQ says: %s)" % (self.user, where, " in vhost '%s'" % vhost if vhost is not None else
                                            ' (a permission in the vhost, or a management tag)', reason))
        elif status == 401:
            msg = ("authentication failed for user '%s' at %s: wrong user name or password, or the user "
                   "has no management tag (RabbitMQ says: %s)" % (self.user, self.base, reason or 'not authorised'))
        elif status == 403:
            msg = ("user '%s' is not allowed to %s: it needs the administrator tag (policymaker for policies "
                   "and parameters) and permissions on the vhost (RabbitMQ says: %s)" % (self.user, where, reason))
        elif status == 404 and vhost is not None and not self.vhost_exists(vhost):
            msg = "vhost '%s' does not exist (HTTP 404 on %s)" % (vhost, where)
        elif status == 404 and vhost is not None:
            msg = ("not found: %s - vhost '%s' exists, so the object this path names (or one it refers to, "
                   "such as a binding's exchange or queue) does not" % (where, vhost))
        elif status == 404:
            msg = 'not found: %s' % where
        elif status == 400:
            msg = 'RabbitMQ rejected %s: %s' % (where, reason)
        elif status == 405:
            msg = ('method not allowed on %s: this RabbitMQ version does not offer that endpoint/method (%s)'
                   % (where, reason))
        elif status in TRANSIENT_STATUSES:
            msg = 'RabbitMQ is unavailable (HTTP %s) on %s: %s' % (status, where, reason)
        else:
            msg = 'HTTP %s on %s: %s' % (status, where, reason)
        return RabbitMQAPIError(msg, status=status, reason=reason, method=method, path=path,
                                transient=status in TRANSIENT_STATUSES, body=raw)

    def request(self, method, path, body=None, missing_ok=False, vhost=None, answer_statuses=(), retries=None):
        """Send one request, retrying transient failures; return ``(status, parsed JSON or None)``.

        * ``missing_ok``: a 404 returns ``(404, None)`` instead of raising.
        * ``vhost``: the vhost the path is about, so a 404 can say the vhost does not exist.
        * ``answer_statuses``: error statuses that carry a meaningful JSON answer (the health
          checks answer 503 when a check fails); they are returned, not raised or retried.
        """
        attempts = 1 + (self.retries if retries is None else max(0, retries))
        last = None
        for attempt in range(attempts):
            if attempt:
                self.sleep(self.retry_delay)
            self.calls.append((method, path))
            try:
                resp = self._open(method, path, body)
                status = resp.getcode() if hasattr(resp, 'getcode') else getattr(resp, 'status', 200)
                raw = _to_text(resp.read())
            except HTTPError as e:
                status = e.code
                if status != 401:
                    self.authenticated = True
                try:
                    raw = _to_text(e.read())
                except Exception:  # pylint: disable=broad-except
                    raw = ''
                if status == 404 and missing_ok:
                    return 404, None
                if status in answer_statuses:
                    return status, _parse(raw)
                last = self._error(method, path, status, raw, vhost=vhost)
                if last.transient:
                    continue
                raise last
            except (URLError, socket.timeout, socket.error, HTTPException, UrlsConnectionError) as e:
                detail = getattr(e, 'reason', None) or e
                if self.base.startswith('http://') and _looks_like_tls(e, detail):
                    raise RabbitMQAPIError(
                        'the management API at %s answered with TLS, not plain HTTP: this port expects https. '
                        'Use an https:// url (or scheme=https) and ca_cert' % self.base, method=method, path=path)
                if isinstance(detail, ssl.SSLError) or isinstance(e, (ssl.SSLError, UrlsConnectionError)):
                    raise RabbitMQAPIError(
                        'TLS connection to the RabbitMQ management API at %s failed: %s (check ca_cert, '
                        'client_cert/client_key and that the certificate names this host)' % (self.base, detail),
                        method=method, path=path)
                last = RabbitMQAPIError(
                    'cannot reach the RabbitMQ management API at %s (%s %s): %s'
                    % (self.base, method, path, detail),
                    method=method, path=path, transient=True)
                continue
            self.authenticated = True
            return status, _parse(raw)
        last.msg = '%s (gave up after %d attempt%s)' % (last.msg, attempts, '' if attempts == 1 else 's')
        last.args = (last.msg,)
        raise last

    # -- conveniences ----------------------------------------------------------------------

    def get(self, path, missing_ok=False, vhost=None):
        return self.request('GET', path, missing_ok=missing_ok, vhost=vhost)[1]

    def put(self, path, body, vhost=None):
        return self.request('PUT', path, body=body, vhost=vhost)[1]

    def post(self, path, body, vhost=None):
        return self.request('POST', path, body=body, vhost=vhost)[1]

    def delete(self, path, missing_ok=True, vhost=None):
        """Delete; returns False when the object was already gone."""
        return self.request('DELETE', path, missing_ok=missing_ok, vhost=vhost)[0] != 404

    def vhost_exists(self, name):
        return self.get(api_path('vhosts', name), missing_ok=True) is not None


def _looks_like_tls(error, detail):
    """A TLS listener answers plain HTTP with a TLS alert record (bytes 0x15 0x03 ...)."""
    text = '%s %r' % (detail, getattr(error, 'line', ''))
    return '\x15\x03' in text or '\\x15\\x03' in text


def _parse(raw):
    if not raw or not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw
