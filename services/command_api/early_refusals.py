"""Status changes whose outcome the committed order already fixes for good, answered without a
Kafka round trip (issue 9: hot orders; why that is safe: docs/delivery-guarantees.md). Pure: no I/O.

Two facts of the state machine make an outcome final before the worker sees the command:
- an order's version only grows (each applied change adds one), so an `expected_version` below the
  committed one is a stale-version conflict now and at any later point;
- an order in a final status (completed, cancelled, rejected) never changes again, so whatever the
  command, the worker's decision on that row is the same whenever it comes.
`KnownOrders` remembers what this process has seen of recently answered orders, only to tell which
requests are worth reading the committed row for; the row, never the memory, decides.

The row may come from a streaming replica (DATABASE_READ_URL) that lags the primary. A refusal
read there is still the worker's answer: the replica shows a state the primary had, and by the two
facts above a version past `expected_version` stays past it and a final status stays final. A
lagging replica can only miss a refusal (the command then goes to the worker), never invent one.
(One thing a replica can be late for is a revoked staff membership: for its lag, the revoked member
is answered as a read just before the revocation would have answered them.)"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from services.core.decision import Decision, OrderState, decide
from services.core.messages import ChangeStatus, OrderView, Outcome
from services.core.statuses import FINAL_STATUSES

DEFAULT_CAPACITY = 20_000
"""Orders remembered per process (a few MB at most); the oldest entries go first."""


@dataclass(frozen=True, slots=True)
class _Seen:
    version: int
    final: bool


class KnownOrders:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._seen: dict[UUID, _Seen] = {}

    def observe(self, order: OrderView | None) -> None:
        """Remembers `order` if it is the newest state seen of it (None: an outcome without one)."""
        if order is None:
            return
        seen = self._seen.get(order.order_id)
        if seen is not None and seen.version >= order.version:
            return
        if seen is None and len(self._seen) >= self.capacity:
            del self._seen[next(iter(self._seen))]  # the oldest remembered
        self._seen[order.order_id] = _Seen(order.version, order.status in FINAL_STATUSES)

    def worth_checking(self, order_id: UUID, expected_version: int | None) -> bool:
        """Whether the order was seen final, or past `expected_version`."""
        seen = self._seen.get(order_id)
        if seen is None:
            return False
        return seen.final or (expected_version is not None and seen.version > expected_version)

    def __len__(self) -> int:
        return len(self._seen)


def settled_refusal(order: OrderView, command: ChangeStatus) -> Decision | None:
    """The worker's conflict for `command` when the committed `order` (as the caller sees it)
    already fixes it for good: the order is final, or past the expected version. Else None."""
    expected = command.expected_version
    if order.status not in FINAL_STATUSES and (expected is None or expected >= order.version):
        return None
    state = OrderState(
        order.order_id, order.restaurant_id, order.status, order.version, order.updated_at
    )
    decision = decide(state, command, order.updated_at)  # `now` only stamps an applied change
    return decision if decision.outcome is Outcome.CONFLICT else None
