"""A transactional Kafka call that blocks past its bound ends the worker process with status 75 and
a `kafka_call_stuck` line (librdkafka#5456 can block send_offsets_to_transaction for ever); a call
that returns in time leaves it running. Run in a child process, since the watchdog calls os._exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from services.status_worker.kafka import RESTART_EXIT_CODE

CHILD = textwrap.dedent(
    """
    import logging, sys, time
    from confluent_kafka import Consumer, Producer
    from services.status_worker.kafka import TransactionalPublisher

    logging.basicConfig(stream=sys.stdout, format="%(message)s %(evt)s %(call)s")
    nowhere = {"bootstrap.servers": "127.0.0.1:9"}
    publisher = TransactionalPublisher(
        Producer(nowhere), Consumer({**nowhere, "group.id": "g"}), stuck_after_s=0.3
    )
    publisher._bounded("quick_call", lambda: None)
    print("survived the quick call", flush=True)
    publisher._bounded("send_offsets_to_transaction", lambda: time.sleep(float(sys.argv[1])))
    print("survived the slow call", flush=True)
    """
)


def run_child(blocked_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(blocked_s)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_call_blocked_past_its_bound_ends_the_process_for_a_restart() -> None:
    child = run_child(blocked_s=30)
    assert child.returncode == RESTART_EXIT_CODE, child.stderr
    assert "survived the quick call" in child.stdout
    assert "kafka_call_stuck send_offsets_to_transaction" in child.stdout
    assert "survived the slow call" not in child.stdout


def test_a_call_that_returns_in_time_leaves_the_process_alone() -> None:
    child = run_child(blocked_s=0)
    assert child.returncode == 0, child.stderr
    assert "survived the slow call" in child.stdout
