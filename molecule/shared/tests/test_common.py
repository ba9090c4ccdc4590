"""Checks that hold on every broker node, in every scenario."""

import json

import pika
import pytest
from conftest import testinfra_hosts  # noqa: F401  (tells testinfra which hosts to run on)


def test_service_running_and_enabled(host):
    service = host.service("rabbitmq-server")
    assert service.is_running
    assert service.is_enabled


def test_cookie_is_private(host):
    cookie = host.file("/var/lib/rabbitmq/.erlang.cookie")
    assert cookie.user == "rabbitmq"
    assert cookie.mode == 0o400
    assert len(cookie.content_string.strip()) >= 20


@pytest.mark.parametrize(
    "key, expected",
    [
        ("default_queue_type", "{ok,rabbit_quorum_queue}"),
        ("cluster_partition_handling", "{ok,autoheal}"),
        ("vm_memory_high_watermark", "{ok,0.4}"),
        ("disk_free_limit", '{ok,"1GB"}'),
        ("consumer_timeout", "{ok,900000}"),
        ("collect_statistics_interval", "{ok,10000}"),
        ("quorum_membership_reconciliation_enabled", "{ok,true}"),
        ("quorum_membership_reconciliation_target_group_size", "{ok,3}"),
    ],
)
def test_running_config_holds_chosen_settings(host, key, expected):
    out = host.check_output(f"rabbitmqctl -q eval 'application:get_env(rabbit, {key}).'")
    assert out.strip() == expected


def test_listeners(host):
    listeners = json.loads(host.check_output("rabbitmq-diagnostics -q listeners --formatter json"))["listeners"]
    ports = {(item["protocol"], item["port"]) for item in listeners}
    for expected in [("amqp/ssl", 5671), ("http", 15672), ("https", 15671),
                     ("http/prometheus", 15692), ("https/prometheus", 15691), ("clustering", 25672)]:
        assert expected in ports, f"missing listener {expected}; have {sorted(ports)}"
    # TLS is on: no plaintext AMQP (rabbitmq_amqp_enabled defaults to off with TLS)
    assert not [p for p in ports if p[0] == "amqp"], f"plaintext AMQP listening; have {sorted(ports)}"


def test_plain_metrics_are_loopback_only(host):
    listeners = json.loads(host.check_output("rabbitmq-diagnostics -q listeners --formatter json"))["listeners"]
    plain = [item for item in listeners if item["protocol"] == "http/prometheus"]
    assert plain and all(item["interface"] == "127.0.0.1" for item in plain), plain


def test_management_plain_http_is_loopback_only(host):
    listeners = json.loads(host.check_output("rabbitmq-diagnostics -q listeners --formatter json"))["listeners"]
    http = [item for item in listeners if item["protocol"] == "http"]
    assert http and all(item["interface"] == "127.0.0.1" for item in http)


def test_open_file_limit_applied(host):
    pid = host.check_output("systemctl show -p MainPID --value rabbitmq-server")
    limits = host.file(f"/proc/{pid}/limits").content_string
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3] == "16384"


def test_no_repository_file_from_a_check_mode_run(host):
    # The distro install never adds Team RabbitMQ's repositories; the default scenario's
    # check-mode run of the rabbitmq_repo path must not have written them either.
    assert not host.file("/etc/apt/sources.list.d/warren-rabbitmq-server.sources").exists
    assert not host.file("/etc/apt/preferences.d/warren-rabbitmq").exists


def test_plugins_enabled(host):
    enabled = host.file("/etc/rabbitmq/enabled_plugins").content_string
    assert "rabbitmq_management" in enabled and "rabbitmq_prometheus" in enabled


def test_guest_cannot_log_in_over_http(host):
    code = host.check_output(
        "curl -s -o /dev/null -w '%{http_code}' -u guest:guest http://127.0.0.1:15672/api/whoami"
    )
    assert code == "401"


def test_guest_cannot_log_in_over_amqp(nodes, amqps):
    for node in nodes:
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            amqps(node, pika.PlainCredentials("guest", "guest"), vhost="/")


def test_app_user_can_connect_over_amqps_with_verified_certificate(nodes, amqps, app_credentials):
    for node in nodes:
        connection = amqps(node, app_credentials)
        assert connection.is_open
        connection.close()
