"""Guards that stop the worker rather than let a bad deploy quietly divert every command."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class DeadLetterGuard:
    """Trips when more than `max_ratio` of the last `window` messages were dead-lettered.

    Needs a full window first, so a single bad message at start-up does not trip it."""

    window: int
    max_ratio: float
    _recent: deque[bool] = field(init=False)
    _dead: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=self.window)

    def observe(self, dead: bool) -> None:
        if len(self._recent) == self.window and self._recent[0]:
            self._dead -= 1
        self._recent.append(dead)
        self._dead += dead

    @property
    def ratio(self) -> float:
        return self._dead / len(self._recent) if self._recent else 0.0

    @property
    def tripped(self) -> bool:
        return len(self._recent) == self.window and self.ratio > self.max_ratio


class DeadLetterRatioExceeded(RuntimeError):
    """Raised to stop the worker; its partitions stay where they are until someone looks."""


class DeadLetterGuardStillTripped(DeadLetterRatioExceeded):
    """Raised at start-up while an earlier trip stands (until `orderstatus worker-ops
    reset-guard`): a restart policy must not restart the worker into the next window."""
