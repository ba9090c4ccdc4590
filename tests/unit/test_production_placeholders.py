"""The production inventory's CHANGE-ME vault placeholders are refused by preflight.

inventories/production ships every secret as a placeholder in its vault files. Deploying one
would mean a guessable password or pages sent nowhere, so each role that takes a secret refuses to
run while its value still holds "CHANGE-ME", and names the vault variable to set. These tests run
the roles' preflight (tests/unit/fixtures/production_preflight.yml) on the controller against that
inventory: once as shipped (every role must refuse), once with the production Molecule scenario's
test values (every role must pass, so the refusals are about the placeholders and nothing else).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLAYBOOK = os.path.join(ROOT, "tests", "unit", "fixtures", "production_preflight.yml")
INVENTORY = os.path.join(ROOT, "inventories", "production")
TEST_VAULT = os.path.join(ROOT, "molecule", "production", "vars", "test-vault.yml")
BIN = os.path.dirname(sys.executable)


def run_preflight(tmp_path, *extra):
    """Run the fixture playbook; return the refusals it recorded, {role: message} per host."""
    out = tmp_path / "refusals.json"
    ca = tmp_path / "ca.pem"
    ca.write_text("not read: the canary's preflight only checks that the file exists\n")
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".build", "collections"),
        "ANSIBLE_NOCOLOR": "1",
    })
    cmd = [
        os.path.join(BIN, "ansible-playbook"), "-i", INVENTORY, PLAYBOOK,
        "-e", "ansible_connection=local",
        "-e", f"ansible_python_interpreter={sys.executable}",
        "-e", f"warren_test_out={out}",
        "-e", f"canary_tls_ca_src={ca}",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    refusals = {}
    for host in json.loads(out.read_text()):
        refusals.update(host)
    return refusals


@pytest.fixture(scope="module")
def refusals_with_placeholders(tmp_path_factory):
    return run_preflight(tmp_path_factory.mktemp("placeholders"), "-e", "warren_test_placeholders=true")


@pytest.mark.parametrize(
    "role, names",
    [
        # The rabbitmq role refuses the cookie first (dashes are not letters or digits).
        ("rabbitmq", ["rabbitmq_erlang_cookie"]),
        ("alertmanager", ["vault_alertmanager_oncall_webhook_url", "vault_alertmanager_ticket_webhook_url",
                          "vault file"]),
        ("canary", ["canary_password", "vault_warren_canary_password", "vault file"]),
        ("grafana", ["grafana_admin_password", "vault_grafana_admin_password", "vault file"]),
    ],
)
def test_placeholders_are_refused_naming_the_variable(refusals_with_placeholders, role, names):
    assert role in refusals_with_placeholders, f"{role}'s preflight accepted the CHANGE-ME placeholders"
    message = refusals_with_placeholders[role]
    for name in names:
        assert name in message, f"{role}'s refusal does not name {name}: {message}"
    # Only the variables that hold this role's placeholders, not every CHANGE-ME in the vault.
    if role != "rabbitmq":
        named = {word.strip(",.") for word in message.split() if word.startswith("vault_")}
        assert named == {name for name in names if name.startswith("vault_")}, message


def test_real_values_pass(tmp_path):
    # The scenario turns Grafana off (no package here); its preflight still has to pass.
    refusals = run_preflight(tmp_path, "-e", f"@{TEST_VAULT}", "-e", "grafana_enabled=true",
                             "-e", "warren_test_placeholders=false")
    assert refusals == {}
