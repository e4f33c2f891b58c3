"""The Kafka client configurations: settings reach the clients, each client kind is built once, and
the broker's security settings (issue 11) reach every builder, and only when they are set."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
import pytest
from pydantic import ValidationError

from services.adapters import kafka_config
from services.adapters.settings import Settings

Builder = Callable[[Settings], kafka_config.Config]

BUILDERS: dict[str, Builder] = {
    "admin": kafka_config.admin,
    "acl_admin": kafka_config.acl_admin,
    "client": kafka_config.client,
    "api_producer": kafka_config.api_producer,
    "api_results_consumer": kafka_config.api_results_consumer,
    "assign_only_reader": lambda s: kafka_config.assign_only_reader(s, "reader"),
    "event_stream_reader": lambda s: kafka_config.event_stream_reader(s, "live"),
    "worker_consumer": kafka_config.worker_consumer,
    "worker_producer": kafka_config.worker_producer,
    "worker_offsets_reader": kafka_config.worker_offsets_reader,
    "notifier_consumer": kafka_config.notifier_consumer,
    "tail_reader": kafka_config.tail_reader,
    "doctor_admin": kafka_config.doctor_admin,
    "replay_producer": kafka_config.replay_producer,
}
"""Every builder of the module: a new one that is not listed here fails the test below."""

SECURITY_KEYS = {
    "security.protocol",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
}

PLAINTEXT: dict[str, Any] = {
    "kafka_security_protocol": "PLAINTEXT",
    "kafka_sasl_username": None,
    "kafka_sasl_password": None,
    "kafka_ssl_ca_location": None,
    "kafka_ssl_certificate_location": None,
    "kafka_ssl_key_location": None,
}
SASL_SSL: dict[str, Any] = {
    **PLAINTEXT,
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_username": "worker",
    "kafka_sasl_password": "s3cret",
    "kafka_ssl_ca_location": "/etc/kafka/ca.pem",
}


def test_every_builder_is_listed() -> None:
    public = {
        name
        for name, value in vars(kafka_config).items()
        if callable(value)
        and not name.startswith("_")
        and getattr(value, "__module__", None) == kafka_config.__name__
        and value.__annotations__.get("return") in ("Config", kafka_config.Config)
    }
    assert public - {"security"} == set(BUILDERS)  # security: the part every builder shares


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_plaintext_adds_no_security_keys(name: str) -> None:
    config = BUILDERS[name](Settings(**PLAINTEXT))
    assert config["bootstrap.servers"]
    assert SECURITY_KEYS.isdisjoint(config)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_sasl_ssl_reaches_every_builder(name: str) -> None:
    config = BUILDERS[name](Settings(**SASL_SSL))
    assert {k: v for k, v in config.items() if k in SECURITY_KEYS} == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/kafka/ca.pem",
    }


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_security_keys_change_nothing_else(name: str) -> None:
    plain, secured = BUILDERS[name](Settings(**PLAINTEXT)), BUILDERS[name](Settings(**SASL_SSL))
    assert set(secured) - set(plain) == set(secured) & SECURITY_KEYS
    for key in set(plain) - {"group.id", "client.id"}:  # random suffixes in some builders
        assert secured[key] == plain[key], key


def test_sasl_without_tls_has_no_tls_files() -> None:
    settings = Settings(
        **{**SASL_SSL, "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"}
    )
    assert kafka_config.security(settings) == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "worker",
        "sasl.password": "s3cret",
    }


def test_tls_without_sasl_has_no_credentials() -> None:
    settings = Settings(
        **{
            **PLAINTEXT,
            "kafka_security_protocol": "SSL",
            "kafka_sasl_username": "ignored",
            "kafka_ssl_certificate_location": "/c.pem",
            "kafka_ssl_key_location": "/k.pem",
        }
    )
    assert kafka_config.security(settings) == {
        "security.protocol": "SSL",
        "ssl.certificate.location": "/c.pem",
        "ssl.key.location": "/k.pem",
    }


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize(
    "credentials",
    [{}, {"kafka_sasl_username": "u"}, {"kafka_sasl_password": "p"}, {"kafka_sasl_username": ""}],
)
def test_sasl_without_username_and_password_is_a_startup_error(
    protocol: str, credentials: dict[str, str]
) -> None:
    with pytest.raises(ValidationError, match=f"KAFKA_SECURITY_PROTOCOL={protocol} needs"):
        Settings(**{**PLAINTEXT, "kafka_security_protocol": protocol, **credentials})


def test_the_startup_error_does_not_print_the_password() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(
            **{**PLAINTEXT, "kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": "s3cret"}
        )
    assert "KAFKA_SASL_USERNAME" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_an_unknown_protocol_is_a_startup_error() -> None:
    with pytest.raises(ValidationError):
        Settings(**{**PLAINTEXT, "kafka_security_protocol": "TLS"})


def test_the_password_is_not_in_the_settings_repr() -> None:
    assert "s3cret" not in repr(Settings(**SASL_SSL))


def test_faust_gets_no_credentials_in_plaintext() -> None:
    assert kafka_config.faust_credentials(Settings(**PLAINTEXT)) is None


def test_faust_gets_the_same_sasl_credentials() -> None:
    settings = Settings(**{**SASL_SSL, "kafka_security_protocol": "SASL_PLAINTEXT"})
    credentials = kafka_config.faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("worker", "s3cret")
    assert credentials.ssl_context is None


def test_faust_sasl_over_tls_carries_an_ssl_context(tmp_path: Path) -> None:
    ca = _a_ca_file(tmp_path)
    settings = Settings(**{**SASL_SSL, "kafka_ssl_ca_location": str(ca)})
    credentials = kafka_config.faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert credentials.ssl_context.check_hostname is True


def test_faust_tls_only_gets_ssl_credentials(tmp_path: Path) -> None:
    ca = _a_ca_file(tmp_path)
    settings = Settings(**{**PLAINTEXT, "kafka_security_protocol": "SSL"})
    assert isinstance(kafka_config.faust_credentials(settings), faust.SSLCredentials)
    settings = Settings(
        **{**PLAINTEXT, "kafka_security_protocol": "SSL", "kafka_ssl_ca_location": str(ca)}
    )
    credentials = kafka_config.faust_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"
    assert credentials.context.cert_store_stats()["x509_ca"] == 1


def test_a_missing_ca_file_fails_the_faust_context(tmp_path: Path) -> None:
    settings = Settings(
        **{
            **PLAINTEXT,
            "kafka_security_protocol": "SSL",
            "kafka_ssl_ca_location": str(tmp_path / "absent.pem"),
        }
    )
    with pytest.raises(FileNotFoundError):
        kafka_config.faust_credentials(settings)


def test_faust_brokers_are_urls() -> None:
    settings = Settings(kafka_bootstrap_servers="a:1, b:2")
    assert kafka_config.faust_brokers(settings) == ["kafka://a:1", "kafka://b:2"]


def test_api_clients_take_the_latency_settings() -> None:
    settings = Settings(
        **PLAINTEXT,
        api_kafka_retry_backoff_ms=7,
        api_linger_ms=2,
        api_fetch_wait_max_ms=3,
        api_publish_timeout_s=1.5,
    )
    producer = kafka_config.api_producer(settings)
    consumer = kafka_config.api_results_consumer(settings)
    assert producer["linger.ms"] == 2
    assert producer["message.timeout.ms"] == 1500
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    assert consumer["fetch.wait.max.ms"] == 3
    assert consumer["isolation.level"] == "read_committed"
    for config in (producer, consumer):
        assert config["retry.backoff.ms"] == 7
        assert config["retry.backoff.max.ms"] >= 7
        assert config["socket.nagle.disable"] is True


def test_backoff_cap_never_below_the_first_backoff() -> None:
    settings = Settings(
        **PLAINTEXT, api_kafka_retry_backoff_ms=500, api_kafka_retry_backoff_max_ms=100
    )
    assert kafka_config.api_producer(settings)["retry.backoff.max.ms"] == 500


def test_assign_only_readers_never_share_a_group() -> None:
    settings = Settings(**PLAINTEXT)
    first = kafka_config.assign_only_reader(settings, "reader")
    second = kafka_config.assign_only_reader(settings, "reader", committed_only=False)
    assert first["group.id"] != second["group.id"]
    assert first["enable.auto.commit"] is False
    assert second["isolation.level"] == "read_uncommitted"


def _a_ca_file(tmp_path: Path) -> Path:
    """A self-signed CA certificate (PEM), made with the `cryptography` package."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
