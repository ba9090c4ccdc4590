"""The rabbitmq role's membership decisions (plugins/module_utils/cluster_plan.py), one case each.

States are what warren.rabbitmq.node_state returns: node, active, database, members, running,
queues. Three inventory hosts rmq1..3 unless a case says otherwise.
"""

import hashlib
import json

import pytest
from ansible.errors import AnsibleFilterError
from ansible.module_utils import basic
from utils import run_fail, run_ok

from ansible_collections.warren.rabbitmq.plugins.filter import cluster_plan as plan_filter
from ansible_collections.warren.rabbitmq.plugins.module_utils.cluster_plan import (
    needs_queue_count, plan_join, plan_start)
from ansible_collections.warren.rabbitmq.plugins.modules import node_state
from ansible_collections.warren.rabbitmq.plugins.modules.node_state import upstream_version

ALL3 = ["rabbit@rmq1", "rabbit@rmq2", "rabbit@rmq3"]


def node(host, active=True, database=True, members=None, running=None, queues=None):
    """A node_state result; a running node sees members/running (default: the whole cluster)."""
    if active and members is None:
        members = list(ALL3)
    if active and running is None:
        running = list(members)
    return {"node": "rabbit@" + host, "active": active, "database": database,
            "members": members if active else None, "running": running if active else None, "queues": queues}


def blank_stopped(host):
    return node(host, active=False, database=False)


def states(*nodes):
    return {n["node"].split("@")[1]: n for n in nodes}


# --- before start ---------------------------------------------------------------------------

def test_fresh_cluster_all_blank_nothing_to_forget_and_first_host_seeds():
    """All three new: nobody runs, so nobody to ask; they start together and discovery forms the cluster."""
    before = states(blank_stopped("rmq1"), blank_stopped("rmq2"), blank_stopped("rmq3"))
    assert plan_start(before) == {"anchor": None, "forget": [], "blank": ["rmq1", "rmq2", "rmq3"]}
    # after the start every node sees all three running: nothing to join
    after = states(node("rmq1"), node("rmq2"), node("rmq3"))
    assert plan_join(after) == {"seed": "rmq1", "seed_node": "rabbit@rmq1", "join": [], "refused": []}


def test_all_running_nothing_to_do():
    running = states(node("rmq1"), node("rmq2"), node("rmq3"))
    assert plan_start(running) == {"anchor": "rmq1", "forget": [], "blank": []}
    assert plan_join(running) == {"seed": "rmq1", "seed_node": "rabbit@rmq1", "join": [], "refused": []}


def test_wiped_node_is_forgotten_before_it_starts():
    """rmq2's database was deleted while it was stopped: the cluster still lists rabbit@rmq2."""
    before = states(node("rmq1", running=["rabbit@rmq1", "rabbit@rmq3"]), blank_stopped("rmq2"),
                    node("rmq3", running=["rabbit@rmq1", "rabbit@rmq3"]))
    assert plan_start(before) == {"anchor": "rmq1", "forget": ["rabbit@rmq2"], "blank": ["rmq2"]}


def test_wiped_node_is_forgotten_by_the_cluster_not_by_a_stray_first_host():
    """rmq1 runs alone outside the cluster and rmq3 was wiped: ask rmq2, which still lists rmq3.

    Both running nodes see one running member; rmq2 knows three members, rmq1 only itself.
    """
    before = states(node("rmq1", members=["rabbit@rmq1"]), node("rmq2", members=ALL3, running=["rabbit@rmq2"]),
                    blank_stopped("rmq3"))
    assert plan_start(before) == {"anchor": "rmq2", "forget": ["rabbit@rmq3"], "blank": ["rmq3"]}


def test_blank_node_the_cluster_never_knew_is_not_forgotten():
    """A new rmq3 (fresh VM) under a name the running cluster does not list: just start it."""
    two = ["rabbit@rmq1", "rabbit@rmq2"]
    before = states(node("rmq1", members=two), node("rmq2", members=two), blank_stopped("rmq3"))
    assert plan_start(before) == {"anchor": "rmq1", "forget": [], "blank": ["rmq3"]}
    # peer discovery joins it: afterwards all three see each other
    after = states(node("rmq1"), node("rmq2"), node("rmq3"))
    assert plan_join(after)["join"] == []


def test_scale_out_from_three_to_five():
    """rmq4 and rmq5 added to the inventory: new blank nodes, nothing forgotten, no reset, no join step."""
    five = ALL3 + ["rabbit@rmq4", "rabbit@rmq5"]
    before = states(node("rmq1"), node("rmq2"), node("rmq3"), blank_stopped("rmq4"), blank_stopped("rmq5"))
    assert plan_start(before) == {"anchor": "rmq1", "forget": [], "blank": ["rmq4", "rmq5"]}
    after = states(*(node(h, members=five) for h in ["rmq1", "rmq2", "rmq3", "rmq4", "rmq5"]))
    assert plan_join(after) == {"seed": "rmq1", "seed_node": "rabbit@rmq1", "join": [], "refused": []}


