"""Usage history: one row per worker run, in SQLite under the state directory.

The daemon rebuilds everything else from libvirt when it starts; this is the one thing it keeps.
A run is opened when a worker starts, its counters are raised while it runs (peak memory, GPU
seconds, calls) and it is closed when the worker ends. A daemon that adopts a running worker
carries on with the run its predecessor opened.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS worker_runs (
    id           INTEGER PRIMARY KEY,
    vm           TEXT    NOT NULL,
    vgpu_id      TEXT    NOT NULL,
    gpu          INTEGER NOT NULL,
    worker_pid   INTEGER,
    started      REAL    NOT NULL,
    ended        REAL,
    exit_status  INTEGER,
    peak_memory  INTEGER NOT NULL DEFAULT 0,
    gpu_seconds  REAL    NOT NULL DEFAULT 0,
    calls        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS worker_runs_vm ON worker_runs (vm, started);
"""

_COLUMNS = ("id", "vm", "vgpu_id", "gpu", "worker_pid", "started", "ended", "exit_status",
            "peak_memory", "gpu_seconds", "calls")


@dataclass(frozen=True)
class Run:
    """One worker run. `ended` and `exit_status` are None while it runs; `exit_status` also
    stays None for a worker that ended while no daemon was its parent (nobody saw its status)."""

    id: int
    vm: str
    vgpu_id: str
    gpu: int
    worker_pid: int | None
    started: float
    ended: float | None
    exit_status: int | None
    peak_memory: int
    gpu_seconds: float
    calls: int


class History:
    """The history database. Safe to use from several threads (one connection, one lock)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema version {version}, newer than this kvmgpu's "
                                   f"{SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def journal_mode(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA journal_mode").fetchone()[0]

    def start_run(self, vm: str, vgpu_id: str, gpu: int, worker_pid: int | None,
                  started: float | None = None) -> int:
        """Open a run for a worker that just started; returns its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO worker_runs (vm, vgpu_id, gpu, worker_pid, started) VALUES (?, ?, ?, ?, ?)",
                (vm, vgpu_id, gpu, worker_pid, time.time() if started is None else started))
            assert cur.lastrowid is not None  # an INSERT sets it
            return cur.lastrowid

    def update_run(self, run_id: int, memory_used: int, gpu_seconds: float, calls: int) -> None:
        """Raise a run's counters: peak memory only grows; GPU seconds and calls are the worker's
        running totals."""
        with self._lock:
            self._db.execute(
                "UPDATE worker_runs SET peak_memory = MAX(peak_memory, ?), gpu_seconds = MAX(gpu_seconds, ?),"
                " calls = MAX(calls, ?) WHERE id = ?",
                (int(memory_used), float(gpu_seconds), int(calls), run_id))

    def end_run(self, run_id: int, exit_status: int | None, ended: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE worker_runs SET ended = ?, exit_status = ? WHERE id = ? AND ended IS NULL",
                (time.time() if ended is None else ended, exit_status, run_id))

    def open_run(self, vm: str, worker_pid: int) -> Run | None:
        """The run still open for this VM's worker `worker_pid` (the one an adopting daemon continues)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM worker_runs WHERE vm = ? AND worker_pid = ? AND ended IS NULL"
                " ORDER BY id DESC LIMIT 1", (vm, worker_pid)).fetchone()
        return Run(*row) if row else None

    def close_open_runs(self, keep: set[int], ended: float | None = None) -> int:
        """Close every open run not in `keep` (their workers ended while no daemon watched);
        returns how many were closed."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM worker_runs WHERE ended IS NULL")
                   if r[0] not in keep]
            for run_id in ids:
                self._db.execute("UPDATE worker_runs SET ended = ? WHERE id = ?",
                                 (time.time() if ended is None else ended, run_id))
        return len(ids)

    def runs(self, vm: str | None = None, limit: int = 50) -> list[Run]:
        """The latest runs, newest first; only `vm`'s when given."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM worker_runs"
        args: tuple = ()
        if vm is not None:
            query += " WHERE vm = ?"
            args = (vm,)
        query += " ORDER BY started DESC, id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, args + (limit,)).fetchall()
        return [Run(*row) for row in rows]
