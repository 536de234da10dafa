"""DtoH of 4 MiB, native pageable against forwarded with 1/2/4/8 copy-out threads and in one piece
or in 1 MiB chunks. Run on the GPU machine from the repository root:
`PYTHONPATH=guest-agent:. python3 bench/gpu/dtoh_threads.py`."""
import sys
import time

import numpy as np

sys.path[:0] = ["guest-agent", "."]
from cuda.bindings import driver as N

from kvmgpu import benchgpu as B

ok = B._ok
ok(N.cuInit(0)); ctx = ok(N.cuDevicePrimaryCtxRetain(ok(N.cuDeviceGet(0)))); ok(N.cuCtxSetCurrent(ctx))
n = 4 << 20
y = np.empty(n, np.uint8)
d = int(ok(N.cuMemAlloc(n)))
def nat():
    t = time.perf_counter()
    for _ in range(20): ok(N.cuMemcpyDtoH(y.ctypes.data, d, n))
    return (time.perf_counter() - t) / 20 * 1e6
nat(); print("native dtoh 4MiB", round(min(nat() for _ in range(5)), 1), "us")
ok(N.cuMemFree(d)); N.cuDevicePrimaryCtxRelease(ok(N.cuDeviceGet(0)))
_, stop = B.loopback_worker(256 << 20)
from dataclasses import replace

from kvmgpu_guest import client, driver as cu

try:
    ok(cu.cuInit(0)); ok(cu.cuCtxCreate(0, ok(cu.cuDeviceGet(0))))
    d = int(ok(cu.cuMemAlloc(n)))
    session = cu._session_for_tools()
    spent = []
    def timed_copies():  # the copy in one piece, copied out after the reply (dtoh_variants.py: in pieces)
        real = session._copies.copy
        def timed(*a):
            t = time.perf_counter(); real(*a); spent.append(time.perf_counter() - t)
        session._copies.copy = timed
    for threads in (1, 2, 4, 8):
        session.configure(replace(session.config, dtoh_piece=0, copy_threads=threads))
        timed_copies()
        client._pools.clear()
        def f():
            spent.clear()
            t = time.perf_counter()
            for _ in range(20): ok(cu.cuMemcpyDtoH(y.ctypes.data, d, n))
            return (time.perf_counter() - t) / 20 * 1e6, sum(spent) / 20 * 1e6
        f()
        r = min(f() for _ in range(5))
        print(f"forwarded dtoh 4MiB threads {threads}: total {r[0]:.1f} us, copy out {r[1]:.1f} us")
    for whole in (1 << 20, 16 << 20):
        session.configure(replace(session.config, dtoh_whole=whole, copy_threads=4)); client._pools.clear()
        def g():
            t = time.perf_counter()
            for _ in range(20): ok(cu.cuMemcpyDtoH(y.ctypes.data, d, n))
            return (time.perf_counter() - t) / 20 * 1e6
        g(); print(f"DTOH_WHOLE {whole >> 20} MiB: {min(g() for _ in range(5)):.1f} us")
finally:
    stop()
