"""warren.rabbitmq.firewall_rules / firewall_allows / firewall_families.

What each host opens, for whom, with ports read from the roles that own them; and the SSH
lockout guard. Also renders the role's nftables template and, when nft is installed, checks it
with `nft -c` (the role's own validate step).
"""

import os
import shutil
import subprocess

import jinja2
import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.warren.rabbitmq.plugins.filter import firewall

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

SETTINGS = {
    "ssh_port": 22,
    "ssh_sources": ["10.9.0.0/24"],
    "client_sources": ["10.20.0.0/16"],
    "client_groups": ["loadgen", "monitoring", "rabbitmq", "rabbitmq_standby"],
    "admin_sources": ["10.9.0.0/24"],
    "admin_groups": ["monitoring", "backup_runner", "rabbitmq"],
    "monitoring_groups": ["monitoring"],
    "broker_groups": ["rabbitmq", "rabbitmq_standby"],
}

ADDR = {"rmq1": "10.0.0.1", "rmq2": "10.0.0.2", "rmq3": "10.0.0.3", "mon1": "10.0.0.10",
        "load1": "10.0.0.20", "dr1": "10.0.1.1"}


def lab(extra=None):
    groups = {"rabbitmq": ["rmq1", "rmq2", "rmq3"], "monitoring": ["mon1"], "loadgen": ["load1"],
              "backup_runner": ["mon1"], "rabbitmq_standby": ["dr1"]}
    hostvars = {}
    for h, a in ADDR.items():
        hostvars[h] = {"inventory_hostname": h, "inventory_hostname_short": h,
                       "ansible_facts": {"default_ipv4": {"address": a}}}
    hostvars["dr1"]["rabbitmq_cluster_name"] = "warren-dr"
    for h, hv in (extra or {}).items():
        hostvars[h].update(hv)
    return groups, hostvars


def rules(host, groups, hostvars, settings=None):
    return {r["name"]: r for r in firewall.firewall_rules(host, groups, hostvars, settings or SETTINGS)}


def by_prefix(found, prefix):
    return next(r for n, r in found.items() if n.startswith(prefix))


def test_broker_distribution_only_from_its_own_cluster():
    groups, hostvars = lab()
    found = rules("rmq1", groups, hostvars)
    dist = by_prefix(found, "epmd")
    assert dist["ports"] == [4369, 25672, "35672-35682"]
    assert sorted(dist["sources"]) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    # the standby is another cluster: it is an AMQP client (federation), never a peer
    assert "10.0.1.1" not in dist["sources"]
    assert "10.0.1.1" in found["AMQP clients"]["sources"]


def test_broker_ports_follow_the_rabbitmq_role():
    groups, hostvars = lab({h: {"rabbitmq_tls_enabled": True, "rabbitmq_amqp_enabled": False}
                            for h in ("rmq1", "rmq2", "rmq3")})
    found = rules("rmq2", groups, hostvars)
    assert found["AMQP clients"]["ports"] == [5671]
    assert found["management API and UI"]["ports"] == [15671]
    assert found["RabbitMQ metrics"]["ports"] == [15691]
    assert found["RabbitMQ metrics"]["sources"] == ["10.0.0.10"]
    # a moved AMQP port moves the distribution port with it (RabbitMQ: AMQP port + 20000)
    groups, hostvars = lab({"rmq2": {"rabbitmq_amqp_port": 5700}})
    assert by_prefix(rules("rmq2", groups, hostvars), "epmd")["ports"] == [4369, 25700, "35700-35710"]


def test_plaintext_amqp_only_where_enabled():
    groups, hostvars = lab({"rmq1": {"rabbitmq_tls_enabled": True, "rabbitmq_amqp_enabled": True}})
    assert rules("rmq1", groups, hostvars)["AMQP clients"]["ports"] == [5671, 5672]


def test_clients_and_admins():
    groups, hostvars = lab()
    found = rules("rmq1", groups, hostvars)
    assert found["AMQP clients"]["sources"][0] == "10.20.0.0/16"
    assert "10.0.0.20" in found["AMQP clients"]["sources"]          # load generator
    assert "10.0.0.20" not in found["management API and UI"]["sources"]
    assert "10.0.0.10" in found["management API and UI"]["sources"]  # monitoring + backup runner
    assert "10.20.0.0/16" not in found["management API and UI"]["sources"]
    assert found["ssh"]["sources"] == ["10.9.0.0/24"]


