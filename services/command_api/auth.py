"""Bearer JWTs (HS256 with JWT_SECRET), Supabase-style claims.

Claims: `sub` (user or integration id), `role` (`authenticated` for staff, `service_role` for
trusted back ends), `restaurant_ids` (the restaurants the caller may act for), `aud`, `exp`, `iat`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from uuid import UUID

import jwt
from pydantic import ValidationError

from services.core.messages import Actor, Role
from services.core.settings import Settings

ALGORITHMS = ["HS256"]


class InvalidToken(Exception):
    """Deliberately vague: the caller learns only that the token was not accepted."""


def verify_token(token: str, settings: Settings) -> Actor:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=ALGORITHMS,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "role"]},
            leeway=5,
        )
        return Actor(
            sub=claims["sub"],
            role=Role(claims["role"]),
            restaurant_ids=tuple(UUID(str(r)) for r in claims.get("restaurant_ids") or ()),
        )
    except (jwt.PyJWTError, ValidationError, ValueError, TypeError, KeyError) as exc:
        raise InvalidToken from exc


def mint_token(
    settings: Settings,
    *,
    sub: str,
    restaurant_ids: Sequence[UUID] = (),
    role: Role = Role.AUTHENTICATED,
    ttl_seconds: int = 12 * 3600,
) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": sub,
        "role": role.value,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
        "restaurant_ids": [str(r) for r in restaurant_ids],
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHMS[0])
