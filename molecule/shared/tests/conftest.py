"""Shared fixtures for warren's Molecule verifiers (testinfra + pika on the controller).

The scenario's secrets and lab CA live in ``$MOLECULE_EPHEMERAL_DIRECTORY/state``, written by
the converge run (the same password lookups as the lab inventory).
"""

import json
import os
import ssl
import time

import pika
import pytest
import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
STATE_DIR = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "state")
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)

# testinfra reaches the containers with podman exec directly: far quicker than one ansible
# run per command, and it is the same host.
testinfra_hosts = [f"podman://{name}" for name in RUNNER.get_hosts("rabbitmq")]


def read_secret(name):
    with open(os.path.join(STATE_DIR, name), encoding="utf-8") as handle:
        # ansible's password lookup stores "<password> salt=..." when it salts; take the password.
        return handle.read().split()[0]


class Node:
    """One broker: its testinfra handle, Erlang node name and container address."""

    def __init__(self, name):
        self.name = name
        self.host = testinfra.get_host(f"podman://{name}")
        self.nodename = f"rabbit@{name}"

    @property
    def address(self):
        out = self.host.check_output("ip -4 -o addr show dev eth0")
        return out.split()[3].split("/")[0]

    def ctl_json(self, *args):
        cmd = self.host.run("rabbitmqctl -q " + " ".join(args) + " --formatter json")
        assert cmd.rc == 0, f"{self.name}: rabbitmqctl {' '.join(args)} failed: {cmd.stderr}"
        return json.loads(cmd.stdout)

    def cluster_status(self):
        return self.ctl_json("cluster_status")

    def eval(self, expr):
        return self.host.check_output(f"rabbitmqctl -q eval '{expr}'").strip()

    def is_running(self):
        return self.host.run("rabbitmq-diagnostics -q check_running").rc == 0


@pytest.fixture(scope="session")
def nodes():
    return [Node(name) for name in RUNNER.get_hosts("rabbitmq")]


@pytest.fixture(scope="session")
def ca_file():
    return os.path.join(STATE_DIR, "ca", "ca.pem")


@pytest.fixture(scope="session")
def app_credentials():
    return pika.PlainCredentials("warren-test", read_secret("app_password"))


@pytest.fixture(scope="session")
def amqps(ca_file):
    """Open an AMQPS connection to a node, verifying its certificate against the lab CA."""

    def connect(node, credentials, vhost="warren-test"):
        context = ssl.create_default_context(cafile=ca_file)
        params = pika.ConnectionParameters(
            host=node.address,
            port=5671,
            virtual_host=vhost,
            credentials=credentials,
            ssl_options=pika.SSLOptions(context, server_hostname=node.name),
            connection_attempts=3,
            retry_delay=2,
            socket_timeout=10,
            blocked_connection_timeout=30,
        )
        return pika.BlockingConnection(params)

    return connect


def wait_until(predicate, timeout, interval=2.0, what="condition"):
    """Poll predicate() until it is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
