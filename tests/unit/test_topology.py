"""warren.rabbitmq.brokers / clusters: the cluster's topology from the inventory.

The defaults must come from roles/rabbitmq/defaults/main.yml and nowhere else, per-host
inventory variables override them, and templated values come out rendered.
"""

import os
import shutil
import textwrap

import pytest
import yaml

from ansible.errors import AnsibleFilterError
from ansible_collections.warren.rabbitmq.plugins.filter import topology

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULTS = os.path.join(ROOT, "roles", "rabbitmq", "defaults", "main.yml")


def inventory(hosts_by_group, host_vars=None, group_vars=None):
    """A plain groups/hostvars pair, as a filter receives them in a play."""
    host_vars = host_vars or {}
    group_vars = group_vars or {}
    groups = {"all": []}
    hostvars = {}
    for group, hosts in hosts_by_group.items():
        groups[group] = list(hosts)
        for h in hosts:
            if h not in groups["all"]:
                groups["all"].append(h)
            hv = hostvars.setdefault(h, {"inventory_hostname": h, "inventory_hostname_short": h.split(".")[0]})
            hv.update(group_vars.get(group, {}))
    for h, hv in host_vars.items():
        hostvars[h].update(hv)
    return groups, hostvars


def by_host(brokers):
    return {b["inventory_hostname"]: b for b in brokers}


@pytest.fixture
def defaults_copy(tmp_path, monkeypatch):
    """A private copy of the rabbitmq role defaults that a test may edit."""
    path = tmp_path / "defaults.yml"
    shutil.copy(DEFAULTS, path)
    monkeypatch.setattr(topology, "DEFAULTS_FILE", str(path))

    def edit(**changes):
        data = yaml.safe_load(path.read_text())
        data.update(changes)
        mtime = os.stat(path).st_mtime
        path.write_text(yaml.safe_dump(data))
        os.utime(path, (mtime + 1, mtime + 1))  # a new version of the file, even within a second
    return edit


def test_three_node_defaults_match_the_role_defaults():
    groups, hostvars = inventory({"rabbitmq": ["rmq1", "rmq2", "rmq3"]})
    brokers = topology.brokers(groups, hostvars)
    defaults = yaml.safe_load(open(DEFAULTS))
    assert [b["inventory_hostname"] for b in brokers] == ["rmq1", "rmq2", "rmq3"]
    b = brokers[0]
    # TLS is on by default, so clients, the UI and Prometheus use the TLS ports.
    assert b["tls"] is defaults["rabbitmq_tls_enabled"] is True
    assert b["node"] == "rabbit@rmq1"
    assert b["node_host"] == "rmq1"
    assert b["address"] == "rmq1"
    assert b["cluster"] == defaults["rabbitmq_cluster_name"]
    assert b["amqp_port"] == defaults["rabbitmq_amqp_port"]
    assert b["amqps_port"] == defaults["rabbitmq_amqps_port"]
    assert b["client_port"] == defaults["rabbitmq_amqps_port"]
    assert b["client_endpoint"] == "rmq1:%d" % defaults["rabbitmq_amqps_port"]
    assert b["management_scheme"] == "https"
    assert b["management_port"] == defaults["rabbitmq_management_tls_port"]
    assert b["management_url"] == "https://rmq1:%d" % defaults["rabbitmq_management_tls_port"]
    assert b["management_local_url"] == "http://127.0.0.1:%d" % defaults["rabbitmq_management_port"]
    assert b["prometheus_scheme"] == "https"
    assert b["prometheus_port"] == defaults["rabbitmq_prometheus_tls_port"]
    assert b["prometheus_target"] == "rmq1:%d" % defaults["rabbitmq_prometheus_tls_port"]
    assert b["ca_src"] == ""  # TLS on, but no CA given and none created
    assert b["group"] == "rabbitmq"


def test_changed_port_default_reaches_every_consumer(defaults_copy):
    groups, hostvars = inventory({"rabbitmq": ["rmq1", "rmq2", "rmq3"]})
    defaults_copy(rabbitmq_prometheus_tls_port=25691, rabbitmq_amqps_port=6671, rabbitmq_management_tls_port=25671)
    brokers = topology.brokers(groups, hostvars)
    assert {b["prometheus_port"] for b in brokers} == {25691}
    assert {b["client_port"] for b in brokers} == {6671}
    assert {b["management_port"] for b in brokers} == {25671}
    assert brokers[2]["prometheus_target"] == "rmq3:25691"


