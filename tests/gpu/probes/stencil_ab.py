"""The launch-bound stencil (benchgpu's 1M floats: 1000 launches, a 4 MiB DtoH every 100) with the
guest's knobs that shape it set one way and another in turn, in one guest process against one
worker process (one placement for all; fresh processes for each way measured 9.3-12.4 ms for the
same code), native cuda-bindings beside them. The ways take turns round by round. Run on the GPU
machine from the repository root: `PYTHONPATH=guest-agent:. python3 tests/gpu/probes/stencil_ab.py`"""
import os, sys
sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

_, stop = B.loopback_worker(256 << 20)
from cuda.bindings import driver as nat  # noqa: E402
from kvmgpu_guest import client, driver as cu  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "15"))
DEFAULTS = {k: getattr(client, k) for k in ("FIRST_BATCH", "PIECE_THREADS", "COPY_PART", "DTOH_PIECE")}
WAYS = {"native": None, "as is": {},
        "first batch 100 B": {"FIRST_BATCH": 100},
        "4 piece threads": {"PIECE_THREADS": 4},
        "first batch 100 B, 4 piece threads": {"FIRST_BATCH": 100, "PIECE_THREADS": 4}}
try:
    B._ok(nat.cuInit(0))
    native = B.Workloads(nat, [1 << 20])
    B._ok(cu.cuInit(0))
    forwarded = B.Workloads(cu, [1 << 20])
    loops = {side: [fn for f, fn, _ in w.figures() if f == "stencil_1M_e2e_s"][0]
             for side, w in (("native", native), ("forwarded", forwarded))}

    def run(name):
        knobs = WAYS[name]
        (native if knobs is None else forwarded).current()
        for k, v in {**DEFAULTS, **(knobs or {})}.items():
            setattr(client, k, v)
        return loops["native" if knobs is None else "forwarded"]() * 1e3
    B.report_turns(B.in_turn(list(WAYS), run, ROUNDS), "ms",
                   lambda med, base: f"{(med / base - 1) * 100:+5.1f} % on native")
finally:
    stop()
