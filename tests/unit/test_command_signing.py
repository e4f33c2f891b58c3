"""Signed commands and results (services/adapters/command_signing.py): what verifies, what does not,
keys from settings (fail-closed outside a local environment), rotation; and where the worker and
the DLQ replay use them (verify_and_decode, result_record, replay_of)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from services.adapters.command_signing import (
    DEV_KEY_ID,
    DEV_KEYS_SETTING,
    HEADER_KEY_ID,
    HEADER_SIGNATURE,
    Purpose,
    SigningKeys,
    SigningKeysRefused,
    canonical_bytes,
    parse_keys,
    signature_headers,
    signing_keys,
    signing_refusal,
    verification_failure,
)
from services.adapters.kafka_records import command_record, signature_failure
from services.adapters.settings import Settings
from services.core.messages import CommandResult, Outcome
from services.core.topics import HEADER_COMMAND_ID
from services.dlq import ParkedMessage, replay_of
from services.status_worker.batch import DeadLetter, Incoming
from services.status_worker.decode import verify_and_decode
from services.status_worker.outputs import result_record
from tests.topics import create_command
from tests.unit.strategies import UNIT_SETTINGS

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
OLD = b"o" * 32
NEW = b"n" * 40
KEYS = SigningKeys("k1", {"k1": OLD})
OTHER = SigningKeys("k1", {"k1": b"x" * 32})  # same key id, another secret

blobs = st.one_of(st.none(), st.binary(max_size=300))


def b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


def settings(**values: object) -> Settings:
    """Settings with these values, whatever the environment variables say (make exports some)."""
    unset = {"environment": "", "command_signing_keys": "", "command_signing_key_id": ""}
    return Settings.model_validate(unset | values)


def check(keys: SigningKeys, headers: list[tuple[str, bytes]], *record: bytes | None) -> str | None:
    found = dict(headers)
    key, command_id, value = record
    return verification_failure(
        keys,
        Purpose.COMMAND,
        key,
        command_id,
        value,
        found.get(HEADER_KEY_ID),
        found.get(HEADER_SIGNATURE),
    )


# ---- the scheme ---------------------------------------------------------------------------------


@UNIT_SETTINGS
@given(key=blobs, command_id=blobs, value=blobs)
def test_a_signed_record_verifies_and_any_change_to_a_signed_part_does_not(
    key: bytes | None, command_id: bytes | None, value: bytes | None
) -> None:
    headers = signature_headers(KEYS, Purpose.COMMAND, key, command_id, value)
    assert check(KEYS, headers, key, command_id, value) is None
    assert check(OTHER, headers, key, command_id, value) == "bad signature"
    flipped = (value or b"") + b"!"
    assert check(KEYS, headers, key, command_id, flipped) == "bad signature"
    assert check(KEYS, headers, key, (command_id or b"") + b"0", value) == "bad signature"
    assert check(KEYS, headers, (key or b"") + b"0", command_id, value) == "bad signature"


@UNIT_SETTINGS
@given(parts=st.lists(st.binary(max_size=20), min_size=3, max_size=3), cut=st.integers(0, 40))
def test_moving_bytes_between_parts_changes_the_signed_bytes(parts: list[bytes], cut: int) -> None:
    """Length prefixes: key `ab` + id `c` never signs the same bytes as key `a` + id `bc`."""
    key, command_id, value = parts
    joined = key + command_id
    cut = min(cut, len(joined))
    moved = (joined[:cut], joined[cut:], value)
    original = canonical_bytes(Purpose.COMMAND, "k", key, command_id, value)
    assert (canonical_bytes(Purpose.COMMAND, "k", *moved) == original) == (cut == len(key))


def test_a_command_signature_is_no_result_signature() -> None:
    headers = dict(signature_headers(KEYS, Purpose.COMMAND, b"k", b"c", b"v"))
    assert (
        verification_failure(
            KEYS,
            Purpose.RESULT,
            b"k",
            b"c",
            b"v",
            headers[HEADER_KEY_ID],
            headers[HEADER_SIGNATURE],
        )
        == "bad signature"
    )


def test_missing_and_unknown_signatures_say_why() -> None:
    headers = signature_headers(KEYS, Purpose.COMMAND, b"k", b"c", b"v")
    assert check(KEYS, [], b"k", b"c", b"v") == "no signature"
    assert check(KEYS, headers[:1], b"k", b"c", b"v") == "no signature"
    elsewhere = SigningKeys("k2", {"k2": OLD})
    assert check(elsewhere, headers, b"k", b"c", b"v") == "unknown key id 'k1'"
    odd = [(HEADER_KEY_ID, b"\xff\x00"), headers[1]]
    assert check(KEYS, odd, b"k", b"c", b"v") == "unknown key id"
    assert check(KEYS, [headers[0], (HEADER_SIGNATURE, b"")], b"k", b"c", b"v") == "bad signature"


def test_the_keys_repr_shows_no_secret() -> None:
    assert "o" * 32 not in repr(KEYS) and "k1" in repr(KEYS)


# ---- keys and rotation --------------------------------------------------------------------------


def test_during_a_rotation_both_keys_verify_and_the_active_one_signs() -> None:
    old_only = signing_keys(settings(environment="prod", command_signing_keys=f"k1:{b64(OLD)}"))
    both = signing_keys(
        settings(
            environment="prod",
            command_signing_keys=SecretStr(f"k1:{b64(OLD)},k2:{b64(NEW)}"),
            command_signing_key_id="k2",
        )
    )
    new_only = signing_keys(settings(environment="prod", command_signing_keys=f"k2:{b64(NEW)}"))
    by_old = signature_headers(old_only, Purpose.COMMAND, b"k", b"c", b"v")
    by_new = signature_headers(both, Purpose.COMMAND, b"k", b"c", b"v")
    assert dict(by_new)[HEADER_KEY_ID] == b"k2"
    assert check(both, by_old, b"k", b"c", b"v") is None  # old key still accepted
    assert check(new_only, by_new, b"k", b"c", b"v") is None
    assert check(new_only, by_old, b"k", b"c", b"v") == "unknown key id 'k1'"  # once removed


def test_the_first_key_signs_unless_one_is_named() -> None:
    keys = signing_keys(
        settings(environment="prod", command_signing_keys=f"a:{b64(OLD)}, b:{b64(NEW)}")
    )
    assert keys.active == "a" and set(keys.secrets) == {"a", "b"}


def test_url_safe_unpadded_base64_is_read() -> None:
    secret = bytes(range(250, 256)) * 6
    text = base64.urlsafe_b64encode(secret).decode().rstrip("=")
    assert parse_keys(f"k:{text}") == {"k": secret}


@pytest.mark.parametrize(
    "text",
    [
        "k1",  # no secret
        "k1:not base64!",
        f"k1:{base64.b64encode(b'short').decode()}",  # under 32 bytes
        f"k 1:{base64.b64encode(OLD).decode()}",  # bad key id
        f"k1:{base64.b64encode(OLD).decode()},k1:{base64.b64encode(NEW).decode()}",  # twice
        ",",  # no key at all
    ],
)
def test_malformed_keys_are_refused_without_showing_the_secret(text: str) -> None:
    with pytest.raises(SigningKeysRefused) as refused:
        signing_keys(settings(environment="prod", command_signing_keys=text))
    assert b64(OLD) not in str(refused.value)


def test_an_active_key_id_that_is_not_configured_is_refused() -> None:
    refusal = signing_refusal(
        settings(
            environment="prod", command_signing_keys=f"k1:{b64(OLD)}", command_signing_key_id="k9"
        )
    )
    assert refusal is not None and "k9" in refusal


@pytest.mark.parametrize("environment", ["dev", "test", "local"])
def test_a_local_environment_without_keys_signs_with_the_dev_key(environment: str) -> None:
    keys = signing_keys(settings(environment=environment))
    assert keys.active == DEV_KEY_ID


@pytest.mark.parametrize("environment", ["", "prod", "staging", "Dev"])
def test_outside_a_local_environment_no_keys_or_the_dev_key_is_refused(environment: str) -> None:
    assert "not set" in (signing_refusal(settings(environment=environment)) or "")
    dev = settings(environment=environment, command_signing_keys=DEV_KEYS_SETTING)
    assert "public development key" in (signing_refusal(dev) or "")
    real = settings(environment=environment, command_signing_keys=f"k1:{b64(OLD)}")
    assert signing_refusal(real) is None


def test_the_unset_defaults_refuse() -> None:
    """What the API and worker see when ENVIRONMENT and COMMAND_SIGNING_KEYS are both unset."""
    defaults = {name: Settings.model_fields[name].default for name in ("environment",)}
    assert signing_refusal(settings(**defaults)) is not None
    assert Settings.model_fields["command_signing_keys"].default.get_secret_value() == ""


# ---- where the services use them -----------------------------------------------------------------


def as_message(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Message:
    return Message(topic="t", partition=2, offset=7, key=key, value=value, headers=headers)


def test_the_worker_acts_only_on_a_command_signed_with_a_key_it_holds() -> None:
    command = create_command(uuid.uuid4())
    key, value, headers = command_record(command, KEYS)
    assert verify_and_decode(as_message(key, value, headers), NOW, KEYS) == Incoming(command, 2, 7)
    for keys, why in ((OTHER, "bad signature"), (SigningKeys("k2", {"k2": OLD}), "unknown key")):
        letter = verify_and_decode(as_message(key, value, headers), NOW, keys)
        assert isinstance(letter, DeadLetter)
        assert letter.reason.startswith(f"unauthenticated: {why}")
        # No outcome: nothing for the caller, no inbox row that would claim the command id.
        assert letter.result is None and letter.actor is None
    unsigned = [h for h in headers if h[0] not in (HEADER_KEY_ID, HEADER_SIGNATURE)]
    letter = verify_and_decode(as_message(key, value, unsigned), NOW, KEYS)
    assert isinstance(letter, DeadLetter) and letter.reason == "unauthenticated: no signature"


def test_a_signed_command_with_another_order_as_key_is_unauthenticated() -> None:
    command = create_command(uuid.uuid4())
    _, value, headers = command_record(command, KEYS)
    moved = as_message(str(uuid.uuid4()).encode(), value, headers)
    assert signature_failure(moved, KEYS, Purpose.COMMAND) == "bad signature"


def test_result_records_are_signed_as_results() -> None:
    result = CommandResult(
        command_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        command_type="create_order",
        outcome=Outcome.APPLIED,
        processed_at=NOW,
    )
    record = result_record("r", result, None, KEYS, duplicate=True)
    headers = [(k, v) for k, v in record.headers if isinstance(v, bytes)]
    message = as_message(record.key, record.value, headers)
    assert dict(headers)[HEADER_COMMAND_ID] == str(result.command_id).encode()
    assert signature_failure(message, KEYS, Purpose.RESULT) is None
    assert signature_failure(message, KEYS, Purpose.COMMAND) == "bad signature"


def test_an_unauthenticated_dead_letter_is_never_replayed() -> None:
    command = create_command(uuid.uuid4())
    _, value, _ = command_record(command, KEYS)

    def parked_as(reason: str) -> ParkedMessage:
        return ParkedMessage(0, 1, None, value, reason, "0:1", str(command.command_id))

    assert replay_of(parked_as("error: refused"), NOW) is not None
    assert replay_of(parked_as("unauthenticated: no signature"), NOW) is None


def test_two_runs_of_one_replay_send_the_same_command() -> None:
    """Same id and same issued_at (the dead letter's parking time): the inbox's key (command_id,
    issued_at) sees one command, whichever day each run happens on (migration 0015)."""
    command = create_command(uuid.uuid4())
    _, value, _ = command_record(command, KEYS)
    parked_at = datetime(2026, 1, 1, 23, 59, tzinfo=UTC)
    parked = ParkedMessage(0, 1, None, value, "error: refused", "0:1", None, parked_at)
    first = replay_of(parked, NOW)
    again = replay_of(parked, NOW + timedelta(days=1))
    assert first is not None and first == again and first.issued_at == parked_at