def test_changed_tls_default_switches_to_plain_ports(defaults_copy):
    groups, hostvars = inventory({"rabbitmq": ["rmq1"]})
    defaults_copy(rabbitmq_tls_enabled=False, rabbitmq_amqp_port=5999)
    b = topology.brokers(groups, hostvars)[0]
    assert b["tls"] is False
    assert b["client_port"] == 5999


def test_five_node_inventory_in_inventory_order():
    hosts = ["mq-e", "mq-a", "mq-d", "mq-b", "mq-c"]
    groups, hostvars = inventory({"rabbitmq": hosts}, group_vars={"rabbitmq": {"rabbitmq_cluster_name": "five"}})
    brokers = topology.brokers(groups, hostvars)
    assert [b["inventory_hostname"] for b in brokers] == hosts
    assert [b["node"] for b in brokers] == ["rabbit@" + h for h in hosts]
    (cluster,) = topology.clusters(brokers)
    assert cluster["name"] == "five"
    assert cluster["size"] == 5
    assert cluster["nodes"] == ["rabbit@" + h for h in hosts]


def test_tls_off():
    groups, hostvars = inventory(
        {"rabbitmq": ["rmq1", "rmq2", "rmq3"]},
        group_vars={"rabbitmq": {"rabbitmq_tls_enabled": False, "rabbitmq_tls_ca_src": "/pki/ca.pem"}})
    for b in topology.brokers(groups, hostvars):
        assert b["tls"] is False
        assert b["client_port"] == b["amqp_port"] == 5672
        assert b["management_scheme"] == b["prometheus_scheme"] == "http"
        assert b["management_port"] == 15672
        assert b["prometheus_port"] == 15692
        assert b["ca_src"] == ""  # no TLS, no CA to trust
    assert topology.clusters(topology.brokers(groups, hostvars))[0]["tls"] is False


def test_tls_bool_given_as_string():
    groups, hostvars = inventory({"rabbitmq": ["rmq1"]}, host_vars={"rmq1": {"rabbitmq_tls_enabled": "false"}})
    assert topology.brokers(groups, hostvars)[0]["tls"] is False


def test_two_clusters_in_two_groups():
    groups, hostvars = inventory(
        {"mq_eu": ["eu1", "eu2", "eu3"], "mq_us": ["us1", "us2", "us3"]},
        group_vars={
            "mq_eu": {"rabbitmq_cluster_name": "eu", "rabbitmq_tls_ca_src": "/pki/eu-ca.pem"},
            "mq_us": {"rabbitmq_cluster_name": "us", "rabbitmq_tls_enabled": False},
        })
    eu = topology.brokers(groups, hostvars, "mq_eu")
    assert [b["cluster"] for b in eu] == ["eu"] * 3
    assert {b["group"] for b in eu} == {"mq_eu"}
    both = topology.brokers(groups, hostvars, ["mq_eu", "mq_us"])
    assert [b["inventory_hostname"] for b in both] == ["eu1", "eu2", "eu3", "us1", "us2", "us3"]
    clusters = topology.clusters(both)
    assert [c["name"] for c in clusters] == ["eu", "us"]
    assert [c["size"] for c in clusters] == [3, 3]
    assert clusters[0]["tls"] is True and clusters[0]["ca_src"] == "/pki/eu-ca.pem"
    assert clusters[1]["tls"] is False and clusters[1]["ca_src"] == ""
    assert {b["client_port"] for b in clusters[1]["brokers"]} == {5672}


def test_two_clusters_in_one_group_and_a_host_in_two_groups():
    groups, hostvars = inventory(
        {"rabbitmq": ["a1", "a2", "b1"], "extra": ["b1", "b2"]},
        host_vars={h: {"rabbitmq_cluster_name": h[0]} for h in ["a1", "a2", "b1", "b2"]})
    brokers = topology.brokers(groups, hostvars, ["rabbitmq", "extra"])
    assert [b["inventory_hostname"] for b in brokers] == ["a1", "a2", "b1", "b2"]  # b1 once
    assert by_host(brokers)["b1"]["group"] == "rabbitmq"
    assert {c["name"]: c["nodes"] for c in topology.clusters(brokers)} == {
        "a": ["rabbit@a1", "rabbit@a2"], "b": ["rabbit@b1", "rabbit@b2"]}


