"""Synchronous host-to-device copies (benchgpu's loop: up to 20 cuMemcpyHtoD from pageable memory,
then one cuCtxSynchronize) with the guest's staging laid out one way and another in turn, in one
guest process against one worker process, native cuda-bindings beside them. Between ways the
session lays its window out again. GB/s, and the ratio to native. Run on the GPU machine from the
repository root: `PYTHONPATH=guest-agent:. python3 tests/gpu/probes/htod_stage_ab.py`
(ROUNDS=n, SIZES=1,16,64 in MiB)."""
import os
import sys
sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

MiB = 1 << 20
SIZES = [int(s) * MiB for s in os.environ.get("SIZES", "1,16,64").split(",")]
_, stop = B.loopback_worker(max(SIZES) + 64 * MiB)
from cuda.bindings import driver as nat  # noqa: E402
from kvmgpu_guest import client, driver as cu  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "9"))
DEFAULTS = {k: getattr(client, k) for k in ("STAGE_CHUNK", "STAGE_MAX", "COPY_PIECE")}
WAYS = {"native": None,
        "as is": {},
        "1 MiB slots, the ring from 8 MiB (ninth session)": {"STAGE_CHUNK": MiB},
        "4 MiB slots, the ring from 8 MiB": {"STAGE_CHUNK": 4 * MiB},
        "4 MiB slots, all staged": {"STAGE_CHUNK": 4 * MiB, "STAGE_MAX": 1 << 62},
        "8 MiB slots": {"STAGE_CHUNK": 8 * MiB},
        "32 MiB slots": {"STAGE_CHUNK": 32 * MiB}}
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
                    setattr(client, k, v)
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
