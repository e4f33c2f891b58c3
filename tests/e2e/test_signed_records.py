"""Commands that prove their issuer, results that prove theirs (issue 11, docs/security.md), against
the real Kafka and PostgreSQL: a command produced straight onto the commands topic without a valid
signature is dead-lettered as `unauthenticated` and changes nothing; a forged result never answers
a waiting request; during a key rotation the old key is accepted while it is configured."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from services.adapters.command_signing import HEADER_KEY_ID, HEADER_SIGNATURE, Purpose, SigningKeys
from services.adapters.kafka_records import command_record, header
from services.adapters.settings import Settings
from services.core.messages import (
    ChangeStatus,
    CommandResult,
    OrderView,
    Outcome,
    Role,
    decode_command,
    encode,
)
from services.core.statuses import OrderStatus
from services.core.topics import HEADER_COMMAND_ID, HEADER_DLQ_REASON
from tests.conftest import Stack
from tests.e2e.test_api_holes import bearer
from tests.stack import ORDERSTATUS, ServiceProcess, Tokens, isolated_settings, settings_env
from tests.topics import TEST_KEYS, change_command, produce, read_topic, signed

FORGER = SigningKeys(TEST_KEYS.active, {TEST_KEYS.active: b"f" * 32})
"""The stack's key id with a secret the forger made up."""
OLD = SigningKeys("2026-old", {"2026-old": b"o" * 32})
NEW = SigningKeys("2026-new", {"2026-new": b"n" * 32})


def keys_setting(*keys: SigningKeys) -> SecretStr:
    return SecretStr(
        ",".join(
            f"{kid}:{base64.b64encode(secret).decode()}"
            for k in keys
            for kid, secret in k.secrets.items()
        )
    )