def test_per_host_overrides():
    groups, hostvars = inventory(
        {"rabbitmq": ["rmq1.example.net", "rmq2.example.net", "rmq3.example.net"]},
        group_vars={"rabbitmq": {"rabbitmq_cluster_name": "prod", "rabbitmq_tls_ca_src": "/pki/ca.pem"}},
        host_vars={"rmq2.example.net": {
            "rabbitmq_node_host": "mq-b",
            "rabbitmq_address": "10.0.0.12",
            "rabbitmq_amqps_port": 5771,
            "rabbitmq_prometheus_tls_port": "15791",  # strings from the inventory are fine
            "rabbitmq_management_plain_enabled": False,
        }})
    b = by_host(topology.brokers(groups, hostvars))
    one, two = b["rmq1.example.net"], b["rmq2.example.net"]
    # the default node host is the short inventory name
    assert one["node"] == "rabbit@rmq1"
    assert one["address"] == "rmq1.example.net"
    assert one["client_port"] == 5671
    assert two["node"] == "rabbit@mq-b"
    assert two["address"] == "10.0.0.12"
    assert two["client_endpoint"] == "10.0.0.12:5771"
    assert two["prometheus_port"] == 15791
    assert two["prometheus_target"] == "10.0.0.12:15791"
    assert two["management_local_url"] == "https://localhost:15671"
    assert two["ca_src"] == one["ca_src"] == "/pki/ca.pem"


def test_ipv6_address_is_bracketed():
    groups, hostvars = inventory({"rabbitmq": ["rmq1"]}, host_vars={"rmq1": {"rabbitmq_address": "fd00::5"}})
    b = topology.brokers(groups, hostvars)[0]
    assert b["client_endpoint"] == "[fd00::5]:5671"
    assert b["management_url"] == "https://[fd00::5]:15671"


def test_lab_ca_path_from_ca_dir():
    groups, hostvars = inventory(
        {"rabbitmq": ["rmq1"]},
        group_vars={"rabbitmq": {"rabbitmq_tls_ca_create": True, "rabbitmq_tls_ca_dir": "/srv/lab/ca",
                                 "rabbitmq_tls_ca_src": "/ignored.pem"}})
    assert topology.brokers(groups, hostvars)[0]["ca_src"] == "/srv/lab/ca/ca.pem"


def test_templated_values_in_a_plain_dict():
    groups, hostvars = inventory(
        {"rabbitmq": ["rmq1"]},
        group_vars={"rabbitmq": {
            "state_dir": "/srv/state",
            "rabbitmq_tls_ca_create": True,
            "rabbitmq_tls_ca_dir": "{{ state_dir }}/ca",
            "rabbitmq_cluster_name": "{{ 'warren' ~ '-lab' }}",
        }})
    b = topology.brokers(groups, hostvars)[0]
    assert b["ca_src"] == "/srv/state/ca/ca.pem"
    assert b["cluster"] == "warren-lab"