def test_monitoring_host():
    groups, hostvars = lab({"mon1": {"grafana_enabled": False, "webhook_receiver_enabled": True}})
    found = rules("mon1", groups, hostvars)
    ui = found["Prometheus, Alertmanager and Grafana"]
    assert ui["ports"] == [9090, 9093]                       # no Grafana port when it is off
    assert ui["sources"] == ["10.9.0.0/24", "10.0.0.10"]
    assert found["monitoring hosts among themselves"]["ports"] == [9094, 9491, 9099]
    assert found["Alertmanager cluster gossip"]["proto"] == "udp"
    assert found["Alertmanager cluster gossip"]["ports"] == [9094]
    assert "AMQP clients" not in found
    groups, hostvars = lab({"mon1": {"grafana_enabled": True, "prometheus_port": 9190}})
    assert rules("mon1", groups, hostvars)["Prometheus, Alertmanager and Grafana"]["ports"] == [9190, 9093, 3000]


def test_load_host_only_ssh_and_node_exporter():
    groups, hostvars = lab()
    assert sorted(rules("load1", groups, hostvars)) == ["node_exporter metrics", "ssh"]


def test_explicit_address_wins_and_missing_facts_say_what_to_do():
    groups, hostvars = lab({"mon1": {"firewall_address": ["192.0.2.5", "2001:db8::5"]}})
    assert rules("rmq1", groups, hostvars)["RabbitMQ metrics"]["sources"] == ["192.0.2.5", "2001:db8::5"]
    groups, hostvars = lab()
    hostvars["rmq3"]["ansible_facts"] = {}
    with pytest.raises(AnsibleFilterError, match="no address known for rmq3.*--limit"):
        firewall.firewall_rules("rmq1", groups, hostvars, SETTINGS)


def test_bad_source_is_refused_with_its_setting_name():
    groups, hostvars = lab()
    with pytest.raises(AnsibleFilterError, match="firewall_client_sources.*not an IP address"):
        firewall.firewall_rules("rmq1", groups, hostvars, dict(SETTINGS, client_sources=["app-servers"]))


def test_allows():
    assert firewall.firewall_allows("10.9.0.7", ["10.9.0.0/24"])
    assert not firewall.firewall_allows("10.8.0.7", ["10.9.0.0/24", "2001:db8::/32"])
    assert firewall.firewall_allows("2001:db8::7", ["10.9.0.0/24", "2001:db8::/32"])
    assert firewall.firewall_allows("10.1.1.1", ["0.0.0.0/0"])
    assert not firewall.firewall_allows("", ["0.0.0.0/0"])


def test_families():
    assert firewall.split_families(["10.0.0.0/8", "10.1.2.3/32", "::/0", "2001:db8::1"]) == {
        "ipv4": ["10.0.0.0/8", "10.1.2.3"], "ipv6": ["::/0", "2001:db8::1"]}


def render(host, groups, hostvars, **variables):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROOT, "roles", "firewall", "templates")),
                             trim_blocks=True, lstrip_blocks=False)
    env.filters["comment"] = lambda text: "# " + text
    env.filters["bool"] = bool
    env.filters["warren.rabbitmq.firewall_families"] = firewall.split_families
    values = {"ansible_managed": "Ansible managed", "inventory_hostname": host, "firewall_extra_rules": [],
              "firewall_log_dropped": True, "firewall_log_rate": "10/minute",
              "__firewall_rules": firewall.firewall_rules(host, groups, hostvars, SETTINGS)}
    values.update(variables)
    return env.get_template("warren-firewall.nft.j2").render(values)


def test_template_renders_one_accept_per_family_and_ends_in_drop():
    groups, hostvars = lab({"mon1": {"firewall_address": ["10.0.0.10", "2001:db8::10"]}})
    text = render("rmq1", groups, hostvars, firewall_extra_rules=["udp dport 68 accept"])
    assert "policy drop;" in text
    assert "ip saddr { 10.0.0.1, 10.0.0.2, 10.0.0.3 } tcp dport { 4369, 25672, 35672-35682 } accept" in text
    assert "ip6 saddr { 2001:db8::10 } tcp dport { 15671 } accept" in text  # IPv6 rules of their own
    assert "ip6 saddr { 2001:db8::10 } tcp dport { 15691 } accept" in text
    assert text.index("udp dport 68 accept") < text.index('log prefix "warren-firewall drop: "')


@pytest.mark.skipif(not shutil.which("nft"), reason="nft is not installed on this machine")
def test_template_passes_nft_check(tmp_path):
    groups, hostvars = lab()
    path = tmp_path / "rules.nft"
    path.write_text(render("rmq1", groups, hostvars))
    result = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
