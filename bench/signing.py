"""Cost per command of signing and checking (issue 11, docs/security.md): us per signed command
record (what the API adds per command), per check of a command (the worker) and of a result (the
API), for a typical command and result. Pure CPU, no services; prints figures, asserts nothing.

    python -m bench.signing [--rounds 20000]"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import Message

from services.adapters.command_signing import Purpose, SigningKeys, signature_headers
from services.adapters.kafka_records import command_record, signature_failure
from services.core.messages import Actor, ChangeStatus, CommandResult, Outcome, Role, encode
from services.core.statuses import OrderStatus
from services.status_worker.outputs import result_record

KEYS = SigningKeys("bench", {"bench": b"k" * 32})


def typical_command() -> ChangeStatus:
    return ChangeStatus(
        command_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        status=OrderStatus.ACCEPTED,
        expected_version=3,
        reason="customer asked for no onions",
        actor=Actor(sub="pos-terminal-17", role=Role.SERVICE_ROLE, restaurant_ids=(uuid.uuid4(),)),
        rid=uuid.uuid4().hex,
        issued_at=datetime.now(UTC),
    )


def per_call_us(call: Callable[[], object], rounds: int) -> float:
    """Best of 5 runs of `rounds` calls, in us per call (the least disturbed on a shared machine)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            call()
        best = min(best, time.perf_counter() - started)
    return best / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    rounds = parser.parse_args().rounds

    command = typical_command()
    record = command_record(command, KEYS)
    headers: list[tuple[str, str | bytes | None]] = [*record.headers]
    consumed = Message(
        topic="c", partition=0, offset=0, key=record.key, value=record.value, headers=headers
    )
    result = CommandResult(
        command_id=command.command_id,
        order_id=command.order_id,
        command_type=command.type,
        outcome=Outcome.APPLIED,
        processed_at=datetime.now(UTC),
    )
    out = result_record("r", result, None, KEYS)
    result_message = Message(
        topic="r",
        partition=0,
        offset=0,
        key=out.key,
        value=out.value,
        headers=[(k, v) for k, v in out.headers if isinstance(v, bytes)],
    )
    assert signature_failure(consumed, KEYS, Purpose.COMMAND) is None
    assert signature_failure(result_message, KEYS, Purpose.RESULT) is None

    command_id = str(command.command_id).encode()
    sign = per_call_us(
        lambda: signature_headers(KEYS, Purpose.COMMAND, record.key, command_id, record.value),
        rounds,
    )
    check = per_call_us(lambda: signature_failure(consumed, KEYS, Purpose.COMMAND), rounds)
    sign_result = per_call_us(
        lambda: signature_headers(KEYS, Purpose.RESULT, out.key, command_id, out.value), rounds
    )
    check_result = per_call_us(
        lambda: signature_failure(result_message, KEYS, Purpose.RESULT), rounds
    )
    encoding = per_call_us(lambda: encode(command), rounds)
    print(f"typical command: {len(record.value)} value bytes; its result {len(out.value)} bytes")
    print(f"sign a command (API):             {sign:6.2f} us")
    print(f"check a command (worker):         {check:6.2f} us")
    print(f"sign a result (worker):           {sign_result:6.2f} us")
    print(f"check a result (API):             {check_result:6.2f} us")
    total = sign + check + sign_result + check_result
    print(f"per command, all four:            {total:6.2f} us")
    print(f"for scale, encoding the command:  {encoding:6.2f} us ({total / encoding:.2f}x)")


if __name__ == "__main__":
    main()
