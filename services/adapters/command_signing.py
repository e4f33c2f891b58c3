"""Records that prove their issuer (issue 11): the API signs each command it publishes, the worker
each result; the worker checks a command's signature before acting on it, the API a result's before
it answers a waiting request. HMAC-SHA256 under a shared key, the key id in a header, several keys
valid at once so a key can be rotated without a stop. Pure: no I/O.

The signed bytes (`canonical_bytes`, format v1) bind the record's purpose (`command` or `result`,
so a signed command copied onto the results topic is no result), the key id, the record's Kafka key
(the order id), its command id header and its value, each length-prefixed (4 bytes, big-endian) so
no two different records share signed bytes. Other headers (rid, reply partition, trace) are not
signed: they change nothing the worker decides. docs/security.md has the scheme and the rotation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from services.adapters.settings import Settings, is_local_environment

HEADER_SIGNATURE = "sig"
HEADER_KEY_ID = "sig.kid"
FORMAT = b"orderstatus-signed-record-v1"
MIN_SECRET_BYTES = 32
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

DEV_KEY_ID = "dev"
DEV_SECRET = b"orderstatus-dev-only-signing-key-0123456789"
"""Public: signs only where the environment is local (dev, test, local); refused elsewhere."""
DEV_KEYS_SETTING = f"{DEV_KEY_ID}:{base64.b64encode(DEV_SECRET).decode()}"


class Purpose(StrEnum):
    COMMAND = "command"
    RESULT = "result"


class SigningKeysRefused(ValueError):
    """The settings give no usable signing keys (the API, the worker and `dlq replay` refuse to
    start on them; the message never contains a secret)."""


@dataclass(frozen=True)
class SigningKeys:
    """The key that signs (`active`) and every key accepted when checking, by key id."""

    active: str
    secrets: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.active not in self.secrets:
            raise SigningKeysRefused(
                f"COMMAND_SIGNING_KEY_ID {self.active!r} is not a key id of COMMAND_SIGNING_KEYS"
            )


def parse_keys(text: str) -> dict[str, bytes]:
    """`kid:base64secret,kid2:base64secret` (standard or URL-safe base64, padding optional)."""
    keys: dict[str, bytes] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kid, sep, encoded = item.partition(":")
        if not sep or not KEY_ID.match(kid):
            raise SigningKeysRefused(
                "COMMAND_SIGNING_KEYS is kid:base64secret[,kid:base64secret]; a key id is 1-64 of "
                "A-Z a-z 0-9 . _ -"
            )
        if kid in keys:
            raise SigningKeysRefused(f"COMMAND_SIGNING_KEYS names key id {kid!r} twice")
        keys[kid] = _secret(kid, encoded.strip())
    return keys


def _secret(kid: str, encoded: str) -> bytes:
    padded = encoded.replace("-", "+").replace("_", "/") + "=" * (-len(encoded) % 4)
    try:
        secret = base64.b64decode(padded, validate=True)
    except (ValueError, binascii.Error):
        raise SigningKeysRefused(f"signing key {kid!r} is not base64") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise SigningKeysRefused(
            f"signing key {kid!r} has {len(secret)} bytes; at least {MIN_SECRET_BYTES} are needed"
        )
    return secret


def signing_keys(settings: Settings) -> SigningKeys:
    """The keys of these settings. Fails closed outside a local environment: no keys configured,
    or the public dev key among them, is refused (as the dev JWT secret is)."""
    text = settings.command_signing_keys.get_secret_value().strip()
    local = is_local_environment(settings.environment)
    if not text:
        if not local:
            raise SigningKeysRefused(
                f"COMMAND_SIGNING_KEYS is not set and ENVIRONMENT={settings.environment!r} is not "
                "a local environment: commands and results cannot be signed or checked"
            )
        text = DEV_KEYS_SETTING
    secrets = parse_keys(text)
    if not secrets:
        raise SigningKeysRefused("COMMAND_SIGNING_KEYS holds no key")
    if not local and any(hmac.compare_digest(s, DEV_SECRET) for s in secrets.values()):
        raise SigningKeysRefused(
            f"COMMAND_SIGNING_KEYS holds the public development key and "
            f"ENVIRONMENT={settings.environment!r} is not a local environment"
        )
    return SigningKeys(settings.command_signing_key_id or next(iter(secrets)), secrets)


def signing_refusal(settings: Settings) -> str | None:
    """Why these settings cannot sign and check records, or None (for start-up checks)."""
    try:
        signing_keys(settings)
    except SigningKeysRefused as exc:
        return str(exc)
    return None


def canonical_bytes(
    purpose: Purpose, kid: str, key: bytes | None, command_id: bytes | None, value: bytes | None
) -> bytes:
    """FORMAT, then purpose, key id, record key, command id header and value, each as a 4-byte
    big-endian length and the bytes (an absent part counts as empty)."""
    parts = (purpose.value.encode(), kid.encode(), key or b"", command_id or b"", value or b"")
    return FORMAT + b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _mac(secret: bytes, signed: bytes) -> bytes:
    return hmac.new(secret, signed, hashlib.sha256).digest()


def signature_headers(
    keys: SigningKeys,
    purpose: Purpose,
    key: bytes | None,
    command_id: bytes | None,
    value: bytes | None,
) -> list[tuple[str, bytes]]:
    """The `sig.kid` and `sig` headers (base64url, unpadded) of a record, under the active key."""
    signed = canonical_bytes(purpose, keys.active, key, command_id, value)
    mac = _mac(keys.secrets[keys.active], signed)
    return [
        (HEADER_KEY_ID, keys.active.encode()),
        (HEADER_SIGNATURE, base64.urlsafe_b64encode(mac).rstrip(b"=")),
    ]


def verification_failure(
    keys: SigningKeys,
    purpose: Purpose,
    key: bytes | None,
    command_id: bytes | None,
    value: bytes | None,
    kid: bytes | None,
    signature: bytes | None,
) -> str | None:
    """Why the record's signature does not prove it came from a holder of one of `keys`, or None
    when it does. The comparison is constant-time."""
    if kid is None or signature is None:
        return "no signature"
    try:
        kid_text = kid.decode("ascii")
    except UnicodeDecodeError:
        return "unknown key id"
    secret = keys.secrets.get(kid_text)
    if secret is None:
        return f"unknown key id {kid_text[:64]!r}" if KEY_ID.match(kid_text) else "unknown key id"
    expected = base64.urlsafe_b64encode(
        _mac(secret, canonical_bytes(purpose, kid_text, key, command_id, value))
    ).rstrip(b"=")
    if not hmac.compare_digest(expected, signature):
        return "bad signature"
    return None
