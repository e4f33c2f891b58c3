"""doctor's judgement of the Kafka security mode (issue 11): plaintext without SASL, the public dev
passwords and a broker without an authorizer fail outside a local environment."""

from __future__ import annotations

from typing import Any

from services.adapters.kafka_principals import Role, sasl_identity
from services.adapters.settings import Settings
from services.ops.verdicts import BrokerSecurity, Verdict, judge_kafka_security

SECURED = BrokerSecurity(
    {"CLIENT": "SASL_SSL", "CONTROLLER": "SASL_PLAINTEXT"},
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
)


def settings(environment: str, **overrides: Any) -> Settings:
    """Plaintext unless overridden, whatever the environment says (make test exports SASL)."""
    return Settings(
        environment=environment, **{"kafka_security_protocol": "PLAINTEXT", **overrides}
    )


def real(protocol: str = "SASL_SSL") -> dict[str, Any]:
    return {
        **sasl_identity(Role.API),
        "kafka_security_protocol": protocol,
        "kafka_sasl_password": "a-real-secret",
    }


def test_plaintext_fails_outside_a_local_environment_only() -> None:
    prod = judge_kafka_security(settings("prod"), None)
    assert prod.verdict is Verdict.FAIL
    assert "plaintext without SASL" in prod.summary
    assert judge_kafka_security(settings("dev"), None).verdict is Verdict.OK


def test_the_dev_passwords_fail_outside_a_local_environment() -> None:
    dev = sasl_identity(Role.API)
    judged = judge_kafka_security(
        settings("prod", **{**dev, "kafka_security_protocol": "SASL_SSL"}), SECURED
    )
    assert judged.verdict is Verdict.FAIL and "dev Kafka password" in judged.summary
    assert judge_kafka_security(settings("test", **dev), SECURED).verdict is Verdict.OK


def test_sasl_over_tls_with_a_real_password_passes_and_names_the_mode() -> None:
    judged = judge_kafka_security(settings("prod", **real()), SECURED)
    assert judged.verdict is Verdict.OK
    assert judged.summary == (
        "client SASL_SSL/SCRAM-SHA-512 as orderstatus-api; "
        "broker CLIENT:SASL_SSL, CONTROLLER:SASL_PLAINTEXT; authorizer StandardAuthorizer"
    )


def test_sasl_without_tls_warns_in_production() -> None:
    assert judge_kafka_security(settings("prod", **real("SASL_PLAINTEXT")), SECURED).verdict is (
        Verdict.WARN
    )


def test_a_broker_without_an_authorizer_fails_in_production() -> None:
    open_broker = BrokerSecurity({"CLIENT": "SASL_SSL"}, "")
    judged = judge_kafka_security(settings("prod", **real()), open_broker)
    assert judged.verdict is Verdict.FAIL and "no authorizer" in judged.summary
