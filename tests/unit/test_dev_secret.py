"""The public development JWT secret is accepted only in an explicitly local environment, and the
API, `orderstatus token` and doctor agree on which ones those are (issue 10, scenario 4)."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from services.adapters.command_signing import signing_refusal
from services.adapters.settings import DEV_JWT_SECRET, Settings, is_local_environment
from services.cli import main as cli
from services.command_api.auth import TokenVerifier, mint_token
from services.ops.verdicts import Verdict, judge_config

LOCAL = ["dev", "test", "local"]
NOT_LOCAL = ["prod", "production", "staging", "Prod", "PROD", "Dev", " dev", "", "qa"]


def dev_settings(environment: str, **more: object) -> Settings:
    return Settings(jwt_secret=SecretStr(DEV_JWT_SECRET), environment=environment, **more)


@pytest.mark.parametrize("environment", NOT_LOCAL)
def test_the_verifier_refuses_the_dev_secret_outside_a_local_environment(environment: str) -> None:
    with pytest.raises(ValueError, match="development JWT secret"):
        TokenVerifier(dev_settings(environment))


@pytest.mark.parametrize("environment", NOT_LOCAL)
def test_a_jwks_deployment_that_kept_the_dev_secret_is_refused(environment: str) -> None:
    settings = dev_settings(environment, jwt_jwks_url="https://issuer.example.test/jwks.json")
    with pytest.raises(ValueError, match="development JWT secret"):
        TokenVerifier(settings)


@pytest.mark.parametrize("environment", LOCAL)
def test_local_environments_accept_the_dev_secret(environment: str) -> None:
    verifier = TokenVerifier(dev_settings(environment))
    token = mint_token(dev_settings(environment), sub="alice")
    assert verifier.verify(token).sub == "alice"


def test_the_default_environment_is_not_local() -> None:
    """Unset ENVIRONMENT is not an explicit local one: the dev secret is refused."""
    assert not is_local_environment(Settings.model_fields["environment"].default)


@pytest.mark.parametrize("environment", NOT_LOCAL)
def test_mint_token_refuses_outside_a_local_environment(environment: str) -> None:
    with pytest.raises(ValueError, match="local environment"):
        mint_token(dev_settings(environment), sub="alice")
    real = Settings(jwt_secret=SecretStr("a-real-secret-" + "x" * 32), environment=environment)
    with pytest.raises(ValueError, match="local environment"):
        mint_token(real, sub="alice")


@pytest.mark.parametrize("environment", NOT_LOCAL)
def test_orderstatus_token_refuses_outside_a_local_environment(
    environment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.delenv("JWT_SECRET", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli(["token", "--role", "service_role"])
    assert exited.value.code != 0
    captured = capsys.readouterr()
    assert "local environment" in captured.err
    assert "eyJ" not in captured.out  # no token printed


@pytest.mark.parametrize("environment", LOCAL + NOT_LOCAL)
@pytest.mark.parametrize("dev_secret", [True, False])
@pytest.mark.parametrize("signing_keys", ["", "k1:" + base64.b64encode(b"s" * 32).decode()])
def test_doctor_and_the_api_agree(environment: str, dev_secret: bool, signing_keys: str) -> None:
    secret = DEV_JWT_SECRET if dev_secret else "a-real-secret-" + "x" * 32
    settings = Settings(
        jwt_secret=SecretStr(secret),
        environment=environment,
        command_signing_keys=SecretStr(signing_keys),
    )
    try:
        TokenVerifier(settings)
        api_starts = signing_refusal(settings) is None  # as `orderstatus api` decides (main.py)
    except ValueError:
        api_starts = False
    doctor_fails = judge_config(settings).verdict is Verdict.FAIL
    assert api_starts is not doctor_fails
