"""Rolling-upgrade rules (plugins/module_utils/upgrade_path.py) and the upgrade_plan module."""

import pytest

from ansible_collections.warren.rabbitmq.plugins.module_utils.upgrade_path import (
    UpgradeRefused, parse_version, plan)


def cluster(rabbitmq, erlang="27.3.4.1", n=3):
    return {"rabbit@rmq%d" % i: {"rabbitmq": rabbitmq, "erlang": erlang} for i in range(1, n + 1)}


@pytest.mark.parametrize("text, expected", [
    ("4.0.5", (4, 0, 5)),
    ("4.0.5-5", (4, 0, 5)),
    ("4.0.5-1", (4, 0, 5)),
    ("1:27.3.4.1+dfsg-1", (27, 3, 4, 1)),
    ("26.2", (26, 2)),
])
def test_parse_version_reads_debian_package_versions(text, expected):
    assert parse_version(text) == expected


def test_parse_version_rejects_garbage():
    with pytest.raises(ValueError):
        parse_version("latest")


def test_patch_upgrade_inside_a_series():
    result = plan(cluster("4.0.3", erlang="26.2.5"), "4.0.5")
    assert result["kind"] == "patch" and result["from"] == "4.0.3" and result["to"] == "4.0.5"
    assert result["nodes"] == ["rabbit@rmq1", "rabbit@rmq2", "rabbit@rmq3"]


def test_same_version_is_a_reinstall():
    assert plan(cluster("4.0.5"), "4.0.5-5")["kind"] == "reinstall"


def test_next_series_is_allowed():
    assert plan(cluster("3.13.7", erlang="26.2.5"), "4.0.5", target_erlang="26.2.5")["kind"] == "major"
    assert plan(cluster("4.0.5"), "4.1.0")["kind"] == "minor"


def test_skipping_a_series_is_refused_with_the_path():
    with pytest.raises(UpgradeRefused) as exc:
        plan(cluster("3.12.14", erlang="26.2.5"), "4.0.5", target_erlang="26.2.5")
    assert "3.12 -> 3.13 -> 4.0" in str(exc.value)


def test_downgrade_is_refused():
    with pytest.raises(UpgradeRefused, match="downgrade"):
        plan(cluster("4.0.5"), "4.0.3")


def test_mixed_versions_are_refused():
    current = cluster("4.0.5")
    current["rabbit@rmq3"]["rabbitmq"] = "4.0.3"
    with pytest.raises(UpgradeRefused, match="mixed"):
        plan(current, "4.0.5")


def test_disabled_flags_block_a_new_series_but_not_a_patch():
    with pytest.raises(UpgradeRefused, match="message_containers"):
        plan(cluster("3.13.7", erlang="26.2.5"), "4.0.5", target_erlang="26.2.5",
             disabled_stable_flags=["message_containers"])
    result = plan(cluster("4.0.3", erlang="26.2.5"), "4.0.5", disabled_stable_flags=["x"])
    assert any("x" in n for n in result["notes"])


@pytest.mark.parametrize("rabbitmq, erlang", [
    ("4.0.3", "27.3.4"),   # Erlang 27 arrived with 4.0.4
    ("4.0.5", "26.1"),     # 4.0 needs 26.2 or later
    ("4.2.0", "26.2.5"),   # 4.2 needs 27
    ("3.13.7", "27.0"),    # 3.13 stops at 26.x
])
def test_erlang_outside_the_target_range_is_refused(rabbitmq, erlang):
    with pytest.raises(UpgradeRefused, match="needs Erlang"):
        plan(cluster(rabbitmq, erlang="26.2.5"), rabbitmq, target_erlang=erlang)


def test_erlang_upgrade_in_the_same_step():
    # 4.0.5 on 26.2 moving to 27: allowed, 4.0.4+ runs on 27.
    assert plan(cluster("4.0.3", erlang="26.2.5"), "4.0.5", target_erlang="27.3.4")["kind"] == "patch"


def test_unknown_series_is_refused():
    with pytest.raises(UpgradeRefused, match="unknown"):
        plan(cluster("4.0.5"), "5.0.0")


def test_unreadable_node_version_names_the_node():
    current = cluster("4.0.5")
    current["rabbit@rmq2"]["rabbitmq"] = ""
    with pytest.raises(UpgradeRefused, match="rabbit@rmq2"):
        plan(current, "4.0.5")
