"""Opt-in phase trace of synchronous calls: `KVMGPU_TRACE=PATH` on the guest, the worker, or both.

Each side appends (tag, perf_counter_ns) at its phase boundaries and writes them at exit to
`PATH.<side>.<pid>` (one "tag ns" per line); `python -m kvmgpu_wire.trace PATH` merges the files
of both sides (perf_counter_ns is CLOCK_MONOTONIC, common to the processes of one machine) and
prints the median µs per phase of the traced calls. Off (no variable), the cost is one check of a
module-level bool at each boundary. At most KVMGPU_TRACE_N stamps per process (default 200000).

Guest stamps: g0 call start, g1 frame(s) sent, g2 reply bytes received, gx (DtoH) bytes copied out
of the window, g3 call done.
Worker stamps: w0 bytes received, w1 queued launches of the read done, w2 call decoded,
w3 gate's synchronizing() done (only with a gate, before a waiting backend call),
w4 handler done, w5 reply sent.
"""

from __future__ import annotations

import atexit
import os
import sys
from time import perf_counter_ns

PATH = os.environ.get("KVMGPU_TRACE") or ""
ON = bool(PATH)
LIMIT = int(os.environ.get("KVMGPU_TRACE_N") or 200000)
_stamps: list = []
_side = ["guest"]


def side(name: str) -> None:
    """Name this process's file (guest or worker)."""
    _side[0] = name


def mark(tag: str) -> None:
    if len(_stamps) < LIMIT:
        _stamps.append((tag, perf_counter_ns()))


def mark_at(tag: str, ns: int) -> None:
    if len(_stamps) < LIMIT:
        _stamps.append((tag, ns))


def _dump() -> None:
    if not _stamps:
        return
    with open(f"{PATH}.{_side[0]}.{os.getpid()}", "w") as f:
        f.write("".join(f"{t} {ns}\n" for t, ns in _stamps))


if ON:
    atexit.register(_dump)


# ------------------------------------------------------------------------------------------ analyzer

PHASES = (  # (from, to, what)
    ("gh", "g0", "guest: bulk copy into the window before the call"),
    ("g0", "g1", "guest: driver+client, pack and send"),
    ("g1", "w0", "hop guest -> worker (socket, wake-up)"),
    ("w0", "w1", "worker: queued launches in the read (gate.before_launch, launch)"),
    ("w1", "w2", "worker: decode the call"),
    ("w2", "w3", "worker: dispatch up to the gate's synchronizing()"),
    ("w3", "w4", "worker: backend call (the GPU wait)"),
    ("w2", "w4", "worker: dispatch (handler, backend, gate)"),
    ("w4", "w5", "worker: reply pack + send"),
    ("w5", "g2", "hop worker -> guest (socket, wake-up)"),
    ("g2", "gx", "guest: decode reply, copy out of the window (DtoH)"),
    ("g2", "g3", "guest: decode reply, return"),
    ("g0", "g3", "total, as the guest sees it"),
)


def load(prefix: str) -> list:
    d = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix) + "."
    rows = []
    for name in os.listdir(d):
        if name.startswith(base + "guest.") or name.startswith(base + "worker."):
            with open(os.path.join(d, name)) as f:
                rows += [(int(ns), t) for t, ns in (line.split() for line in f if line.strip())]
    rows.sort()
    return rows


def calls(rows: list) -> list:
    """One dict tag -> ns per guest call (g0..g3; "op" its op number; "gh" the start of the
    bulk copy it ends), with the worker's stamps in between (the last of each tag: a read may
    carry earlier queued work)."""
    out, cur, gh = [], None, None
    for ns, t in rows:
        if t == "gh":
            gh = ns
        elif t.startswith("g0"):
            cur = {"g0": ns, "op": t[3:]}
            if gh is not None:
                cur["gh"], gh = gh, None
        elif cur is not None:
            if t == "w0" and "w1" in cur:  # a second read within one call: start over on the worker
                for k in ("w0", "w1", "w2", "w3", "w4", "w5"):
                    cur.pop(k, None)
            cur[t] = ns
            if t == "g3":
                out.append(cur)
                cur = None
    return out


def report(prefix: str) -> str:
    from .protocol import Op
    every = calls(load(prefix))
    lines = []
    for op in sorted({c["op"] for c in every}):
        cs = [c for c in every if c["op"] == op]
        name = Op(int(op)).name if op.isdigit() else op
        lines.append(f"{name}: {len(cs)} traced calls; median µs per phase")
        lines += _phases(cs)
    return "\n".join(lines)


def _phases(cs: list) -> list:
    lines = []
    for a, b, what in PHASES:
        v = sorted((c[b] - c[a]) / 1000 for c in cs if a in c and b in c and c[b] >= c[a])
        if v:
            lines.append(f"  {a}->{b} {v[len(v) // 2]:8.2f}  (n={len(v)}, p10 {v[len(v) // 10]:.2f}, "
                         f"p90 {v[len(v) * 9 // 10]:.2f})  {what}")
    return lines


if __name__ == "__main__":  # python -m kvmgpu_wire.trace PATH
    print(report(sys.argv[1]))
