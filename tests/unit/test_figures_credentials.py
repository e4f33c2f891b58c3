"""The figures app hands the project's Kafka security settings to faust, and faust's own mapping
(credentials_to_aiokafka_auth, what its consumer and producers are built with) turns them into the
aiokafka settings that match librdkafka's. No broker: the app is built, never started."""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from services.adapters.settings import Settings
from services.figures.app import FiguresApp


def _aiokafka_auth(**security: Any) -> Any:
    settings = Settings(kafka_topic_prefix="unit-figures-credentials", **security)
    conf = FiguresApp(settings).app.conf
    return credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)


def test_plaintext_reaches_aiokafka_as_plaintext() -> None:
    assert _aiokafka_auth(kafka_security_protocol="PLAINTEXT") == {"security_protocol": "PLAINTEXT"}


def test_scram_reaches_aiokafka() -> None:
    auth = _aiokafka_auth(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="figures",
        kafka_sasl_password="pw",
    )
    assert auth == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "figures",
        "sasl_plain_password": "pw",
        "ssl_context": None,
    }


def test_scram_over_tls_reaches_aiokafka_with_a_context() -> None:
    auth = _aiokafka_auth(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="figures",
        kafka_sasl_password="pw",
    )
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["ssl_context"] is not None