def test_scale_out_node_that_booted_alone_is_joined():
    """rmq4 started before discovery could reach the others: it formed a cluster of one, empty."""
    after = states(node("rmq1"), node("rmq2"), node("rmq3"),
                   node("rmq4", members=["rabbit@rmq4"], queues=0))
    result = plan_join(after)
    assert result["seed"] == "rmq1"
    assert result["join"] == [{"host": "rmq4", "node": "rabbit@rmq4", "forget": False, "queues": 0}]
    assert result["refused"] == []


# --- after start ------------------------------------------------------------------------------

def test_outside_node_without_data_is_reset_and_joined_after_the_seed_forgets_it():
    """rmq3 was wiped and started by hand: it runs alone, the others still list it (not running)."""
    cluster_view = {"members": ALL3, "running": ["rabbit@rmq1", "rabbit@rmq2"]}
    after = states(node("rmq1", **cluster_view), node("rmq2", **cluster_view),
                   node("rmq3", members=["rabbit@rmq3"], queues=0))
    result = plan_join(after)
    assert result["seed"] == "rmq1"
    assert result["join"] == [{"host": "rmq3", "node": "rabbit@rmq3", "forget": True, "queues": 0}]
    assert result["refused"] == []


def test_seed_is_the_largest_running_cluster_not_the_first_host():
    """rmq1 is the stray one: rmq2 and rmq3 see two running members, rmq1 only itself."""
    pair = {"members": ["rabbit@rmq2", "rabbit@rmq3"], "running": ["rabbit@rmq2", "rabbit@rmq3"]}
    after = states(node("rmq1", members=["rabbit@rmq1"], queues=0), node("rmq2", **pair), node("rmq3", **pair))
    result = plan_join(after)
    assert result["seed"] == "rmq2"
    assert [j["host"] for j in result["join"]] == ["rmq1"]
    assert result["join"][0]["forget"] is False


def test_node_with_data_is_refused():
    after = states(node("rmq1"), node("rmq2"), node("rmq3", members=["rabbit@rmq3"], queues=4))
    # rmq1 and rmq2 see all three listed but rmq3 not running with them
    after["rmq1"]["running"] = after["rmq2"]["running"] = ["rabbit@rmq1", "rabbit@rmq2"]
    result = plan_join(after)
    assert result["join"] == []
    assert result["refused"] == [{"host": "rmq3", "node": "rabbit@rmq3", "queues": 4}]


def test_node_with_data_is_reset_when_allowed():
    after = states(node("rmq1", running=["rabbit@rmq1", "rabbit@rmq2"]), node("rmq2", running=["rabbit@rmq1", "rabbit@rmq2"]),
                   node("rmq3", members=["rabbit@rmq3"], queues=4))
    result = plan_join(after, allow_reset_of_node_with_data=True)
    assert result["refused"] == []
    assert result["join"] == [{"host": "rmq3", "node": "rabbit@rmq3", "forget": True, "queues": 4}]


def test_outside_node_whose_queues_could_not_be_counted_is_refused():
    after = states(node("rmq1", running=["rabbit@rmq1", "rabbit@rmq2"]), node("rmq2", running=["rabbit@rmq1", "rabbit@rmq2"]),
                   node("rmq3", members=["rabbit@rmq3"], queues=None))
    assert plan_join(after)["refused"] == [{"host": "rmq3", "node": "rabbit@rmq3", "queues": None}]


def test_check_mode_nodes_that_were_not_started_neither_seed_nor_join():
    after = states(blank_stopped("rmq1"), node("rmq2", members=["rabbit@rmq2"], running=["rabbit@rmq2"], queues=0),
                   blank_stopped("rmq3"))
    assert plan_join(after) == {"seed": "rmq2", "seed_node": "rabbit@rmq2", "join": [], "refused": []}
    assert plan_join({}) == {"seed": None, "seed_node": None, "join": [], "refused": []}


def test_queues_are_counted_only_where_a_node_might_have_to_join():
    assert needs_queue_count(ALL3, ALL3) is False
    assert needs_queue_count(["rabbit@rmq3"], ALL3) is True
    assert needs_queue_count(ALL3, ALL3 + ["rabbit@rmq4"]) is True
    assert needs_queue_count(None, ALL3) is False  # not running: nothing to ask


# --- the filters and the module's helpers -------------------------------------------------------

