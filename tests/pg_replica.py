"""A PostgreSQL primary and its streaming replica of the tests' own, from Debian's binaries, on free
loopback ports in a temporary directory (never the shared cluster): initdb, then
`pg_basebackup -R` for the standby. For tests of DATABASE_READ_URL (test_read_replica.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.stack import free_port

BOUND_S = 30.0
"""Longest wait for a server to start or a change to replay: a bound on a hang."""


def bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb (deploy/local/postgres.sh install)")
    return found[-1].parent


def _as_owner(*command: str | Path) -> None:
    """As the `postgres` OS user when root (initdb and postgres refuse to run as root)."""
    argv = [str(part) for part in command]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=BOUND_S * 2, cwd="/")


@dataclass
class StreamingPair:
    root: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="orderstatus-replica-"))
    )
    primary_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)

    def url(self, port: int, user: str = "postgres", database: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{port}/{database}"

    @property
    def primary_dir(self) -> Path:
        return self.root / "primary"

    @property
    def replica_dir(self) -> Path:
        return self.root / "replica"

    def start(self) -> None:
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        bin_ = bindir()
        _as_owner(bin_ / "initdb", "-D", self.primary_dir, "-U", "postgres", "--auth=trust")
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "listen_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 4\n"
                "hot_standby = on\nfsync = off\n"
            )
        self._start(self.primary_dir, self.primary_port)
        _as_owner(
            bin_ / "pg_basebackup",
            "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", self.replica_dir, "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        self._start(self.replica_dir, self.replica_port)

    def _start(self, datadir: Path, port: int) -> None:
        _as_owner(
            bindir() / "pg_ctl", "-D", datadir, "-l", datadir.parent / f"{datadir.name}.log",
            "-o", f"-p {port} -k {self.root}", "-w", "-t", str(int(BOUND_S)), "start",
        )  # fmt: skip

    def stop(self) -> None:
        for datadir in (self.replica_dir, self.primary_dir):
            if (datadir / "postmaster.pid").exists():
                _as_owner(bindir() / "pg_ctl", "-D", datadir, "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_replayed(self) -> None:
        """Until the replica has replayed everything the primary has written so far (the insert
        position: a commit may still sit in the WAL buffers, short of pg_current_wal_lsn())."""
        with psycopg.connect(self.url(self.primary_port), autocommit=True) as primary:
            row = primary.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
        assert row is not None
        target = row[0]
        deadline = time.monotonic() + BOUND_S
        with psycopg.connect(self.url(self.replica_port), autocommit=True) as replica:
            while True:
                done = replica.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
                if done == (True,):
                    return
                assert time.monotonic() < deadline, "the replica never caught up"
                time.sleep(0.05)

    def pause_replay(self, paused: bool = True) -> None:
        with psycopg.connect(self.url(self.replica_port), autocommit=True) as replica:
            replica.execute(
                "SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()"
            )
