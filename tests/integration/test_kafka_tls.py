"""TLS on the broker's client listener (issue 11, docs/security.md "TLS"): a broker of the test's own
with SASL_SSL (deploy/local/kafka.sh KAFKA_TLS_DIR), certificates made here. Clients configured from
settings (KAFKA_SECURITY_PROTOCOL=SASL_SSL, KAFKA_SSL_CA_LOCATION) write; a client speaking
SASL_PLAINTEXT to it, or one that does not trust its CA, gets nothing through."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.adapters import kafka_config
from services.adapters.kafka_acls import apply_acls
from services.adapters.kafka_admin import ensure_topics
from services.adapters.kafka_principals import Role, as_principal
from services.adapters.settings import Settings
from tests.local_broker import LocalBroker


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey]
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if subject == issuer[0]:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        )
    else:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1], hashes.SHA256())


def write_certificates(directory: Path) -> None:
    """ca.pem, and broker.pem: the broker's PKCS#8 key and its certificate for 127.0.0.1."""
    ca_key, broker_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = ("orderstatus-test-ca", ca_key)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(_certificate(ca[0], ca_key, ca).public_bytes(pem))
    key = broker_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert = _certificate("127.0.0.1", broker_key, ca).public_bytes(pem)
    (directory / "broker.pem").write_bytes(key + cert)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    tls = tmp_path_factory.mktemp("tls")
    write_certificates(tls)
    with LocalBroker.started(tmp_path_factory.mktemp("tls-broker"), tls_dir=tls) as broker:
        yield broker


@pytest.fixture(scope="module")
def operator(tls_broker: LocalBroker) -> Settings:
    assert tls_broker.tls_dir is not None
    settings = tls_broker.settings(Settings(kafka_topic_prefix="tls")).model_copy(
        update={
            "kafka_security_protocol": "SASL_SSL",
            "kafka_ssl_ca_location": str(tls_broker.tls_dir / "ca.pem"),
        }
    )
    ensure_topics(settings)
    apply_acls(settings)
    return settings


def deliver(config: dict[str, object], topic: str) -> KafkaError | None:
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 6000, "log_level": 0})
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(15)
    assert len(errors) == 1
    return errors[0]


def test_clients_configured_from_settings_write_over_tls(operator: Settings) -> None:
    api = as_principal(operator, Role.API)
    assert kafka_config.client(api)["security.protocol"] == "SASL_SSL"
    assert deliver(kafka_config.client(api), operator.topics.commands) is None


def test_a_plaintext_sasl_client_or_one_that_does_not_trust_the_ca_gets_nothing_through(
    operator: Settings,
) -> None:
    api = kafka_config.client(as_principal(operator, Role.API))
    no_tls = {**api, "security.protocol": "SASL_PLAINTEXT"}
    del no_tls["ssl.ca.location"]
    untrusting = {**api, "ssl.ca.location": "probe"}  # librdkafka: the system's CAs only
    assert deliver(no_tls, operator.topics.commands) is not None
    assert deliver(untrusting, operator.topics.commands) is not None


def test_the_figures_apps_tls_context_verifies_the_broker(operator: Settings) -> None:
    """faust gets an ssl.SSLContext from the same settings: it completes a verified handshake."""
    host, port = operator.kafka_bootstrap_servers.split(":")
    context = kafka_config.tls_context(operator)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection((host, int(port)), timeout=10) as raw,
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname=host)