def test_filters_read_the_registered_states_in_host_order():
    hostvars = {h: {"st": node(h)} for h in ["rmq1", "rmq2", "rmq3"]}
    hostvars["rmq2"]["st"] = blank_stopped("rmq2")
    hostvars["rmq1"]["st"]["running"] = ["rabbit@rmq1", "rabbit@rmq3"]
    assert plan_filter.cluster_start_plan(["rmq1", "rmq2", "rmq3"], hostvars, "st")["forget"] == ["rabbit@rmq2"]
    assert plan_filter.cluster_join_plan(["rmq3", "rmq1"], hostvars, "st", "false")["seed"] == "rmq3"
    with pytest.raises(AnsibleFilterError, match="rmq9 has no st"):
        plan_filter.cluster_start_plan(["rmq9"], {"rmq9": {}}, "st")


@pytest.mark.parametrize("raw,upstream", [("4.0.5-1", "4.0.5"), ("1:27.3.4-1", "27.3.4"), ("4.0.5", "4.0.5"), ("", "")])
def test_upstream_version(raw, upstream):
    assert upstream_version(raw) == upstream


# --- warren.rabbitmq.node_state, with the host's commands faked ---------------------------------

class FakeHost:
    """dpkg-query, systemctl and rabbitmqctl answers of one host."""

    def __init__(self, version="4.0.5-1", active=True, running=None, members=None, queues=0, status_fails=0):
        self.version, self.active, self.queues = version, active, queues
        self.members = members if members is not None else list(ALL3)
        self.running = running if running is not None else list(self.members)
        self.status_fails = status_fails
        self.commands = []

    def run_command(self, module, cmd, **kw):
        self.commands.append(cmd)
        tool = cmd[0].rsplit("/", 1)[-1]
        if tool == "dpkg-query":
            return (0, "ii  " + self.version, "") if self.version else (1, "", "no packages found")
        if tool == "systemctl":
            return (0, "active\n", "") if self.active else (3, "inactive\n", "")
        if tool == "rabbitmqctl" and "cluster_status" in cmd:
            if self.status_fails:
                self.status_fails -= 1
                return 69, "", "Error: unable to perform an operation on node"
            return 0, json.dumps({"disk_nodes": self.members, "running_nodes": self.running}), ""
        if tool == "rabbitmqctl" and "eval" in cmd:
            return 0, "%d\n" % self.queues, ""
        raise AssertionError(cmd)


@pytest.fixture
def fake_host(monkeypatch, tmp_path):
    host = FakeHost()
    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, cmd, **kw: host.run_command(self, cmd, **kw))
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path",
                        lambda self, name, required=False, opt_dirs=None: "/usr/bin/" + name)
    monkeypatch.setattr(node_state.time, "sleep", lambda s: None)
    (tmp_path / "mnesia" / "rabbit@rmq1").mkdir(parents=True)
    (tmp_path / "cookie").write_text("SECRETCOOKIE")
    host.args = {"node": "rabbit@rmq1", "data_dir": str(tmp_path), "cookie_path": str(tmp_path / "cookie"),
                 "resolve": ["localhost", "no-such-host.invalid"], "expected_nodes": ALL3, "wait": 4}
    return host


def test_node_state_of_a_healthy_member(fake_host):
    result = run_ok(node_state.main, fake_host.args, check_mode=True)
    assert result["changed"] is False
    assert result["version"] == "4.0.5" and result["package_version"] == "4.0.5-1"
    assert result["active"] is True and result["database"] is True
    assert result["cookie_sha1"] == hashlib.sha1(b"SECRETCOOKIE").hexdigest()
    assert result["unresolved"] == ["no-such-host.invalid"]
    assert result["members"] == ALL3 and result["running"] == ALL3
    assert result["queues"] is None  # it sees the whole cluster: no reason to count
    assert not [c for c in fake_host.commands if "eval" in c]


def test_node_state_counts_queues_of_a_node_outside_the_cluster(fake_host):
    fake_host.members = fake_host.running = ["rabbit@rmq1"]
    fake_host.queues = 7
    assert run_ok(node_state.main, fake_host.args)["queues"] == 7


def test_node_state_of_a_blank_stopped_host(fake_host, tmp_path):
    fake_host.active, fake_host.version = False, ""
    args = dict(fake_host.args, data_dir=str(tmp_path / "elsewhere"), cookie_path=str(tmp_path / "none"))
    result = run_ok(node_state.main, args)
    assert (result["active"], result["database"], result["version"], result["cookie_sha1"]) == (False, False, "", "")
    assert result["members"] is None and result["running"] is None and result["queues"] is None
    assert not [c for c in fake_host.commands if "rabbitmqctl" in c[0]]


def test_node_state_waits_for_a_starting_node_then_gives_up(fake_host):
    fake_host.status_fails = 1
    assert run_ok(node_state.main, fake_host.args)["running"] == ALL3
    fake_host.status_fails = 1000
    result = run_fail(node_state.main, dict(fake_host.args, wait=0))
    assert "did not answer within 0 s" in result["msg"]
