"""The shared management API client and value helpers."""

import ssl
from urllib.error import URLError

import pytest
from fake_rabbit import API, rabbit  # noqa: F401  (fixture)

from ansible_collections.warren.rabbitmq.plugins.module_utils import rabbitmq_api
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_api import (
    RabbitMQAPIError,
    RabbitMQClient,
    api_path,
    base_url,
)
from ansible_collections.warren.rabbitmq.plugins.module_utils.rabbitmq_values import (
    canonical_json,
    check_password,
    make_password_hash,
    normalise_mapping,
    normalise_policy,
    scalar,
    tags_list,
)


def client(**extra):
    params = dict(API, api_retries=2)
    params.update(extra)
    return RabbitMQClient(params, sleep=lambda s: None)


@pytest.mark.parametrize('segments,expected', [
    (('vhosts', '/'), '/api/vhosts/%2F'),
    (('vhosts', 'team a/b'), '/api/vhosts/team%20a%2Fb'),
    (('queues', 'team a/b', 'q one'), '/api/queues/team%20a%2Fb/q%20one'),
    (('policies', '/', 'a%b?c#d'), '/api/policies/%2F/a%25b%3Fc%23d'),
    (('users', 'zoë'), '/api/users/zo%C3%AB'),
])
def test_api_path_encodes_each_segment_whole(segments, expected):
    assert api_path(*segments) == expected


def test_api_path_query_string():
    assert api_path('queues', columns='name,vhost', disable_stats='true') == \
        '/api/queues?columns=name,vhost&disable_stats=true'


@pytest.mark.parametrize('params,expected', [
    ({'url': 'https://rmq1:15671/api/'}, 'https://rmq1:15671'),
    ({'url': 'http://rmq1:15672'}, 'http://rmq1:15672'),
    ({}, 'http://localhost:15672'),
    ({'scheme': 'https', 'host': 'rmq2'}, 'https://rmq2:15671'),
    ({'host': 'fd00::1', 'port': 8080}, 'http://[fd00::1]:8080'),
])
def test_base_url(params, expected):
    assert base_url(params) == expected


def test_wrong_credentials_message(rabbit):
    with pytest.raises(RabbitMQAPIError) as exc:
        client(login_password='wrong').get(api_path('overview'))
    assert exc.value.status == 401
    assert 'authentication failed' in str(exc.value) and 'wrong user name or password' in str(exc.value)


def test_401_after_successful_login_talks_about_permissions(rabbit, monkeypatch):
    c = client()
    c.get(api_path('overview'))
    rabbit.failures.append(401)
    with pytest.raises(RabbitMQAPIError) as exc:
        c.put(api_path('queues', 'team a/b', 'q'), {}, vhost='team a/b')
    assert "lacks permissions in vhost 'team a/b'" in str(exc.value)


def test_404_on_a_vhost_says_the_vhost_does_not_exist(rabbit):
    with pytest.raises(RabbitMQAPIError) as exc:
        client().put(api_path('policies', 'nope', 'p'), {'pattern': '.*', 'definition': {}}, vhost='nope')
    assert "vhost 'nope' does not exist" in str(exc.value)


def test_404_missing_ok_returns_none(rabbit):
    assert client().get(api_path('users', 'nobody'), missing_ok=True) is None


def test_400_reason_is_passed_through_unescaped(rabbit):
    with pytest.raises(RabbitMQAPIError) as exc:
        client().put(api_path('policies', '/', 'p'), {'pattern': '.*', 'definition': {'max-length': 'x'}})
    assert exc.value.status == 400
    assert '<<"x">> is not a valid maximum length' in str(exc.value)
    assert '&lt;' not in str(exc.value)


def test_transient_503_and_refused_are_retried(rabbit):
    rabbit.failures.extend([503, 'refused'])
    c = client()
    assert c.get(api_path('overview'))['cluster_name'] == 'rabbit@rmq1'
    assert len(rabbit.calls) == 3


def test_retries_are_bounded(rabbit):
    rabbit.failures.extend(['refused'] * 5)
    with pytest.raises(RabbitMQAPIError) as exc:
        client(api_retries=2).get(api_path('overview'))
    assert 'gave up after 3 attempts' in str(exc.value)
    assert exc.value.transient
    assert len(rabbit.calls) == 3


def test_400_is_not_retried(rabbit):
    with pytest.raises(RabbitMQAPIError):
        client().put(api_path('policies', '/', 'p'), {'pattern': '.*', 'definition': {'max-length': 'x'}})
    assert len(rabbit.calls) == 1


def test_health_503_is_an_answer_not_an_error(rabbit):
    rabbit.alarms = [{'node': 'rabbit@rmq1', 'resource': 'disk space'}]
    status, body = client().request('GET', api_path('health', 'checks', 'alarms'), answer_statuses=(503,))
    assert status == 503 and body['alarms'][0]['resource'] == 'disk space'
    assert len(rabbit.calls) == 1


