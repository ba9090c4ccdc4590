"""An in-memory stand-in for the RabbitMQ 4.0 management API, for unit tests.

``FakeRabbit.open_url`` replaces ``ansible.module_utils.urls.open_url`` inside the client module
(``rabbitmq_api.open_url``), so the real client code runs - URL encoding, status mapping,
retries - against a fake server. The behaviours copied here were checked on RabbitMQ 4.0.5:
percent-encoded path segments, 201/204 answers, 400 ``inequivalent arg`` on queue re-declares,
a vhost created through the API granting its creator full permissions, vhost limits and
operator policies exported as parameters, health checks answering 503 when they fail.
"""

import copy
import io
import json
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urlsplit

import pytest

from ansible_collections.warren.rabbitmq.plugins.module_utils import rabbitmq_api
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_values import make_password_hash

BASE = 'http://rmq.test:15672'


class _Response:
    def __init__(self, status, body):
        self.status = status
        self._raw = b'' if body is None else json.dumps(body).encode()

    def getcode(self):
        return self.status

    def read(self):
        return self._raw


class _Error(Exception):
    def __init__(self, status, error, reason=''):
        super().__init__(reason)
        self.status, self.body = status, {'error': error, 'reason': reason}


def _not_found():
    return _Error(404, 'Object Not Found', 'Not Found')


