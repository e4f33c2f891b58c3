"""Bearer JWTs: HS256 with JWT_SECRET, RS256/ES256 with the issuer's keys from JWT_JWKS_URL (e.g.
Supabase's `/auth/v1/.well-known/jwks.json`). Signature, `exp`, `nbf`, audience and (when configured)
issuer are checked; the algorithm comes from the key, never from the token alone.

Claims, Supabase-compatible: `sub` (user or integration id), `role` (`authenticated` for staff,
`service_role` for back ends and POS integrations), optional `restaurant_ids` (narrows the token to
those restaurants), `aud`, `exp`. What each may do is PostgreSQL's call (docs/security.md)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import jwt
from jwt import PyJWK
from pydantic import ValidationError

from services.adapters.settings import (
    LOCAL_ENVIRONMENTS,
    Settings,
    dev_secret_refusal,
    is_local_environment,
)

# KeysUnavailable: no usable key set and the endpoint unreachable; not the caller's fault (503).
from services.command_api.jwks import JwksKeys, JwksPolicy, UnknownKey
from services.command_api.jwks import KeysUnavailable as KeysUnavailable
from services.core.messages import DISPLAY_TEXT_PATTERN, Actor, Role

SYMMETRIC = "HS256"
ASYMMETRIC = ("RS256", "ES256")
LEEWAY_S = 5


class InvalidToken(Exception):
    """Deliberately vague: the caller learns only that the token was not accepted."""


class InsecureSettings(ValueError):
    """Settings the API must not run with (services.adapters.settings.dev_secret_refusal)."""


class TokenVerifier:
    """One per process: holds the JWKS key set (services/command_api/jwks.py: refreshed in the
    background, served stale during an outage within a bound, unknown kids rate-limited). HS256
    never touches it."""

    def __init__(self, settings: Settings) -> None:
        refusal = dev_secret_refusal(settings)
        if refusal is not None:
            raise InsecureSettings(refusal)
        secret = settings.jwt_secret.get_secret_value()
        self._secret = secret or None
        self._jwks: JwksKeys | None = None
        if settings.jwt_jwks_url:
            policy = JwksPolicy(
                refresh_s=settings.jwt_jwks_refresh_s,
                max_stale_s=settings.jwt_jwks_max_stale_s,
                unknown_kid_cooldown_s=settings.jwt_jwks_unknown_kid_cooldown_s,
                timeout_s=settings.jwt_jwks_timeout_s,
            )
            self._jwks = JwksKeys(settings.jwt_jwks_url, policy)
            self._jwks.prefetch()
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._required = ["exp", "sub", "role", "aud"] + (["iss"] if self._issuer else [])

    def verify(self, token: str) -> Actor:
        """The caller's claims, or InvalidToken (any reason) / KeysUnavailable (JWKS down)."""
        try:
            key, algorithm = self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": self._required},
                leeway=LEEWAY_S,
            )
            return actor_of(claims)
        except (jwt.PyJWTError, ValidationError, ValueError, TypeError, KeyError) as exc:
            raise InvalidToken from exc

    def _key_for(self, token: str) -> tuple[str | PyJWK, str]:
        """HS256 verifies with the shared secret only; RS256/ES256 with a JWKS key only, whose own
        algorithm must match the header's. `none`, anything else, or a kind of key not configured:
        rejected before any signature check."""
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm == SYMMETRIC and self._secret is not None:
            return self._secret, SYMMETRIC
        kid = header.get("kid")
        if algorithm in ASYMMETRIC and self._jwks is not None and isinstance(kid, str) and kid:
            try:
                return self._jwks.signing_key(kid), str(algorithm)
            except UnknownKey:
                raise InvalidToken from None
        raise InvalidToken


DISPLAY_TEXT = re.compile(DISPLAY_TEXT_PATTERN)


def actor_of(claims: dict[str, Any]) -> Actor:
    sub = claims.get("sub")
    if not isinstance(sub, str) or DISPLAY_TEXT.fullmatch(sub) is None:
        raise InvalidToken  # no control characters: callers are told apart by newline-joined keys
    restaurants = claims.get("restaurant_ids")
    if restaurants is None:
        restaurants = []
    if not isinstance(restaurants, list) or not all(isinstance(r, str) for r in restaurants):
        raise InvalidToken
    return Actor(
        sub=claims["sub"],
        role=Role(claims["role"]),
        restaurant_ids=tuple(UUID(r) for r in restaurants),
    )


def verify_token(token: str, settings: Settings) -> Actor:
    """One-off verification (tools and tests); the API keeps one TokenVerifier."""
    return TokenVerifier(settings).verify(token)


def mint_token(
    settings: Settings,
    *,
    sub: str,
    restaurant_ids: Sequence[UUID] = (),
    role: Role = Role.AUTHENTICATED,
    ttl_seconds: int = 12 * 3600,
) -> str:
    """An HS256 token for the local stack and tests. Without `restaurant_ids` the token is not
    narrowed: staff act for their memberships, a service token for every restaurant. Only in a
    local environment (services.adapters.settings.LOCAL_ENVIRONMENTS): elsewhere tokens come from the
    real issuer."""
    if not is_local_environment(settings.environment):
        raise InsecureSettings(
            f"tokens are minted only in a local environment "
            f"({', '.join(sorted(LOCAL_ENVIRONMENTS))}), not ENVIRONMENT={settings.environment!r}"
        )
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": sub,
        "role": role.value,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if restaurant_ids:
        claims["restaurant_ids"] = [str(r) for r in restaurant_ids]
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=SYMMETRIC)
