"""A 4 MiB cuMemcpyDtoH, native pageable against forwarded ways of doing it, in one process on the
GPU machine, alone and right after 100 stencil launches (as benchgpu's launch-bound stencil does):
the guest's knobs (KVMGPU_DTOH_PIECE, KVMGPU_PIECE_THREADS, KVMGPU_COPY_PART) set per variant, and
a variant that skips the copy out of the window (the DMA and the round trip alone).
`PYTHONPATH=guest-agent:. python3 bench/gpu/dtoh_variants.py`"""
import os
import sys
import time

import numpy as np

sys.path[:0] = ["guest-agent", ".", os.path.dirname(os.path.abspath(__file__))]
from kvmgpu import benchgpu as B

from traced_phases import N4, dtoh_after_launches  # the stencil's launches and copy out, as there

ok = B._ok


def setup(cu):
    mod = ok(cu.cuModuleLoadData(B.PTX.read_bytes()))
    y = np.ones(N4, np.uint8)
    src = int(ok(cu.cuMemAlloc(N4)))
    after = dtoh_after_launches(cu, mod, y)

    def alone():
        t = time.perf_counter()
        ok(cu.cuMemcpyDtoH(y.ctypes.data, src, N4))
        return time.perf_counter() - t

    def segment():  # the whole of one stencil segment: 100 launches and the copy out
        t = time.perf_counter()
        after()
        return time.perf_counter() - t
    return alone, after, segment


def figures(fs):
    out = []
    for f in fs:
        f()
        t = sorted(f() for _ in range(30))
        out.append(f"{t[0] * 1e6:7.1f} / {t[15] * 1e6:7.1f}")
    return "   ".join(out)


HEAD = "(µs, best / median)     alone                after 100 launches   whole segment"
from cuda.bindings import driver as N

ok(N.cuInit(0))
dev = ok(N.cuDeviceGet(0))
ok(N.cuCtxSetCurrent(ok(N.cuDevicePrimaryCtxRetain(dev))))
print(HEAD)
print(f"{'native pageable':24s}", figures(setup(N)))
N.cuDevicePrimaryCtxRelease(dev)
_, stop = B.loopback_worker(256 << 20)
from dataclasses import replace

from kvmgpu_guest import client, driver as cu

try:
    ok(cu.cuInit(0)); ok(cu.cuCtxCreate(0, ok(cu.cuDeviceGet(0))))
    fs = setup(cu)
    session = cu._session_for_tools()
    real_part = client._Copier.part
    variants = [("whole, 4 threads", 0, 4, 1 << 20, 0),
                ("1M pieces, 4 thr", 1 << 20, 4, 1 << 20, 0), ("1M pcs, 4 thr, wake", 1 << 20, 4, 1 << 20, 1),
                ("1M pcs, 3 thr, wake", 1 << 20, 3, 1 << 20, 1), ("1M pcs, 2 thr, wake", 1 << 20, 2, 1 << 20, 1),
                ("512K pcs, 4 thr, wake", 512 << 10, 4, 512 << 10, 1),
                ("512K pcs, 8 thr, wake", 512 << 10, 8, 512 << 10, 1),
                ("1M pieces, no copy", 1 << 20, 4, 1 << 20, 0)]
    for name, piece, threads, part, wake in variants:
        session.configure(replace(session.config, dtoh_piece=piece, piece_threads=threads, copy_part=part,
                                  copy_wake=bool(wake)))
        client._pools.clear()
        skip = name.endswith("no copy")
        client._Copier.part = (lambda *a, **k: None) if skip else real_part
        if skip:
            session._copies.copy = lambda *a: None
        print(f"{name:24s}", figures(fs))
finally:
    stop()