def test_templated_values_from_a_real_inventory(tmp_path):
    """Ansible's own HostVars, loaded from YAML files as in a play (the lab's layout)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.hostvars import HostVars
    from ansible.vars.manager import VariableManager

    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(textwrap.dedent("""\
        all:
          children:
            rabbitmq:
              hosts:
                rmq1.lab.example:
                rmq2.lab.example:
                  rabbitmq_prometheus_tls_port: "{{ 15000 + 691 + 100 }}"
                rmq3.lab.example:
        """))
    (inv / "group_vars" / "all.yml").write_text('lab_state: "{{ inventory_dir }}/state"\n')
    (inv / "group_vars" / "rabbitmq.yml").write_text(textwrap.dedent("""\
        rabbitmq_cluster_name: lab
        rabbitmq_tls_ca_create: true
        rabbitmq_tls_ca_dir: "{{ lab_state }}/ca"
        """))
    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(inv / "hosts.yml")])
    variables = VariableManager(loader=loader, inventory=manager)
    hostvars = HostVars(inventory=manager, variable_manager=variables, loader=loader)
    # The groups and HostVars objects a play hands to the filter (the collection loader is not
    # set up under pytest, so the filter is called directly rather than through a template).
    brokers = topology.brokers(manager.get_groups_dict(), hostvars)
    assert [b["node"] for b in brokers] == ["rabbit@rmq1", "rabbit@rmq2", "rabbit@rmq3"]
    assert {b["ca_src"] for b in brokers} == {"%s/state/ca/ca.pem" % inv}
    assert [b["prometheus_port"] for b in brokers] == [15691, 15791, 15691]
    assert brokers[0]["address"] == "rmq1.lab.example"
    assert brokers[0]["cluster"] == "lab"


def test_missing_group_gives_no_brokers():
    groups, hostvars = inventory({"rabbitmq": ["rmq1"]})
    assert topology.brokers(groups, hostvars, "nope") == []
    assert topology.clusters([]) == []


def test_bad_values_fail_with_the_variable_name():
    groups, hostvars = inventory({"rabbitmq": ["rmq1"]}, host_vars={"rmq1": {"rabbitmq_amqps_port": "five"}})
    with pytest.raises(AnsibleFilterError, match="rabbitmq_amqps_port of rmq1"):
        topology.brokers(groups, hostvars)
    with pytest.raises(AnsibleFilterError, match="group must be"):
        topology.brokers(groups, hostvars, 5)


OTHER_ROLES = sorted(r for r in os.listdir(os.path.join(ROOT, "roles")) if r != "rabbitmq")


@pytest.mark.parametrize("role", OTHER_ROLES)
def test_no_other_role_restates_a_rabbitmq_default(role):
    """Roles reach broker facts through the filter: no rabbitmq_* fallback outside the role."""
    import re
    pattern = re.compile(r"\brabbitmq_[a-z_]+\s*\|\s*default\(|default\((1569|567)")
    offenders = []
    for dirpath, _dirs, files in os.walk(os.path.join(ROOT, "roles", role)):
        for name in files:
            if name.endswith((".yml", ".j2")):
                path = os.path.join(dirpath, name)
                for lineno, line in enumerate(open(path, encoding="utf-8"), 1):
                    if pattern.search(line):
                        offenders.append("%s:%d: %s" % (os.path.relpath(path, ROOT), lineno, line.strip()))
    assert offenders == []


def test_host_var_falls_back_to_the_owning_roles_default():
    groups, hostvars = inventory({"monitoring": ["mon1", "mon2"]},
                                 host_vars={"mon2": {"node_exporter_port": 9200, "prometheus_port": "{{ 9000 + 91 }}"}})
    node_exporter = yaml.safe_load(open(os.path.join(ROOT, "roles", "node_exporter", "defaults", "main.yml")))
    prometheus = yaml.safe_load(open(os.path.join(ROOT, "roles", "prometheus", "defaults", "main.yml")))
    assert topology.host_var("mon1", hostvars, "node_exporter_port") == node_exporter["node_exporter_port"]
    assert topology.host_var("mon2", hostvars, "node_exporter_port") == 9200
    assert topology.host_var("mon1", hostvars, "prometheus_scrape_interval") == prometheus["prometheus_scrape_interval"]
    assert topology.host_var("mon2", hostvars, "prometheus_port") == 9091
    # node_exporter_* belongs to node_exporter even though another role could share a prefix
    assert topology.role_of("node_exporter_port") == "node_exporter"
    assert topology.role_of("rabbitmq_amqp_port") == "rabbitmq"


def test_host_var_of_an_unknown_variable_fails_clearly():
    groups, hostvars = inventory({"monitoring": ["mon1"]})
    with pytest.raises(AnsibleFilterError, match="belongs to none of the roles"):
        topology.host_var("mon1", hostvars, "nosuchrole_port")
    with pytest.raises(AnsibleFilterError, match="prometheus_nosuch is neither set for mon1 nor a role default"):
        topology.host_var("mon1", hostvars, "prometheus_nosuch")


def test_rabbitmq_role_checks_the_same_variables_the_filter_reads():
    """The role's preflight compares exactly these with the inventory (roles/rabbitmq/vars/main.yml)."""
    role_vars = yaml.safe_load(open(os.path.join(ROOT, "roles", "rabbitmq", "vars", "main.yml")))
    assert tuple(role_vars["__rabbitmq_topology_vars"]) == topology.TOPOLOGY_VARS
    defaults = yaml.safe_load(open(DEFAULTS))
    assert set(topology.TOPOLOGY_VARS) <= set(defaults)
