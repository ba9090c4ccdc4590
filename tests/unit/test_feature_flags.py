"""warren.rabbitmq.feature_flags against the fake management API."""

from fake_rabbit import API, rabbit  # noqa: F401  (fixture)
from utils import run_fail, run_ok

from ansible_collections.warren.rabbitmq.plugins.modules import feature_flags


def test_enable_named_flag_then_no_change(rabbit):
    res = run_ok(feature_flags.main, dict(API, names=['detailed_queues_endpoint']))
    assert res['changed'] is True and res['enabled'] == ['detailed_queues_endpoint']
    assert rabbit.feature_flags['detailed_queues_endpoint']['state'] == 'enabled'
    assert ('PUT', '/api/feature-flags/detailed_queues_endpoint/enable') in rabbit.writes()
    rabbit.calls.clear()
    res = run_ok(feature_flags.main, dict(API, names=['detailed_queues_endpoint']))
    assert res['changed'] is False and res['enabled'] == [] and rabbit.writes() == []


def test_all_enables_stable_flags_only(rabbit):
    res = run_ok(feature_flags.main, dict(API, names=['all']))
    assert res['enabled'] == ['detailed_queues_endpoint', 'message_containers_deaths_v2']
    assert rabbit.feature_flags['khepri_db']['state'] == 'disabled'
    assert res['feature_flags']['message_containers_deaths_v2'] == 'enabled'


def test_check_mode_and_diff(rabbit):
    res = run_ok(feature_flags.main, dict(API, names=['all']), check_mode=True, diff=True)
    assert res['changed'] is True and rabbit.writes() == []
    assert res['diff']['before']['detailed_queues_endpoint'] == 'disabled'
    assert res['diff']['after']['detailed_queues_endpoint'] == 'enabled'
    assert rabbit.feature_flags['detailed_queues_endpoint']['state'] == 'disabled'


def test_unknown_flag_fails_before_anything_is_enabled(rabbit):
    res = run_fail(feature_flags.main, dict(API, names=['detailed_queues_endpoint', 'warp_drive']))
    assert "unknown feature flag 'warp_drive'" in res['msg'] and rabbit.writes() == []


def test_experimental_flag_needs_opt_in(rabbit):
    res = run_fail(feature_flags.main, dict(API, names=['khepri_db']))
    assert 'experimental' in res['msg'] and rabbit.writes() == []
    res = run_ok(feature_flags.main, dict(API, names=['khepri_db'], allow_experimental=True))
    assert res['enabled'] == ['khepri_db']


def test_empty_names(rabbit):
    res = run_fail(feature_flags.main, dict(API, names=[' ']))
    assert 'at least one flag' in res['msg']


def test_flag_that_does_not_enable_is_reported(rabbit, monkeypatch):
    monkeypatch.setattr(rabbit, 'r_feature_flags', _stuck(rabbit.r_feature_flags))
    res = run_fail(feature_flags.main, dict(API, names=['detailed_queues_endpoint']))
    assert 'did not enable: detailed_queues_endpoint' in res['msg']


def _stuck(real):
    def handler(method, seg, body):
        if method == 'PUT':
            return 204, None
        return real(method, seg, body)
    return handler