class FakeRabbit:
    def __init__(self):
        self.logins = {'admin': 'secret'}
        self.vhosts = {'/': {'name': '/', 'description': 'Default virtual host', 'tags': [],
                             'default_queue_type': 'classic'}}
        self.vhost_limits = {}
        self.users = {}
        self.permissions = {}
        self.topic_permissions = {}
        self.parameters = {}
        self.global_parameters = {
            'cluster_tags': {'name': 'cluster_tags', 'value': []},
            'internal_cluster_id': {'name': 'internal_cluster_id', 'value': 'rabbitmq-cluster-id-test'},
        }
        self.policies = {}
        self.operator_policies = {}
        self.exchanges = {}
        self.queues = {}
        self.bindings = []
        self.nodes = [{'name': 'rabbit@rmq1', 'running': True, 'partitions': [], 'mem_alarm': False,
                       'disk_free_alarm': False, 'being_drained': False, 'uptime': 1000}]
        self.alarms = []
        self.quorum_critical = []
        self.feature_flags = {
            'quorum_queue': {'name': 'quorum_queue', 'state': 'enabled', 'stability': 'required'},
            'detailed_queues_endpoint': {'name': 'detailed_queues_endpoint', 'state': 'disabled',
                                         'stability': 'stable'},
            'message_containers_deaths_v2': {'name': 'message_containers_deaths_v2', 'state': 'disabled',
                                             'stability': 'stable'},
            'khepri_db': {'name': 'khepri_db', 'state': 'disabled', 'stability': 'experimental'},
        }
        self.add_user('admin', 'secret', ['administrator'])
        self.permissions[('/', 'admin')] = {'user': 'admin', 'vhost': '/', 'configure': '.*', 'write': '.*',
                                            'read': '.*'}
        self.calls = []       # (method, path as sent - still percent-encoded, body) of every request
        self.failures = []    # queued (status or 'refused') answers for the next requests
        self.write_failures = {}  # {n: status}: the n-th write (non-GET request) from now fails
        self.write_count = 0
        self.acting_user = None

    # -- helpers for tests ---------------------------------------------------------------------

    def add_user(self, name, password, tags=(), algorithm='rabbit_password_hashing_sha256'):
        self.users[name] = {'name': name, 'password_hash': make_password_hash(password, algorithm) if password else '',
                            'hashing_algorithm': algorithm, 'tags': list(tags), 'limits': {}}

    def add_queue(self, vhost, name, arguments=None, qtype=None, leader='rabbit@rmq1', members=None, online=None):
        args = dict(arguments or {})
        args.setdefault('x-queue-type', qtype or self.vhosts[vhost].get('default_queue_type') or 'classic')
        members = members if members is not None else ['rabbit@rmq1']
        self.queues[(vhost, name)] = {'name': name, 'vhost': vhost, 'durable': True, 'auto_delete': False,
                                      'arguments': args, 'type': args['x-queue-type'], 'leader': leader,
                                      'members': members, 'online': online if online is not None else members}

    def fail_write(self, n, status=500, reason='injected failure'):
        """Make the n-th write (counted from now, 1-based) fail with ``status``."""
        self.write_failures[self.write_count + n] = (status, reason)

    def writes(self):
        """The requests that change something, as (method, encoded path) pairs."""
        return [(m, p) for m, p, _ in self.calls if m != 'GET']

    # -- transport -----------------------------------------------------------------------------

    def open_url(self, url, data=None, headers=None, method=None, url_username=None, url_password=None, **kw):
        parts = urlsplit(url)
        assert url.startswith(BASE), url
        body = json.loads(data) if data else None
        self.calls.append((method, parts.path, body))
        if self.failures:
            failure = self.failures.pop(0)
            if failure == 'refused':
                raise URLError(ConnectionRefusedError(111, 'Connection refused'))
            raise HTTPError(url, failure, 'error', {}, io.BytesIO(
                json.dumps({'error': 'unavailable', 'reason': 'node is booting'}).encode()))
        if method != 'GET':
            self.write_count += 1
            if self.write_count in self.write_failures:
                status, reason = self.write_failures.pop(self.write_count)
                raise HTTPError(url, status, 'error', {}, io.BytesIO(
                    json.dumps({'error': 'injected', 'reason': reason}).encode()))
        if self.logins.get(url_username) != url_password:
            raise HTTPError(url, 401, 'Unauthorized', {}, io.BytesIO(
                b'{"error":"not_authorized","reason":"Not_Authorized"}'))
        self.acting_user = url_username
        segments = [unquote(s) for s in parts.path.split('/')[2:]]
        try:
            status, answer = self.route(method, segments, body)
        except _Error as e:
            raise HTTPError(url, e.status, 'error', {}, io.BytesIO(json.dumps(e.body).encode()))
        return _Response(status, answer)

    def route(self, method, seg, body):
        head = seg[0]
        handler = getattr(self, 'r_' + head.replace('-', '_'), None)
        if handler is None:
            raise _not_found()
        return handler(method, seg[1:], body)

    # -- resources -----------------------------------------------------------------------------

    def _need_vhost(self, vhost):
        if vhost not in self.vhosts:
            raise _not_found()

    def r_overview(self, method, seg, body):
        return 200, {'cluster_name': 'rabbit@rmq1', 'rabbitmq_version': '4.0.5', 'product_version': '4.0.5',
                     'erlang_version': '27.3.4.1'}

    def r_whoami(self, method, seg, body):
        return 200, {'name': self.acting_user}

    def r_vhosts(self, method, seg, body):
        name = seg[0]
        if method == 'GET':
            if name not in self.vhosts:
                raise _not_found()
            return 200, self.vhosts[name]
        if method == 'PUT':
            existing = self.vhosts.get(name)
            tags = body.get('tags', existing['tags'] if existing else [])
            if isinstance(tags, str):
                tags = [t for t in tags.split(',') if t]
            self.vhosts[name] = {
                'name': name,
                'description': body.get('description', existing['description'] if existing else ''),
                'tags': tags,
                'default_queue_type': body.get('default_queue_type',
                                               existing['default_queue_type'] if existing else 'classic'),
            }
            if existing is None:
                self.permissions[(name, self.acting_user)] = {
                    'user': self.acting_user, 'vhost': name, 'configure': '.*', 'write': '.*', 'read': '.*'}
                return 201, None
            return 204, None
        if method == 'DELETE':
            self._need_vhost(name)
            del self.vhosts[name]
            self.vhost_limits.pop(name, None)
            for table in (self.permissions, self.topic_permissions, self.policies, self.operator_policies,
                          self.exchanges, self.queues):
                for key in [k for k in table if k[0] == name]:
                    del table[key]
            self.parameters = dict((k, v) for k, v in self.parameters.items() if k[1] != name)
            self.bindings = [b for b in self.bindings if b['vhost'] != name]
            return 204, None
        raise _Error(405, 'method_not_allowed')

    def r_vhost_limits(self, method, seg, body):
        if method == 'GET':
            return 200, [{'vhost': v, 'value': lim} for v, lim in self.vhost_limits.items() if lim]
        vhost, name = seg
        self._need_vhost(vhost)
        if method == 'PUT':
            assert isinstance(body['value'], int)
            self.vhost_limits.setdefault(vhost, {})[name] = body['value']
        else:
            self.vhost_limits.get(vhost, {}).pop(name, None)
        return 204, None

    def r_user_limits(self, method, seg, body):
        user, name = seg
        if user not in self.users:
            raise _not_found()
        if method == 'PUT':
            self.users[user]['limits'][name] = body['value']
        else:
            self.users[user]['limits'].pop(name, None)
        return 204, None

    def r_users(self, method, seg, body):
        name = seg[0]
        if method == 'GET':
            if name not in self.users:
                raise _not_found()
            return 200, self.users[name]
        if method == 'PUT':
            existing = name in self.users
            tags = body.get('tags', '')
            tags = [t for t in tags.split(',') if t] if isinstance(tags, str) else list(tags)
            algo = body.get('hashing_algorithm', 'rabbit_password_hashing_sha256')
            if 'password' in body:
                pw_hash = make_password_hash(body['password'], algo)
            else:
                pw_hash = body.get('password_hash', '')
            limits = self.users[name]['limits'] if existing else {}
            self.users[name] = {'name': name, 'password_hash': pw_hash, 'hashing_algorithm': algo, 'tags': tags,
                                'limits': limits}
            if 'password' in body:
                self.logins[name] = body['password']
            return (204 if existing else 201), None
        if name not in self.users:
            raise _not_found()
        del self.users[name]
        for table in (self.permissions, self.topic_permissions):
            for key in [k for k in table if k[1] == name]:
                del table[key]
        return 204, None

    def r_permissions(self, method, seg, body):
        vhost, user = seg
        key = (vhost, user)
        if method == 'GET':
            if key not in self.permissions:
                raise _not_found()
            return 200, self.permissions[key]
        if method == 'PUT':
            if vhost not in self.vhosts or user not in self.users:
                raise _Error(400, 'bad_request', 'vhost_or_user_not_found')
            self.permissions[key] = dict(body, user=user, vhost=vhost)
            return 201, None
        if key not in self.permissions:
            raise _not_found()
        del self.permissions[key]
        return 204, None

    def r_topic_permissions(self, method, seg, body):
        vhost, user = seg
        if method == 'PUT':
            if vhost not in self.vhosts or user not in self.users:
                raise _Error(400, 'bad_request', 'vhost_or_user_not_found')
            self.topic_permissions[(vhost, user, body['exchange'])] = dict(body, user=user, vhost=vhost)
            return 201, None
        if method == 'DELETE':  # deletes all of the user's topic permissions in the vhost, as 4.0.5 does
            keys = [k for k in self.topic_permissions if k[:2] == (vhost, user)]
            if not keys:
                raise _not_found()
            for k in keys:
                del self.topic_permissions[k]
            return 204, None
        return 200, [v for k, v in self.topic_permissions.items() if k[:2] == (vhost, user)]

    def r_parameters(self, method, seg, body):
        component, vhost, name = seg
        key = (component, vhost, name)
        if method == 'PUT':
            self._need_vhost(vhost)
            self.parameters[key] = {'vhost': vhost, 'component': component, 'name': name, 'value': body['value']}
            return 201, None
        if key not in self.parameters:
            raise _not_found()
        if method == 'DELETE':
            del self.parameters[key]
            return 204, None
        return 200, self.parameters[key]

    def r_global_parameters(self, method, seg, body):
        name = seg[0]
        if method == 'PUT':
            self.global_parameters[name] = {'name': name, 'value': body['value']}
            return 201, None
        if name not in self.global_parameters:
            raise _not_found()
        if method == 'DELETE':
            del self.global_parameters[name]
            return 204, None
        return 200, self.global_parameters[name]

    def _policies(self, table, method, seg, body):
        vhost, name = seg
        key = (vhost, name)
        if method == 'GET':
            self._need_vhost(vhost)
            if key not in table:
                raise _not_found()
            return 200, dict(table[key], vhost=vhost, name=name)
        if method == 'PUT':
            self._need_vhost(vhost)
            if not isinstance(body.get('priority', 0), int):
                raise _Error(400, 'bad_request', 'Validation failed\n\npriority should be a number, actually was '
                                                 '&lt;&lt;"%s"&gt;&gt;\n' % body['priority'])
            for k, v in body['definition'].items():
                if k.startswith('max-length') and not isinstance(v, int):
                    raise _Error(400, 'bad_request', 'Validation failed\n\n&lt;&lt;"%s"&gt;&gt; is not a valid '
                                                     'maximum length\n' % v)
            existed = key in table
            table[key] = {'pattern': body['pattern'], 'apply-to': body.get('apply-to', 'all'),
                          'definition': body['definition'], 'priority': body.get('priority', 0)}
            return (204 if existed else 201), None
        if key not in table:
            raise _not_found()
        del table[key]
        return 204, None

    def r_policies(self, method, seg, body):
        return self._policies(self.policies, method, seg, body)

    def r_operator_policies(self, method, seg, body):
        return self._policies(self.operator_policies, method, seg, body)

    def r_exchanges(self, method, seg, body):
        vhost, name = seg
        key = (vhost, name)
        self._need_vhost(vhost)
        if method == 'PUT':
            new = {'name': name, 'vhost': vhost, 'type': body['type'], 'durable': body.get('durable', True),
                   'auto_delete': body.get('auto_delete', False), 'internal': body.get('internal', False),
                   'arguments': body.get('arguments', {})}
            if key in self.exchanges and self.exchanges[key] != new:
                raise _Error(400, 'bad_request', "inequivalent arg 'type' for exchange '%s'" % name)
            self.exchanges[key] = new
            return 201, None
        if key not in self.exchanges:
            raise _not_found()
        if method == 'DELETE':
            del self.exchanges[key]
            self.bindings = [b for b in self.bindings if not (b['vhost'] == vhost and b['source'] == name)]
            return 204, None
        return 200, self.exchanges[key]

    def r_queues(self, method, seg, body):
        if not seg:
            return 200, [dict((k, q[k]) for k in ('name', 'vhost', 'type', 'leader', 'members', 'online'))
                         for q in self.queues.values()]
        vhost, name = seg
        key = (vhost, name)
        self._need_vhost(vhost)
        if method == 'PUT':
            args = dict(body.get('arguments') or {})
            args.setdefault('x-queue-type', self.vhosts[vhost]['default_queue_type'])
            if key in self.queues:
                current = self.queues[key]['arguments']
                for arg in sorted(set(args) | set(current)):
                    if args.get(arg) != current.get(arg):
                        raise _Error(400, 'bad_request', "inequivalent arg '%s' for queue '%s' in vhost '%s'"
                                     % (arg, name, vhost))
                return 204, None
            self.add_queue(vhost, name, args)
            self.queues[key].update(durable=body.get('durable', True), auto_delete=body.get('auto_delete', False))
            return 201, None
        if key not in self.queues:
            raise _not_found()
        if method == 'DELETE':
            del self.queues[key]
            return 204, None
        return 200, self.queues[key]

    def r_bindings(self, method, seg, body):
        vhost, _e, source, dkind, dest = seg[:5]
        self._need_vhost(vhost)
        dtype = 'queue' if dkind == 'q' else 'exchange'
        mine = [b for b in self.bindings
                if (b['vhost'], b['source'], b['destination_type'], b['destination']) == (vhost, source, dtype, dest)]
        if method == 'POST':
            # RabbitMQ answers 404 when the source exchange or the destination does not exist
            if not (source.startswith('amq.') or (vhost, source) in self.exchanges):
                raise _not_found()
            if (vhost, dest) not in (self.queues if dtype == 'queue' else self.exchanges):
                raise _not_found()
            b = {'vhost': vhost, 'source': source, 'destination': dest, 'destination_type': dtype,
                 'routing_key': body.get('routing_key', ''), 'arguments': body.get('arguments', {})}
            if b not in self.bindings:
                self.bindings.append(b)
            return 201, None
        if method == 'DELETE':
            props = seg[5]
            for b in mine:
                if self._props_key(b) == props:
                    self.bindings.remove(b)
                    return 204, None
            raise _not_found()
        return 200, [dict(b, properties_key=self._props_key(b)) for b in mine]

    @staticmethod
    def _props_key(b):
        key = quote(b['routing_key'], safe='') or '~'
        if b['arguments']:
            key += '~' + str(abs(hash(json.dumps(b['arguments'], sort_keys=True))) % 10000)
        return key

    def r_nodes(self, method, seg, body):
        return 200, self.nodes

    def r_health(self, method, seg, body):
        check = seg[1]
        if check == 'alarms':
            if self.alarms:
                raise _HealthFailed({'status': 'failed', 'reason': 'There are alarms in effect in the cluster',
                                     'alarms': self.alarms})
            return 200, {'status': 'ok'}
        if check == 'node-is-quorum-critical':
            if self.quorum_critical:
                raise _HealthFailed({'status': 'failed', 'reason': 'critical', 'queues': self.quorum_critical})
            return 200, {'status': 'ok'}
        raise _not_found()

    def r_feature_flags(self, method, seg, body):
        if method == 'GET':
            return 200, list(self.feature_flags.values())
        name = seg[0]
        if name not in self.feature_flags:
            raise _Error(400, 'bad_request', 'unsupported')
        self.feature_flags[name]['state'] = 'enabled'
        return 204, None

    # -- definitions ---------------------------------------------------------------------------

    def r_definitions(self, method, seg, body):
        if method == 'POST':
            self.import_definitions(body)
            return 204, None
        params = [dict(v) for v in self.parameters.values()]
        params += [{'vhost': v, 'component': 'vhost-limits', 'name': 'limits', 'value': dict(lim)}
                   for v, lim in self.vhost_limits.items() if lim]
        params += [{'vhost': k[0], 'component': 'operator_policy', 'name': k[1], 'value': dict(p)}
                   for k, p in self.operator_policies.items()]
        doc = {
            'rabbit_version': '4.0.5', 'rabbitmq_version': '4.0.5', 'product_name': 'RabbitMQ',
            'product_version': '4.0.5', 'rabbitmq_definition_format': 'cluster',
            'original_cluster_name': 'rabbit@rmq1', 'explanation': "Definitions of cluster 'rabbit@rmq1'",
            'users': list(self.users.values()),
            'vhosts': [dict(v, metadata={'description': v['description'], 'tags': v['tags'],
                                         'default_queue_type': v['default_queue_type']})
                       for v in self.vhosts.values()],
            'permissions': list(self.permissions.values()),
            'topic_permissions': list(self.topic_permissions.values()),
            'parameters': params,
            'global_parameters': list(self.global_parameters.values()),
            'policies': [dict(p, vhost=k[0], name=k[1]) for k, p in self.policies.items()],
            'queues': [dict((f, q[f]) for f in ('name', 'vhost', 'durable', 'auto_delete', 'arguments'))
                       for q in self.queues.values()],
            'exchanges': list(self.exchanges.values()),
            'bindings': list(self.bindings),
        }
        # RabbitMQ's list order follows its tables, not names: reverse to prove the module sorts.
        for key, value in doc.items():
            if isinstance(value, list):
                doc[key] = list(reversed(copy.deepcopy(value)))
        return 200, doc

    def import_definitions(self, doc):
        for v in doc.get('vhosts') or []:
            meta = v.get('metadata') or {}
            existed = v['name'] in self.vhosts
            self.vhosts[v['name']] = {'name': v['name'], 'description': meta.get('description', ''),
                                      'tags': list(meta.get('tags') or []),
                                      'default_queue_type': meta.get('default_queue_type', 'classic')}
            if not existed:
                self.permissions[(v['name'], self.acting_user)] = {
                    'user': self.acting_user, 'vhost': v['name'], 'configure': '.*', 'write': '.*', 'read': '.*'}
        for u in doc.get('users') or []:
            assert 'password' not in u, 'POST /api/definitions only understands password_hash'
            self.users[u['name']] = {'name': u['name'], 'password_hash': u['password_hash'],
                                     'hashing_algorithm': u['hashing_algorithm'], 'tags': list(u['tags']),
                                     'limits': dict(u.get('limits') or {})}
        for p in doc.get('permissions') or []:
            self.permissions[(p['vhost'], p['user'])] = dict(p)
        for p in doc.get('topic_permissions') or []:
            self.topic_permissions[(p['vhost'], p['user'], p['exchange'])] = dict(p)
        for p in doc.get('parameters') or []:
            if p['component'] == 'vhost-limits':
                self.vhost_limits[p['vhost']] = dict(p['value'])
            elif p['component'] == 'operator_policy':
                self.operator_policies[(p['vhost'], p['name'])] = dict(p['value'])
            else:
                self.parameters[(p['component'], p['vhost'], p['name'])] = dict(p)
        for p in doc.get('global_parameters') or []:
            self.global_parameters[p['name']] = dict(p)
        for p in doc.get('policies') or []:
            self.policies[(p['vhost'], p['name'])] = dict((k, p[k]) for k in ('pattern', 'apply-to', 'definition',
                                                                                'priority'))
        for e in doc.get('exchanges') or []:
            self.exchanges[(e['vhost'], e['name'])] = dict(e)
        for q in doc.get('queues') or []:
            self.add_queue(q['vhost'], q['name'], q.get('arguments'))
        for b in doc.get('bindings') or []:
            if b not in self.bindings:
                self.bindings.append(dict(b))


class _HealthFailed(_Error):
    def __init__(self, body):
        Exception.__init__(self, body['reason'])
        self.status, self.body = 503, body


@pytest.fixture
def rabbit(monkeypatch):
    """A fresh fake cluster wired into the client; the client's retry delay is zeroed."""
    fake = FakeRabbit()
    monkeypatch.setattr(rabbitmq_api, 'open_url', fake.open_url)
    monkeypatch.setattr(rabbitmq_api.time, 'sleep', lambda s: None)
    return fake


API = {'url': BASE, 'login_user': 'admin', 'login_password': 'secret', 'api_retry_delay': 0}