def unsigned(
    record: tuple[bytes, bytes, list[tuple[str, bytes]]],
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    key, value, headers = record
    return key, value, [h for h in headers if h[0] not in (HEADER_KEY_ID, HEADER_SIGNATURE)]


def dead_letter_reasons(
    settings: Settings, command_ids: set[str], timeout: float = 30
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        reasons = {
            (header(m, HEADER_COMMAND_ID) or b"").decode(): (
                header(m, HEADER_DLQ_REASON) or b""
            ).decode()
            for m in read_topic(settings, settings.topics.dead_letters)
        }
        found = {c: r for c, r in reasons.items() if c in command_ids}
        if len(found) == len(command_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def outcome_of(settings: Settings, command_id: uuid.UUID, timeout: float = 30) -> str | None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(settings.admin_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT outcome FROM command_outcomes WHERE command_id = %s", (command_id,)
            ).fetchone()
            if row is not None or time.monotonic() > deadline:
                return None if row is None else str(row[0])
            time.sleep(0.1)


def test_a_command_without_a_valid_signature_is_dead_lettered_and_changes_nothing(
    api: httpx.Client, tokens: Tokens, stack: Stack
) -> None:
    """The issue's own attack: a record claiming `service_role` cancels another restaurant's order."""
    restaurant = uuid.uuid4()
    headers = tokens.headers(restaurant)
    created = api.post("/orders", json={"restaurant_id": str(restaurant)}, headers=headers)
    assert created.status_code == 201, created.text
    order_id = uuid.UUID(created.json()["order_id"])

    def cancel() -> ChangeStatus:
        command = change_command(order_id, "cancelled")
        assert command.actor.role is Role.SERVICE_ROLE
        return command

    none, forged, unknown, control = cancel(), cancel(), cancel(), cancel()
    records = [
        unsigned(command_record(none, TEST_KEYS)),
        command_record(forged, FORGER),
        command_record(unknown, OLD),
    ]
    produce(stack.settings, stack.settings.topics.commands, records)
    reasons = dead_letter_reasons(
        stack.settings, {str(c.command_id) for c in (none, forged, unknown)}
    )
    assert reasons == {
        str(none.command_id): "unauthenticated: no signature",
        str(forged.command_id): "unauthenticated: bad signature",
        str(unknown.command_id): "unauthenticated: unknown key id '2026-old'",
    }
    # Never applied, no outcome for anyone: the order is as it was, no inbox row claims the ids.
    order = api.get(f"/orders/{order_id}", headers=headers).json()
    assert (order["status"], order["version"]) == ("pending", 1)
    for command in (none, forged, unknown):
        assert outcome_of(stack.settings, command.command_id, timeout=0) is None
    results = {
        (header(m, HEADER_COMMAND_ID) or b"").decode()
        for m in read_topic(stack.settings, stack.settings.topics.results)
    }
    assert not results & set(reasons)
    # Nor can an operator's replay launder them: it would sign them with the operator's key.
    replay = subprocess.run(
        [ORDERSTATUS, "dlq", "replay", "--all", "--reason", "unauthenticated"],
        env=settings_env(stack.settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.count("skipped: not replayable (unauthenticated") >= 3, replay.stdout
    assert " replayed " not in replay.stdout
    # The same cancel, signed with the stack's key, is applied: the refusals were the signatures.
    produce(stack.settings, stack.settings.topics.commands, [command_record(control, TEST_KEYS)])
    assert outcome_of(stack.settings, control.command_id) == "applied"
    assert api.get(f"/orders/{order_id}", headers=headers).json()["status"] == "cancelled"


@pytest.fixture
def no_worker(base_settings: Settings) -> Iterator[Settings]:
    with isolated_settings(base_settings, api_reply_timeout_s=3.0) as settings:
        yield settings


Raw = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def result_of(command: ChangeStatus, outcome: Outcome) -> Raw:
    result = CommandResult(
        command_id=command.command_id,
        order_id=command.order_id,
        command_type="change_status",
        outcome=outcome,
        order=OrderView(
            order_id=command.order_id,
            restaurant_id=uuid.uuid4(),
            status=OrderStatus.ACCEPTED,
            version=2,
            updated_at=datetime.now(UTC),
        )
        if outcome is Outcome.APPLIED
        else None,
        processed_at=datetime.now(UTC),
    )
    headers = [(HEADER_COMMAND_ID, str(command.command_id).encode())]
    return str(command.order_id).encode(), encode(result), headers


def forgeries(command: ChangeStatus) -> list[Raw]:
    """Results claiming the order does not exist: unsigned, signed with a made-up key, and signed
    as a command with the real key (what copying a signed command onto the results topic gives)."""
    raw = result_of(command, Outcome.NOT_FOUND)
    return [raw, signed(raw, FORGER, Purpose.RESULT), signed(raw, TEST_KEYS, Purpose.COMMAND)]


def command_for(settings: Settings, order_id: uuid.UUID, deadline_s: float = 20) -> ChangeStatus:
    """The command the API published for `order_id` (read back from the commands topic)."""
    stop_at = time.monotonic() + deadline_s
    while time.monotonic() < stop_at:
        for message in read_topic(settings, settings.topics.commands, committed_only=False):
            command = decode_command(message.value())
            if isinstance(command, ChangeStatus) and command.order_id == order_id:
                return command
        time.sleep(0.2)
    raise TimeoutError(f"no command published for {order_id}")


def test_a_forged_result_does_not_answer_a_waiting_request(
    no_worker: Settings, log_dir: Path
) -> None:
    """No worker runs: only the forger answers. The forgeries are ignored (logged, counted) and the
    request times out (504); a result signed with the workers' key does answer (200, not 404)."""
    settings = no_worker
    api = ServiceProcess("api", settings, log_dir).start()
    token = Tokens(settings).pos(uuid.uuid4())

    def request(order_id: uuid.UUID, answers: list[httpx.Response]) -> threading.Thread:
        url = f"http://127.0.0.1:{settings.api_port}/orders/{order_id}/status"
        sending = threading.Thread(
            target=lambda: answers.append(
                httpx.patch(url, json={"status": "accepted"}, headers=bearer(token), timeout=30)
            )
        )
        sending.start()
        return sending

    try:
        forged_only, then_genuine = uuid.uuid4(), uuid.uuid4()
        first: list[httpx.Response] = []
        sending = request(forged_only, first)
        produce(settings, settings.topics.results, forgeries(command_for(settings, forged_only)))
        sending.join(30)
        assert [a.status_code for a in first] == [504], [a.text for a in first]

        second: list[httpx.Response] = []
        sending = request(then_genuine, second)
        command = command_for(settings, then_genuine)
        genuine = signed(result_of(command, Outcome.APPLIED), TEST_KEYS, Purpose.RESULT)
        produce(settings, settings.topics.results, [*forgeries(command), genuine])
        sending.join(30)
        assert [a.status_code for a in second] == [200], [a.text for a in second]
        assert second[0].json()["version"] == 2

        assert api.logs().count('"evt":"result_unauthenticated"') == 6, api.logs()[-3000:]
        metrics = httpx.get(f"http://127.0.0.1:{settings.api_port}/metrics").text
        assert "orderstatus_api_unauthenticated_results_total 6.0" in metrics
    finally:
        api.terminate()


def test_during_a_key_rotation_the_old_key_is_accepted_while_configured(
    base_settings: Settings, log_dir: Path
) -> None:
    with isolated_settings(base_settings) as settings:
        rotating = {
            "command_signing_keys": keys_setting(OLD, NEW),
            "command_signing_key_id": NEW.active,
            "worker_metrics_port": 0,
        }
        # Changes of orders that do not exist: `not_found` outcomes, nothing to set up.
        by_old = change_command(uuid.uuid4(), "accepted")
        by_new = change_command(uuid.uuid4(), "accepted")
        worker = ServiceProcess("worker", settings, log_dir, **rotating).start()
        try:
            produce(
                settings,
                settings.topics.commands,
                [command_record(by_old, OLD), command_record(by_new, NEW)],
            )
            assert outcome_of(settings, by_old.command_id) == "not_found"
            assert outcome_of(settings, by_new.command_id) == "not_found"
        finally:
            worker.terminate()
        # The worker signed its results with the active (new) key.
        kids = {header(m, HEADER_KEY_ID) for m in read_topic(settings, settings.topics.results)}
        assert kids == {NEW.active.encode()}

        # The old key removed: what it signs is refused from now on.
        late = change_command(uuid.uuid4(), "accepted")
        new_only = {**rotating, "command_signing_keys": keys_setting(NEW)}
        worker = ServiceProcess("worker", settings, log_dir, **new_only).start()
        try:
            produce(settings, settings.topics.commands, [command_record(late, OLD)])
            reasons = dead_letter_reasons(settings, {str(late.command_id)})
            assert reasons == {str(late.command_id): "unauthenticated: unknown key id '2026-old'"}
            assert outcome_of(settings, late.command_id, timeout=0) is None
        finally:
            worker.terminate()


def test_the_worker_refuses_to_start_without_signing_keys_outside_a_local_environment(
    base_settings: Settings, log_dir: Path
) -> None:
    with isolated_settings(base_settings) as settings:
        for kind in ("worker", "api"):
            service = ServiceProcess(
                kind, settings, log_dir, environment="prod", jwt_secret=SecretStr("x" * 40)
            ).start(wait=False)
            assert service.process is not None
            assert service.process.wait(60) != 0
            assert "COMMAND_SIGNING_KEYS is not set" in service.logs(), service.logs()[-2000:]
