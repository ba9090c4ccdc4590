"""Cluster-level checks for the three-node scenario: membership, replication, durability."""

import uuid

import pika
import pytest
from conftest import wait_until

QUEUE = "warren.verify.durability"
MESSAGES = 1000


def test_three_running_nodes_with_one_cluster_name(nodes):
    assert len(nodes) == 3
    expected = sorted(node.nodename for node in nodes)
    for node in nodes:
        status = node.cluster_status()
        assert sorted(status["running_nodes"]) == expected, f"{node.name} sees {status['running_nodes']}"
        assert sorted(status["disk_nodes"]) == expected
        assert status["cluster_name"] == "warren-molecule"
        assert status["partitions"] == {}
        assert status["alarms"] == []


def test_wiped_node_rejoined(nodes):
    # molecule/cluster/wipe-node.yml deleted the last node's database and re-ran the playbook.
    wiped = nodes[-1]
    assert wiped.host.file("/var/tmp/warren-wiped").exists, "the wipe side effect did not run"
    assert wiped.host.file(f"/var/lib/rabbitmq/mnesia/{wiped.nodename}").is_directory
    status = wiped.cluster_status()
    assert sorted(status["running_nodes"]) == sorted(node.nodename for node in nodes)


def queue_info(node, name):
    rows = node.ctl_json("list_queues", "-p", "warren-test", "name", "type", "leader", "members", "online")
    return next((row for row in rows if row["name"] == name), None)


def test_quorum_queue_declared_over_amqps_has_three_members(nodes, amqps, app_credentials):
    connection = amqps(nodes[0], app_credentials)
    try:
        channel = connection.channel()
        channel.queue_delete("warren.verify.members")
        # No x-queue-type argument: the cluster's default queue type must make it a quorum queue.
        channel.queue_declare("warren.verify.members", durable=True)
    finally:
        connection.close()
    info = queue_info(nodes[0], "warren.verify.members")
    assert info["type"] == "quorum"
    assert sorted(info["members"]) == sorted(node.nodename for node in nodes)


def publish_confirmed(connection, count):
    """Publish count persistent messages with publisher confirms; return their ids."""
    channel = connection.channel()
    channel.confirm_delivery()
    ids = []
    for number in range(count):
        message_id = f"{number}-{uuid.uuid4()}"
        # With confirms on, basic_publish raises if the broker nacks or returns the message.
        channel.basic_publish(
            exchange="",
            routing_key=QUEUE,
            body=message_id.encode(),
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, message_id=message_id),
            mandatory=True,
        )
        ids.append(message_id)
    return ids


def drain(connection, expected, timeout=60):
    """basic_get until `expected` messages arrived or the time is up; return their bodies."""
    import time

    channel = connection.channel()
    received = []
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        method, _props, body = channel.basic_get(QUEUE, auto_ack=False)
        if method is None:
            time.sleep(0.2)
            continue
        received.append(body.decode())
        channel.basic_ack(method.delivery_tag)
    return received


def test_confirmed_messages_survive_the_loss_of_the_queue_leader(nodes, amqps, app_credentials):
    connection = amqps(nodes[0], app_credentials)
    try:
        channel = connection.channel()
        channel.queue_delete(QUEUE)
        channel.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        sent = publish_confirmed(connection, MESSAGES)
    finally:
        connection.close()
    assert len(sent) == MESSAGES

    leader_name = queue_info(nodes[0], QUEUE)["leader"]
    leader = next(node for node in nodes if node.nodename == leader_name)
    survivors = [node for node in nodes if node is not leader]
    leader.host.check_output("systemctl stop rabbitmq-server")
    try:
        wait_until(lambda: (queue_info(survivors[0], QUEUE) or {}).get("leader") in
                   [node.nodename for node in survivors], timeout=60, what="a new leader on a surviving node")
        consumer = amqps(survivors[0], app_credentials)
        try:
            received = drain(consumer, MESSAGES)
        finally:
            consumer.close()
    finally:
        leader.host.check_output("systemctl start rabbitmq-server")
        wait_until(lambda: len(survivors[0].cluster_status()["running_nodes"]) == 3, timeout=180,
                   what=f"{leader.name} to rejoin")

    assert len(received) == MESSAGES, f"{len(received)} of {MESSAGES} confirmed messages came back"
    assert sorted(received) == sorted(sent), "messages were lost or changed"


@pytest.mark.parametrize("index", [0, 1, 2])
def test_every_node_reports_all_members_after_the_drill(nodes, index):
    status = nodes[index].cluster_status()
    assert len(status["running_nodes"]) == 3
