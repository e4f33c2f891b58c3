"""The API verifying RS256/ES256 tokens with keys from a JWKS URL (as with Supabase's asymmetric
keys): a second API process configured with a real JWKS endpoint on loopback and an issuer, in front
of the session's worker and database."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.command_api.auth import mint_token
from tests.conftest import Stack
from tests.jwks import ISSUER, claims, ec_key, jwks_server, rsa_key
from tests.stack import ServiceProcess, Tokens, free_port

RSA, EC = rsa_key(), ec_key()
HANG_S = 20.0
"""How long the hanging JWKS endpoint hangs at most: a bound on a hang, not a performance claim."""


@pytest.fixture(scope="module")
def jwks_api(stack: Stack, log_dir: Path) -> Iterator[httpx.Client]:
    with jwks_server(RSA, EC) as jwks:
        api = ServiceProcess(
            "api",
            stack.settings,
            log_dir,
            api_port=free_port(),
            jwt_jwks_url=jwks.url,
            jwt_issuer=ISSUER,
        ).start()
        try:
            url = f"http://127.0.0.1:{api.settings.api_port}"
            with httpx.Client(base_url=url, timeout=15) as client:
                yield client
        finally:
            api.terminate()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_staff_with_an_rs256_token_act_for_their_restaurant(
    jwks_api: httpx.Client, tokens: Tokens
) -> None:
    restaurant, other = uuid.uuid4(), uuid.uuid4()
    tokens.grant("rs-staff", restaurant)
    headers = bearer(RSA.sign(claims("rs-staff")))

    created = jwks_api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers)
    refused = jwks_api.post("/orders", json={"restaurant_id": str(other)}, headers=headers)

    assert created.status_code == 201, created.text
    assert refused.status_code == 403
    changed = jwks_api.patch(
        f"/orders/{created.json()['order_id']}/status", json={"status": "accepted"}, headers=headers
    )
    assert changed.status_code == 200


def test_a_pos_integration_with_an_es256_service_token_is_scoped(
    jwks_api: httpx.Client,
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    headers = bearer(EC.sign(claims("pos-7", "service_role", restaurant_ids=[str(mine)])))
    assert (
        jwks_api.post("/orders", json={"restaurant_id": str(mine)}, headers=headers).status_code
        == 201
    )
    assert (
        jwks_api.post("/orders", json={"restaurant_id": str(theirs)}, headers=headers).status_code
        == 403
    )


def test_unpublished_keys_and_missing_issuers_are_401(
    jwks_api: httpx.Client, tokens: Tokens
) -> None:
    tokens.grant("rs-staff", uuid.uuid4())
    settings_with_issuer = tokens.settings.model_copy(update={"jwt_issuer": ISSUER})
    cases = {
        "unpublished-key": rsa_key().sign(claims("rs-staff")),
        "published-kid-other-key": rsa_key(RSA.kid).sign(claims("rs-staff")),
        "no-issuer": RSA.sign(claims("rs-staff", issuer=None)),
        "hs256-without-issuer": tokens.staff(sub="rs-staff"),
    }
    for name, token in cases.items():
        response = jwks_api.get(f"/orders/{uuid.uuid4()}", headers=bearer(token))
        assert response.status_code == 401, name
    # The shared secret still works next to the keys (as during a Supabase key migration).
    hs256 = mint_token(settings_with_issuer, sub="rs-staff")
    assert jwks_api.get(f"/orders/{uuid.uuid4()}", headers=bearer(hs256)).status_code == 404


def test_hs256_callers_are_served_while_the_jwks_endpoint_hangs(
    stack: Stack, log_dir: Path, tokens: Tokens
) -> None:
    """An API whose JWKS endpoint accepts connections and never answers: a flood of RS256
    requests gets 503 (no keys) without tying up the API, and HS256 requests sent behind the flood
    are answered while the endpoint still hangs (issue 10, scenario 5)."""
    with jwks_server(RSA) as jwks:
        jwks.hanging = True
        api = ServiceProcess(
            "api", stack.settings, log_dir, api_port=free_port(), jwt_jwks_url=jwks.url
        ).start()
        try:
            url = f"http://127.0.0.1:{api.settings.api_port}"
            rs256 = bearer(RSA.sign(claims("rs-staff", issuer=None)))
            hs256 = bearer(tokens.staff(sub="hs-staff"))

            async def flood() -> tuple[list[int], list[int], bool]:
                limits = httpx.Limits(max_connections=200)
                async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
                    order = f"/orders/{uuid.uuid4()}"
                    rs_tasks = [
                        asyncio.create_task(client.get(order, headers=rs256)) for _ in range(80)
                    ]
                    await asyncio.sleep(0.3)  # the flood is in the API first
                    # The endpoint stops hanging after HANG_S whatever happens: an API that made
                    # HS256 callers wait for the key set answers them only after that.
                    ends_hang = threading.Timer(HANG_S, jwks.release.set)
                    ends_hang.start()
                    hs = await asyncio.gather(*(client.get(order, headers=hs256) for _ in range(5)))
                    still_hanging = jwks.in_flight > 0 and not jwks.release.is_set()
                    # The flood is answered while the endpoint still hangs (HS256 callers, verified
                    # on the event loop, may well be answered before it).
                    rs = await asyncio.gather(*rs_tasks)
                    still_hanging = still_hanging and not jwks.release.is_set()
                    jwks.release.set()
                    ends_hang.cancel()
                    return [r.status_code for r in rs], [r.status_code for r in hs], still_hanging

            rs_codes, hs_codes, answered_while_hanging = asyncio.run(flood())
        finally:
            api.terminate()
    assert hs_codes == [404] * 5  # authenticated (the order does not exist)
    assert answered_while_hanging
    assert set(rs_codes) <= {503, 404}, rs_codes
    assert 503 in rs_codes
