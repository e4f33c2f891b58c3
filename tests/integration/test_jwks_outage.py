"""A slow or dead JWKS endpoint (a real HTTP server on loopback that hangs or answers 503) does not
stall token verification: the last good key set keeps serving, within a bound, while one refresh
runs in the background; unknown kids refresh at most once per cooldown (issue 10, scenario 5)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from services.adapters.settings import Settings
from services.command_api.auth import InvalidToken, KeysUnavailable, TokenVerifier
from tests.jwks import ISSUER, JwksServer, claims, jwks_server, rsa_key

RSA = rsa_key("rsa-outage")
BOUND_S = 60.0
"""Longest any wait below may take: a bound on a hang, not a performance claim."""


def verifier(server: JwksServer, **policy: float) -> TokenVerifier:
    settings = Settings(
        jwt_secret=SecretStr("a-real-secret-" + "x" * 32),
        environment="test",
        jwt_jwks_url=server.url,
        jwt_issuer=ISSUER,
        **{f"jwt_jwks_{name}": value for name, value in policy.items()},
    )
    return TokenVerifier(settings)


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server(RSA) as running:
        yield running


def token() -> str:
    return RSA.sign(claims(f"alice-{uuid.uuid4().hex[:6]}"))


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_an_expired_key_set_keeps_serving_while_the_endpoint_hangs(server: JwksServer) -> None:
    keys = verifier(server, refresh_s=0.05)
    assert keys.verify(token()).role.value == "authenticated"  # the first fetch
    time.sleep(0.1)  # older than refresh_s now
    server.hanging = True
    before = len(server.requests)

    verified = [keys.verify(token()) for _ in range(20)]

    assert len(verified) == 20
    # One refresh was started and is still hanging: none of the 20 waited for it...
    assert server.in_flight == 1
    assert len(server.requests) == before + 1  # ...and they did not start one each.
    server.release.set()


def test_a_dead_endpoint_is_bridged_up_to_the_bound_then_503(server: JwksServer) -> None:
    keys = verifier(server, refresh_s=0.05, max_stale_s=3.0, unknown_kid_cooldown_s=0.2)
    keys.verify(token())
    fetched_at = time.monotonic()
    server.failing = True
    time.sleep(0.1)
    assert keys.verify(token())  # stale, within the bound: served
    wait_for(lambda: len(server.requests) >= 2, "a background refresh was attempted")

    time.sleep(max(0.0, fetched_at + 3.2 - time.monotonic()))
    with pytest.raises(KeysUnavailable):
        keys.verify(token())  # too stale: the caller is told to retry, not let in on old keys

    server.failing = False

    def back() -> bool:
        try:
            keys.verify(token())
        except KeysUnavailable:
            return False
        return True

    wait_for(back, "the key set came back once the endpoint did")


def test_unknown_kids_refresh_at_most_once_per_cooldown_and_never_queue(
    server: JwksServer,
) -> None:
    random_kids = [rsa_key().sign(claims("mallory")) for _ in range(30)]  # a fresh kid each
    keys = verifier(server, unknown_kid_cooldown_s=5.0, timeout_s=0.3)
    keys.verify(token())
    time.sleep(5.1)  # past the cooldown of the first fetch
    server.hanging = True
    before = len(server.requests)

    for forged in random_kids:
        with pytest.raises(InvalidToken):
            keys.verify(forged)
        assert keys.verify(token())  # known keys keep working meanwhile

    assert len(server.requests) == before + 1
    assert server.in_flight == 1
    server.release.set()


def test_no_key_set_and_a_hanging_endpoint_is_503_not_a_hang(server: JwksServer) -> None:
    server.hanging = True
    keys = verifier(server, timeout_s=0.3)
    for _ in range(10):
        with pytest.raises(KeysUnavailable):
            keys.verify(token())
    assert len(server.requests) == 1  # one fetch, timed out; the cooldown holds the others back