def test_tls_errors_are_not_retried_and_mention_ca_cert(monkeypatch):
    calls = []

    def broken(url, **kw):
        calls.append(url)
        raise URLError(ssl.SSLCertVerificationError('certificate verify failed'))
    monkeypatch.setattr(rabbitmq_api, 'open_url', broken)
    with pytest.raises(RabbitMQAPIError) as exc:
        client().get(api_path('overview'))
    assert 'ca_cert' in str(exc.value) and len(calls) == 1


def test_tls_and_auth_options_reach_open_url(monkeypatch):
    seen = {}

    class Resp:
        def getcode(self):
            return 200

        def read(self):
            return b'{}'

    def capture(url, **kw):
        seen.update(kw, url=url)
        return Resp()
    monkeypatch.setattr(rabbitmq_api, 'open_url', capture)
    client(ca_cert='/ca.pem', client_cert='/c.pem', client_key='/k.pem', validate_certs=True,
           request_timeout=7).put(api_path('vhosts', 'a b'), {'x': 1})
    assert seen['url'] == 'http://rmq.test:15672/api/vhosts/a%20b'
    assert seen['ca_path'] == '/ca.pem' and seen['client_cert'] == '/c.pem' and seen['client_key'] == '/k.pem'
    assert seen['timeout'] == 7 and seen['force_basic_auth'] is True and seen['method'] == 'PUT'
    assert seen['headers']['Content-Type'] == 'application/json' and seen['data'] == b'{"x": 1}'


# -- values ------------------------------------------------------------------------------------

def test_scalar():
    assert scalar('10') == 10 and scalar(' -3 ') == -3 and scalar('1.5') == 1.5
    assert scalar('true') is True and scalar('False') is False
    assert scalar('1D') == '1D' and scalar(5) == 5


def test_normalise_mapping_keeps_string_keys_strings():
    out = normalise_mapping({'max-length': '10', 'dead-letter-routing-key': 123, 'x-dead-letter-routing-key': '7',
                             'overflow': 'reject-publish', 'max-age': '1D', 'x-max-priority': '5',
                             'x-single-active-consumer': 'true', 'ha-params': ['2']})
    assert out == {'max-length': 10, 'dead-letter-routing-key': '123', 'x-dead-letter-routing-key': '7',
                   'overflow': 'reject-publish', 'max-age': '1D', 'x-max-priority': 5,
                   'x-single-active-consumer': True, 'ha-params': [2]}


def test_normalise_policy_ignores_types_and_order():
    a = normalise_policy({'pattern': '^a', 'apply-to': 'queues', 'priority': '3',
                          'definition': {'max-length': '10', 'overflow': 'drop-head'}})
    b = normalise_policy({'pattern': '^a', 'apply_to': 'queues', 'priority': 3,
                          'definition': {'overflow': 'drop-head', 'max-length': 10}})
    assert a == b


def test_tags_list():
    assert tags_list('management, monitoring') == ['management', 'monitoring']
    assert tags_list(['b', 'a', 'a']) == ['a', 'b'] and tags_list(None) == [] and tags_list('') == []


# Hashes taken from a live RabbitMQ 4.0.5: the default guest user (sha256) and a user created with
# a sha512 password_hash that then authenticated.
LIVE_SHA256_GUEST = 'R57JjX348hUtSTKnrw5XAO+9E72wbGQTI9Gc/MJfMms7dyJE'
LIVE_SHA512_PW512 = 'AQIDBC7ycYuFch8KXPKvr7VeqRVbYxPSprRvfyRAwF7dUlG5QkPMvK8D/53FksiTH4ERz3rNdHcpAziWiUd4pn0fWTI='


def test_check_password_against_live_hashes():
    assert check_password('guest', LIVE_SHA256_GUEST, 'rabbit_password_hashing_sha256') is True
    assert check_password('guest2', LIVE_SHA256_GUEST, 'rabbit_password_hashing_sha256') is False
    assert check_password('pw512', LIVE_SHA512_PW512, 'rabbit_password_hashing_sha512') is True
    assert check_password('pw512', LIVE_SHA512_PW512, 'rabbit_password_hashing_sha256') is False


def test_check_password_edge_cases():
    assert check_password('x', '', 'rabbit_password_hashing_sha256') is False
    assert check_password('x', LIVE_SHA256_GUEST, 'some_other_algorithm') is None
    assert check_password('x', '!!!not base64', None) is None
    md5 = make_password_hash('old', 'rabbit_password_hashing_md5')
    assert check_password('old', md5, 'rabbit_password_hashing_md5') is True


def test_make_password_hash_round_trip_and_salt():
    h = make_password_hash('s3cret', salt=b'\x01\x02\x03\x04')
    assert h == make_password_hash('s3cret', salt=b'\x01\x02\x03\x04')
    assert check_password('s3cret', h) is True
    assert make_password_hash('s3cret') != make_password_hash('s3cret')  # random salt


def test_canonical_json_is_stable():
    assert canonical_json({'b': 1, 'a': [2, {'d': 1, 'c': 'é'}]}) == \
        '{\n  "a": [\n    2,\n    {\n      "c": "é",\n      "d": 1\n    }\n  ],\n  "b": 1\n}\n'
