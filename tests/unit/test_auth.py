"""Token verification: every way a token can be wrong is rejected alike (InvalidToken, no detail),
HS256 with the shared secret, RS256/ES256 only with keys from a real JWKS endpoint on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from services.adapters.settings import DEV_JWT_SECRET, Settings
from services.command_api.auth import InvalidToken, KeysUnavailable, TokenVerifier, mint_token
from services.core.messages import Actor, Role
from tests.jwks import ISSUER, JwksServer, SigningKey, claims, ec_key, jwks_server, rsa_key
from tests.unit.strategies import UNIT_SETTINGS

SECRET = "unit-test-secret-" + "0123456789abcdef" * 4
SETTINGS = Settings(jwt_secret=SecretStr(SECRET), jwt_jwks_url=None, environment="test")
RESTAURANT = uuid.UUID("00000000-0000-4000-8000-00000000000a")


def hs(body: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(body, secret, algorithm=algorithm)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(body: dict[str, Any], alg: str = "none") -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(body).encode())}."


def hmac_signed(header: dict[str, Any], body: dict[str, Any], key: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def valid(**changes: Any) -> dict[str, Any]:
    # A day: parametrize builds these at import, and the whole suite runs for many minutes.
    body = claims("alice", issuer=None, ttl=24 * 3600)
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def without(name: str) -> dict[str, Any]:
    body = valid()
    del body[name]
    return body


def tampered() -> str:
    header, _, signature = hs(valid()).split(".")
    payload = b64(json.dumps(valid(role="service_role")).encode())
    return f"{header}.{payload}.{signature}"


REJECTED: dict[str, Callable[[], str]] = {
    "forged-signature": lambda: hs(valid(), secret="not-the-secret-0123456789abcdef0123"),
    "tampered-payload": tampered,
    "expired": lambda: hs(valid(exp=int(time.time()) - 60)),
    "not-yet-valid": lambda: hs(valid(nbf=int(time.time()) + 60)),
    "issued-in-the-future": lambda: hs(valid(iat=int(time.time()) + 3600)),
    "wrong-audience": lambda: hs(valid(aud="anon")),
    "no-audience": lambda: hs(without("aud")),
    "no-expiry": lambda: hs(without("exp")),
    "no-subject": lambda: hs(without("sub")),
    "empty-subject": lambda: hs(valid(sub="")),
    "subject-not-a-string": lambda: hs(valid(sub=42)),
    "subject-too-long": lambda: hs(valid(sub="x" * 201)),
    "no-role": lambda: hs(without("role")),
    "role-anon": lambda: hs(valid(role="anon")),
    "role-postgres": lambda: hs(valid(role="postgres")),
    "role-orderstatus-app": lambda: hs(valid(role="orderstatus_app")),
    "restaurants-not-a-list": lambda: hs(valid(restaurant_ids=str(RESTAURANT))),
    "restaurants-not-uuids": lambda: hs(valid(restaurant_ids=["'; DROP TABLE orders; --"])),
    "restaurants-numbers": lambda: hs(valid(restaurant_ids=[1])),
    "alg-none": lambda: unsigned(valid()),
    "alg-None": lambda: unsigned(valid(), alg="None"),
    "alg-empty": lambda: unsigned(valid(), alg=""),
    "alg-hs256-unsigned": lambda: unsigned(valid(), alg="HS256"),
    "wrong-algorithm-hs512": lambda: hs(valid(), algorithm="HS512"),
    "wrong-algorithm-hs384": lambda: hs(valid(), algorithm="HS384"),
    "rs256-without-a-jwks": lambda: rsa_key().sign(valid()),
    "es256-without-a-jwks": lambda: ec_key().sign(valid()),
    "garbage": lambda: "x.y.z",
    "two-segments": lambda: "eyJhbGciOiJIUzI1NiJ9.e30",
    "empty": lambda: "",
    "header-not-json": lambda: f"{b64(b'not json')}.{b64(b'{}')}.",
    "claims-not-an-object": lambda: hmac_signed({"alg": "HS256"}, [], SECRET.encode()),  # type: ignore[arg-type]
}


@pytest.fixture(scope="module")
def verifier() -> TokenVerifier:
    return TokenVerifier(SETTINGS)


@pytest.mark.parametrize("case", REJECTED)
def test_every_bad_token_is_rejected_alike(verifier: TokenVerifier, case: str) -> None:
    with pytest.raises(InvalidToken) as raised:
        verifier.verify(REJECTED[case]())
    assert str(raised.value) == ""  # nothing to pass on to the caller


@pytest.mark.parametrize(
    ("body", "actor"),
    [
        (valid(), Actor(sub="alice", role=Role.AUTHENTICATED)),
        (valid(restaurant_ids=[]), Actor(sub="alice", role=Role.AUTHENTICATED)),
        (valid(restaurant_ids=None), Actor(sub="alice", role=Role.AUTHENTICATED)),
        (
            valid(role="service_role", restaurant_ids=[str(RESTAURANT)]),
            Actor(sub="alice", role=Role.SERVICE_ROLE, restaurant_ids=(RESTAURANT,)),
        ),
        # Unknown extra claims (Supabase adds many) are ignored.
        (
            valid(email="a@example.test", app_metadata={}),
            Actor(sub="alice", role=Role.AUTHENTICATED),
        ),
    ],
)
def test_good_tokens_give_their_actor(
    verifier: TokenVerifier, body: dict[str, Any], actor: Actor
) -> None:
    assert verifier.verify(hs(body)) == actor


def test_a_token_expired_within_the_leeway_for_clock_skew_still_counts(
    verifier: TokenVerifier,
) -> None:
    assert verifier.verify(hs(valid(exp=int(time.time()) - 2))).sub == "alice"


def test_minted_tokens_verify_and_carry_their_scope() -> None:
    token = mint_token(SETTINGS, sub="pos-1", role=Role.SERVICE_ROLE, restaurant_ids=[RESTAURANT])
    assert TokenVerifier(SETTINGS).verify(token) == Actor(
        sub="pos-1", role=Role.SERVICE_ROLE, restaurant_ids=(RESTAURANT,)
    )
    unscoped = jwt.decode(mint_token(SETTINGS, sub="s"), options={"verify_signature": False})
    assert "restaurant_ids" not in unscoped


def test_a_configured_issuer_is_required_and_checked() -> None:
    verifier = TokenVerifier(SETTINGS.model_copy(update={"jwt_issuer": ISSUER}))
    assert verifier.verify(hs(valid(iss=ISSUER))).sub == "alice"
    for body in (valid(), valid(iss="https://evil.example.test/auth/v1")):
        with pytest.raises(InvalidToken):
            verifier.verify(hs(body))


def test_an_empty_secret_turns_hs256_off() -> None:
    verifier = TokenVerifier(SETTINGS.model_copy(update={"jwt_secret": SecretStr("")}))
    for token in (hs(valid()), hmac_signed({"alg": "HS256"}, valid(), b"")):
        with pytest.raises(InvalidToken):
            verifier.verify(token)


def test_prod_refuses_the_development_secret() -> None:
    with pytest.raises(ValueError, match="development JWT secret"):
        TokenVerifier(Settings(jwt_secret=SecretStr(DEV_JWT_SECRET), environment="prod"))


@UNIT_SETTINGS
@given(position=st.integers(min_value=0), replacement=st.sampled_from("AQgw_-xyz019.="))
def test_a_changed_character_never_gets_another_actor_in(position: int, replacement: str) -> None:
    """Any one-character change is rejected, or (base64 slack in the last character) still reads
    as exactly the original claims; never another exception, never other claims."""
    token = hs(valid(role="service_role", restaurant_ids=[str(RESTAURANT)]))
    index = position % len(token)
    changed = token[:index] + replacement + token[index + 1 :]
    verifier = TokenVerifier(SETTINGS)
    try:
        actor = verifier.verify(changed)
    except InvalidToken:
        return
    assert actor == verifier.verify(token)


# ---- RS256 / ES256 from a JWKS endpoint --------------------------------------------------------

RSA, EC = rsa_key("rsa-1"), ec_key("ec-1")


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    shared_secret = b64(b"a symmetric key has no place in a JWKS")
    oct_key = {"kty": "oct", "k": shared_secret, "kid": "oct-1", "alg": "HS256", "use": "sig"}
    with jwks_server(RSA, EC, extra=[oct_key]) as server:
        yield server


def jwks_verifier(url: str) -> TokenVerifier:
    return TokenVerifier(SETTINGS.model_copy(update={"jwt_jwks_url": url, "jwt_issuer": ISSUER}))


@pytest.fixture
def asymmetric(jwks: JwksServer) -> TokenVerifier:
    return jwks_verifier(jwks.url)


@pytest.mark.parametrize("key", [RSA, EC], ids=["RS256", "ES256"])
def test_tokens_signed_by_a_published_key_verify(
    asymmetric: TokenVerifier, key: SigningKey
) -> None:
    token = key.sign(claims("alice", "service_role", restaurant_ids=[str(RESTAURANT)]))
    assert asymmetric.verify(token) == Actor(
        sub="alice", role=Role.SERVICE_ROLE, restaurant_ids=(RESTAURANT,)
    )


def _public_pem() -> bytes:
    return RSA.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


ASYMMETRIC_REJECTED: dict[str, Callable[[], str]] = {
    "unknown-kid": lambda: rsa_key("rsa-unknown").sign(claims("alice")),
    "no-kid": lambda: jwt.encode(claims("alice"), RSA.private, algorithm="RS256"),
    "published-kid-other-key": lambda: rsa_key("rsa-1").sign(claims("alice")),
    "es256-header-rsa-key": lambda: ec_key("rsa-1").sign(claims("alice")),
    "rs256-header-ec-key": lambda: rsa_key("ec-1").sign(claims("alice")),
    # Algorithm confusion: HMAC keyed with the RSA public key, as if it were a shared secret.
    "hs256-keyed-with-the-public-key": lambda: hmac_signed(
        {"alg": "HS256", "kid": "rsa-1"}, claims("alice"), _public_pem()
    ),
    # A symmetric JWK in the set is never used: its algorithm is not RS256/ES256.
    "rs256-header-symmetric-jwk": lambda: hmac_signed(
        {"alg": "RS256", "kid": "oct-1"},
        claims("alice"),
        b"a symmetric key has no place in a JWKS",
    ),
    "expired": lambda: RSA.sign(claims("alice", ttl=-60)),
    "wrong-issuer": lambda: RSA.sign(claims("alice", issuer="https://evil.example.test")),
    "no-issuer": lambda: RSA.sign(claims("alice", issuer=None)),
    "wrong-audience": lambda: EC.sign(claims("alice", audience="anon")),
    "alg-none-with-kid": lambda: unsigned(claims("alice")),
}


@pytest.mark.parametrize("case", ASYMMETRIC_REJECTED)
def test_asymmetric_tokens_are_rejected_unless_a_published_key_signed_them(
    asymmetric: TokenVerifier, case: str
) -> None:
    with pytest.raises(InvalidToken):
        asymmetric.verify(ASYMMETRIC_REJECTED[case]())


def test_the_key_set_is_cached_and_unknown_kids_cannot_flood_the_issuer(
    jwks: JwksServer,
) -> None:
    strangers = [rsa_key().sign(claims("alice")) for _ in range(20)]  # a fresh kid each
    before = len(jwks.requests)
    verifier = jwks_verifier(jwks.url)
    for _ in range(20):
        verifier.verify(RSA.sign(claims("alice")))
    for token in strangers:
        with pytest.raises(InvalidToken):
            verifier.verify(token)
    assert 1 <= len(jwks.requests) - before <= 2


def test_an_unreachable_key_set_is_not_the_callers_fault() -> None:
    with jwks_server(RSA) as server:
        url = server.url
    with pytest.raises(KeysUnavailable):
        jwks_verifier(url).verify(RSA.sign(claims("alice")))


@pytest.mark.parametrize("sub", ["two\nlines", "tab\there", "esc\x1b[31m", "rtl\u202eoverride"])
def test_a_subject_with_control_or_bidi_characters_is_refused(sub: str) -> None:
    """Callers are keyed by newline-joined `role:sub` and restaurants (dispatch.caller_of)."""
    with pytest.raises(InvalidToken):
        TokenVerifier(SETTINGS).verify(hs(valid(sub=sub)))
