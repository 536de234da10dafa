"""The launch-bound stencil (benchgpu's 1M floats: 1000 launches, a 4 MiB DtoH every 100), or other
benchgpu figures (FIGURES=stencil_1M_e2e_s,dtoh_pageable_GBps_4M,...), with the guest's knobs that
shape them set one way and another in turn, in one guest process against one worker process (one
placement for all; fresh processes for each way measured 9.3-12.4 ms for the same code), native
cuda-bindings beside them. The ways take turns round by round. Run on the GPU machine from the
repository root: `PYTHONPATH=guest-agent:. python3 bench/gpu/stencil_ab.py` (ROUNDS=n;
WAYS="small dtoh" or WAYS=copier for other ways)"""
import os
import sys
from dataclasses import replace

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

_, stop = B.loopback_worker(256 << 20)
from cuda.bindings import driver as nat  # noqa: E402

from kvmgpu_guest import driver as cu  # noqa: E402

MiB = 1 << 20
ROUNDS = int(os.environ.get("ROUNDS", "15"))
FIGURES = os.environ.get("FIGURES", "stencil_1M_e2e_s").split(",")
SIZES = [1 * MiB, 4 * MiB, 16 * MiB]
WAYS = {"native": None, "as is": {},  # the guest's settings (kvmgpu_guest.config.GuestConfig) of each way
        "no stealing (ninth session)": {"copy_steal": False},
        "512 KiB parts": {"copy_part": MiB // 2},
        "4 piece threads": {"piece_threads": 4}}
if os.environ.get("WAYS") == "small dtoh":
    WAYS = {"native": None, "as is": {},
            "512 KiB DtoH pieces": {"dtoh_piece": MiB // 2, "copy_part": MiB // 2},
            "256 KiB DtoH pieces": {"dtoh_piece": MiB // 4, "copy_part": MiB // 4},
            "512 KiB copy pieces": {"copy_piece": MiB // 2}}
elif os.environ.get("WAYS") == "copier":  # the guest's copier (kvmgpu_guest/copier.c, built in place)
    WAYS = {"native": None, "as is": {},
            "without the copier": {"copier": False},
            "DtoH without the copier": {"copier_dtoh": False},
            "copier, 3 helpers": {"copier_threads": 4},
            "copier, 5 helpers": {"copier_threads": 6}}
try:
    B._ok(nat.cuInit(0))
    native = B.Workloads(nat, SIZES)
    B._ok(cu.cuInit(0))
    forwarded = B.Workloads(cu, SIZES)
    session = cu._session_for_tools()
    base = session.config
    for figure in FIGURES:
        loops = {side: [(fn, value) for f, fn, value in w.figures() if f == figure][0]
                 for side, w in (("native", native), ("forwarded", forwarded))}
        seconds = figure.endswith("_s")

        def run(name, loops=loops, seconds=seconds):
            knobs = WAYS[name]
            (native if knobs is None else forwarded).current()
            session.configure(replace(base, **(knobs or {})))
            fn, value = loops["native" if knobs is None else "forwarded"]
            return fn() * 1e3 if seconds else value(fn())
        print("---", figure)
        if seconds:
            B.report_turns(B.in_turn(list(WAYS), run, ROUNDS), "ms",
                           lambda med, base: f"{(med / base - 1) * 100:+5.1f} % on native")
        else:
            B.report_turns(B.in_turn(list(WAYS), run, ROUNDS), "GB/s",
                           lambda med, base: f"{med / base:4.2f}x native")
finally:
    stop()
