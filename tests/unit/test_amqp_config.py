"""warren_amqp.config: node parsing, validation, and the pika parameters it builds (TLS above all).

No network: ``parameters()`` only builds objects. A throw-away CA is made with ``cryptography``
(in the venv through ansible-core) so the TLS context loads a real certificate.
"""

import datetime
import ssl

import pika
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from warren_amqp.config import ClientConfig, ConfigError, Node, parse_node, parse_nodes

BASE = {"nodes": ["rmq1:5672", "rmq2:5672"], "vhost": "warren", "user": "app", "password": "pw"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A self-signed CA and a client certificate signed by it, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def make(name, issuer_name=None, issuer_key=None, ca=False):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject)
                .issuer_name(issuer_name or subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(issuer_key or key, hashes.SHA256()))
        cert_path, key_path = folder / (name + ".pem"), folder / (name + ".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert, key, str(cert_path), str(key_path)

    ca_cert, ca_key, ca_path, _ = make("warren-test-ca", ca=True)
    _, _, client_cert, client_key = make("client", ca_cert.subject, ca_key)
    return {"ca": ca_path, "cert": client_cert, "key": client_key}


@pytest.mark.parametrize("text, expected", [
    ("rmq1:5672", Node("rmq1", 5672)),
    ("rmq1", Node("rmq1", 5672)),
    ("[::1]:5673", Node("::1", 5673)),
    ("[fe80::1]", Node("fe80::1", 5672)),
    (("10.0.0.1", "5671"), Node("10.0.0.1", 5671)),
    ({"host": "rmq2", "port": 5671}, Node("rmq2", 5671)),
])
def test_parse_node(text, expected):
    assert parse_node(text) == expected


def test_node_str_and_default_tls_port():
    assert str(Node("rmq1", 5671)) == "rmq1:5671"
    assert str(Node("::1", 5671)) == "[::1]:5671"
    assert parse_node("rmq1", tls=True) == Node("rmq1", 5671)
    assert parse_nodes("rmq1:1, rmq2:2 rmq3:3") == [Node("rmq1", 1), Node("rmq2", 2), Node("rmq3", 3)]


@pytest.mark.parametrize("nodes, message", [
    ([], "non-empty list"),
    (["rmq1:99999"], "port must be 1-65535"),
    (["rmq1:x"], "port must be 1-65535"),
    (["::1:5672"], "write IPv6 addresses as [addr]:port"),
    (["[::1"], "unterminated IPv6 bracket"),
    ([":5672"], "missing host"),
    (["rmq1:5672", "rmq1:5672"], "lists a node twice"),
])
def test_bad_nodes(nodes, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_nodes(nodes)


def test_from_dict_defaults_and_order_kept():
    cfg = ClientConfig.from_dict(BASE)
    assert cfg.nodes == [Node("rmq1", 5672), Node("rmq2", 5672)]
    assert (cfg.heartbeat, cfg.connect_timeout, cfg.backoff_initial, cfg.backoff_max) == (10, 5, 0.5, 5)
    assert "pw" not in repr(cfg), "the password stays out of logs"


def test_from_dict_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    data = dict(BASE, password_file=str(secret))
    del data["password"]
    assert ClientConfig.from_dict(data).password == "s3cret"


@pytest.mark.parametrize("change, message", [
    ({"hearbeat": 5}, "unknown key(s) hearbeat"),
    ({"password": None}, "exactly one of 'password' and 'password_file'"),
    ({"password_file": "/x"}, "exactly one of 'password' and 'password_file'"),
    ({"user": ""}, "missing required key(s): user"),
    ({"heartbeat": -1}, "'heartbeat' must be 0"),
    ({"connect_timeout": 0}, "'connect_timeout' must be a positive number"),
    ({"backoff_max": 0.1}, "'backoff_max' must not be below 'backoff_initial'"),
    ({"tls": "maybe"}, "'tls' must be true or false"),
    ({"ca_file": "/etc/hostname"}, "'ca_file' is set but 'tls' is false"),
    ({"tls": True, "ca_file": "/nonexistent/ca.pem"}, "no such file /nonexistent/ca.pem"),
    ({"tls": True, "cert_file": "/etc/hostname"}, "set both 'cert_file' and 'key_file'"),
])
def test_config_errors(change, message):
    data = dict(BASE)
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        ClientConfig.from_dict(data)
    assert message in str(info.value)


def test_plain_parameters_one_attempt_with_heartbeat_and_timeouts():
    cfg = ClientConfig.from_dict(dict(BASE, heartbeat=7, connect_timeout=3, connection_name="t"))
    params = cfg.parameters(cfg.nodes[1])
    assert isinstance(params, pika.ConnectionParameters)
    assert (params.host, params.port, params.virtual_host) == ("rmq2", 5672, "warren")
    assert params.heartbeat == 7
    assert params.socket_timeout == 3 and params.stack_timeout == 3
    assert params.connection_attempts == 1, "failover between nodes is the client's, not pika's"
    assert params.ssl_options is None
    assert params.credentials.username == "app" and params.credentials.password == "pw"
    assert params.client_properties["connection_name"] == "t"
    assert cfg.parameters("rmq9:1").host == "rmq9"


def test_tls_parameters_verify_the_broker_and_its_name(pki):
    cfg = ClientConfig.from_dict(dict(BASE, nodes=["rmq1", "rmq2"], tls=True, ca_file=pki["ca"]))
    assert cfg.nodes[0].port == 5671
    params = cfg.parameters(cfg.nodes[0])
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert params.ssl_options.server_hostname == "rmq1", "SNI and the name check use the node's host"
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert any(c["subject"] == ((("commonName", "warren-test-ca"),),) for c in context.get_ca_certs())
    assert cfg.parameters(cfg.nodes[1]).ssl_options.server_hostname == "rmq2"


def test_tls_without_hostname_check_still_verifies_the_chain(pki):
    cfg = ClientConfig.from_dict(dict(BASE, tls=True, ca_file=pki["ca"], verify_hostname=False,
                                      server_name="broker.example"))
    params = cfg.parameters(cfg.nodes[0])
    assert params.ssl_options.context.check_hostname is False
    assert params.ssl_options.context.verify_mode == ssl.CERT_REQUIRED
    assert params.ssl_options.server_hostname == "broker.example"


def test_tls_client_certificate(pki):
    cfg = ClientConfig.from_dict(dict(BASE, tls=True, ca_file=pki["ca"], cert_file=pki["cert"],
                                      key_file=pki["key"]))
    assert cfg.parameters(cfg.nodes[0]).ssl_options.context.verify_mode == ssl.CERT_REQUIRED
    wrong = dict(BASE, tls=True, ca_file=pki["ca"], cert_file=pki["ca"], key_file=pki["key"])
    with pytest.raises(ssl.SSLError):  # a key that does not match its certificate is refused
        ClientConfig.from_dict(wrong).parameters("rmq1")
