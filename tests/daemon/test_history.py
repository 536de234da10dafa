"""The history database: one row per worker run, WAL, counters that only grow, runs adopted."""

import sqlite3

from kvmgpu.daemon.history import History


def test_a_run_from_start_to_end(tmp_path):
    h = History(tmp_path / "state" / "history.db")
    assert h.journal_mode() == "wal"
    run = h.start_run("vm01", "uuid-1", 0, 4242, started=100.0)
    h.update_run(run, memory_used=5 << 20, gpu_seconds=0.5, calls=10)
    h.update_run(run, memory_used=1 << 20, gpu_seconds=1.5, calls=30)    # peak stays
    assert h.open_run("vm01", 4242).id == run
    h.end_run(run, exit_status=0, ended=200.0)
    h.end_run(run, exit_status=9, ended=300.0)                             # only the first end counts
    [r] = h.runs()
    assert (r.vm, r.vgpu_id, r.gpu, r.worker_pid) == ("vm01", "uuid-1", 0, 4242)
    assert (r.started, r.ended, r.exit_status) == (100.0, 200.0, 0)
    assert (r.peak_memory, r.gpu_seconds, r.calls) == (5 << 20, 1.5, 30)
    assert h.open_run("vm01", 4242) is None
    h.close()


def test_runs_newest_first_filtered_and_limited(tmp_path):
    h = History(tmp_path / "history.db")
    for i, vm in enumerate(["a", "b", "a", "a"]):
        h.start_run(vm, f"id-{vm}", 0, 100 + i, started=float(i))
    assert [r.worker_pid for r in h.runs()] == [103, 102, 101, 100]
    assert [r.worker_pid for r in h.runs("a", limit=2)] == [103, 102]
    assert h.runs("zzz") == []


def test_close_open_runs_keeps_adopted_ones(tmp_path):
    h = History(tmp_path / "history.db")
    kept = h.start_run("a", "x", 0, 1)
    gone = h.start_run("b", "y", 1, 2)
    assert h.close_open_runs({kept}, ended=5.0) == 1
    runs = {r.id: r for r in h.runs()}
    assert runs[kept].ended is None
    assert runs[gone].ended == 5.0 and runs[gone].exit_status is None


def test_reopened_database_keeps_rows_and_schema(tmp_path):
    path = tmp_path / "history.db"
    h = History(path)
    h.start_run("a", "x", 0, 1)
    h.close()
    h = History(path)
    assert len(h.runs()) == 1
    h.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in db.execute("PRAGMA table_info(worker_runs)")]
    assert columns == ["id", "vm", "vgpu_id", "gpu", "worker_pid", "started", "ended", "exit_status",
                       "peak_memory", "gpu_seconds", "calls"]
