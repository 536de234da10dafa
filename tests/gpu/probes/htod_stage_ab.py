"""Synchronous host-to-device copies (benchgpu's loop: up to 20 cuMemcpyHtoD from pageable memory,
then one cuCtxSynchronize) with the guest's staging laid out one way and another in turn, in one
guest process against one worker process, native cuda-bindings beside them. Between ways the
session lays its window out again. GB/s, and the ratio to native. Run on the GPU machine from the
repository root: `PYTHONPATH=guest-agent:. python3 tests/gpu/probes/htod_stage_ab.py`
(ROUNDS=n, SIZES=1,16,64 in MiB; WAYS=steal or WAYS=quiet for the two trials below, not kept)."""
import ctypes
import itertools
import os
import sys
import threading
import time
sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

MiB = 1 << 20
SIZES = [int(s) * MiB for s in os.environ.get("SIZES", "1,16,64").split(",")]
_, stop = B.loopback_worker(max(SIZES) + 64 * MiB)
from cuda.bindings import driver as nat  # noqa: E402
from kvmgpu_guest import client, driver as cu  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "9"))


def stealing(piece: int, helpers: int):
    """A `client._copy` whose copies under two COPY_PIECEs go in `piece`-byte pieces, each taken by
    whichever of this thread and `helpers` pool threads is free (none waits for a helper to wake)."""
    plain = client._copy

    def copy(dst, dpos, src, spos, n):
        d, s = client._address(dst), client._address(src)
        if n >= 2 * client.COPY_PIECE or n < 2 * piece or d is None or s is None:
            return plain(dst, dpos, src, spos, n)
        d, s, count, taken = d + dpos, s + spos, (n + piece - 1) // piece, itertools.count()

        def take() -> None:
            while (i := next(taken)) < count:
                ctypes.memmove(d + i * piece, s + i * piece, min(piece, n - i * piece))

        def helper(busy) -> None:
            with busy:  # held while it may copy: the caller waits on it at the end
                take()
        busy = [threading.Lock() for _ in range(helpers)]
        pool = client._get_pool(max(helpers, client.COPY_THREADS - 1))
        for lock in busy:
            pool.submit(helper, lock)
        take()
        for lock in busy:
            with lock:
                pass
    return copy


def quiet(limit: int):
    """A `Session._htod_staged` that, for a copy up to `limit` bytes, first waits until the host has
    done every staged copy, so that no DMA reads the other slot while this one is filled."""
    plain = client.Session._htod_staged

    def staged(self, dst, src):
        if len(src) <= limit and self._staged:
            last, give_up = self._staged[-1], time.perf_counter() + 1
            while (self._done[0] - last) & 0xFFFFFFFF >= 0x80000000:
                if time.perf_counter() > give_up:
                    raise RuntimeError("the host never said the staged copies were done")
            self._staged.clear()
        return plain(self, dst, src)
    return staged


# a way: {name in kvmgpu_guest.client, or "Session.<name>": value}, set for its turn
WAYS = {"native": None,
        "as is": {},
        "1 MiB slots, the ring from 8 MiB (ninth session)": {"STAGE_CHUNK": MiB},
        "4 MiB slots, the ring from 8 MiB": {"STAGE_CHUNK": 4 * MiB},
        "4 MiB slots, all staged": {"STAGE_CHUNK": 4 * MiB, "STAGE_MAX": 1 << 62},
        "8 MiB slots": {"STAGE_CHUNK": 8 * MiB},
        "32 MiB slots": {"STAGE_CHUNK": 32 * MiB}}
if os.environ.get("WAYS") == "steal":
    WAYS = {"native": None, "as is": {},
            "512 KiB pieces": {"COPY_PIECE": MiB // 2},
            "steal 256K, 1 helper": {"_copy": stealing(256 << 10, 1)},
            "steal 128K, 1 helper": {"_copy": stealing(128 << 10, 1)},
            "steal 128K, 2 helpers": {"_copy": stealing(128 << 10, 2)},
            "steal 64K, 3 helpers": {"_copy": stealing(64 << 10, 3)}}
elif os.environ.get("WAYS") == "quiet":
    WAYS = {"native": None, "as is": {},
            **{f"quiet up to {n} MiB": {"Session._htod_staged": quiet(n * MiB)} for n in (1, 2, 4)}}


def _owner(name: str):
    return (client.Session, name[len("Session."):]) if name.startswith("Session.") else (client, name)


DEFAULTS = {name: getattr(*_owner(name))
            for name in {"STAGE_CHUNK", "STAGE_MAX"}.union(*(w for w in WAYS.values() if w))}
try:
    B._ok(nat.cuInit(0))
    native = B.Workloads(nat, SIZES)
    B._ok(cu.cuInit(0))
    forwarded = B.Workloads(cu, SIZES)
    session = cu._session_for_tools()
    for size in SIZES:
        key = f"htod_pageable_GBps_{size // MiB}M"
        loops = {side: [(fn, value) for f, fn, value in w.figures() if f == key][0]
                 for side, w in (("native", native), ("forwarded", forwarded))}

        def run(name):
            knobs = WAYS[name]
            side = "native" if knobs is None else "forwarded"
            (native if knobs is None else forwarded).current()
            if knobs is not None:
                B._ok(cu.cuCtxSynchronize())  # nothing staged is in flight: lay the window out again
                for k, v in {**DEFAULTS, **knobs}.items():
                    setattr(*_owner(k), v)
                with session.lock:
                    session._setup_staging()
            fn, value = loops[side]
            return value(min(fn() for _ in range(3)))
        print(f"--- {size // MiB} MiB, GB/s")
        B.report_turns(B.in_turn(list(WAYS), run, ROUNDS), "GB/s",
                       lambda med, base: f"{med / base:4.2f}x native")
    print("as is: slots of", DEFAULTS["STAGE_CHUNK"], "bytes, staged up to", DEFAULTS["STAGE_MAX"],
          "bytes; copy threads:", client.COPY_THREADS)
finally:
    stop()
