"""Which results partition an API process reads (issue 9): with several API processes, each reads
only its own replies instead of every process reading every result.

API_RESULTS_PARTITION:
- `all` (default): read every partition and name none; works with any worker, and each of N
  processes reads all N processes' results.
- `auto`: take the first partition no other process holds, by a PostgreSQL session advisory lock
  per (results topic, partition) held on a connection of its own for the process's life; the lock
  goes with the process (or its connection). More processes than partitions, or a lock lost when
  PostgreSQL restarts, make two processes share a partition: harmless, each resolves only the
  commands it waits for, and reads a little more.
- a number: that partition (an operator's fixed assignment, e.g. one per container).
The worker produces each command's result to the partition its header names."""

from __future__ import annotations

import os
from dataclasses import dataclass

from psycopg import AsyncConnection

from services.adapters.settings import Settings
from services.command_api import queries


@dataclass
class ReplyPartition:
    partition: int | None
    """None: read every partition."""
    _lock: AsyncConnection[tuple[bool]] | None = None

    async def release(self) -> None:
        if self._lock is not None:
            await self._lock.close()
            self._lock = None


async def reply_partition(settings: Settings, partitions: int) -> ReplyPartition:
    choice = settings.api_results_partition
    if choice == "all":
        return ReplyPartition(None)
    if choice != "auto":
        fixed = int(choice)
        if not 0 <= fixed < partitions:
            raise ValueError(f"API_RESULTS_PARTITION={fixed}: the results topic has {partitions}")
        return ReplyPartition(fixed)
    lock: AsyncConnection[tuple[bool]] = await AsyncConnection.connect(
        settings.database_url, autocommit=True
    )
    topic = settings.topics.results
    for partition in range(partitions):
        cursor = await lock.execute(
            queries.TRY_REPLY_PARTITION, {"topic": topic, "partition": partition}
        )
        row = await cursor.fetchone()
        if row is not None and row[0]:
            return ReplyPartition(partition, lock)
    await lock.close()
    return ReplyPartition(os.getpid() % partitions)  # every partition taken: share one
