"""The launch-bound stencil (1M floats, 1000 launches, DtoH every 100), native then forwarded: the
whole, the time inside the DtoH calls, the launches alone, and the GPU time of 1000 launches by
events. `PYTHONPATH=guest-agent:. python3 bench/gpu/stencil_phases.py`."""
import ctypes
import sys
import time

import numpy as np

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

ok = B._ok
P, I32 = ctypes.c_void_p, ctypes.c_int
def measure(cu, native):
    dev = ok(cu.cuDeviceGet(0))
    if native:
        ok(cu.cuCtxSetCurrent(ok(cu.cuDevicePrimaryCtxRetain(dev))))
    else:
        ok(cu.cuCtxCreate(0, dev))
    st = ok(cu.cuModuleGetFunction(ok(cu.cuModuleLoadData(B.PTX.read_bytes())), b"stencil1d"))
    n = 1 << 20
    x = np.random.default_rng(0).random(n, dtype=np.float32); y = np.empty_like(x)
    ab = [int(ok(cu.cuMemAlloc(4 * n))), int(ok(cu.cuMemAlloc(4 * n)))]
    out = {}
    def e2e(copies=True):
        in_copy = 0.0
        t = time.perf_counter()
        ok(cu.cuMemcpyHtoD(ab[0], x.ctypes.data, 4 * n))
        for i in range(1000):
            cu.cuLaunchKernel(st, n // 256, 1, 1, 256, 1, 1, 0, 0, ((ab[0], ab[1], n), (P, P, I32)), 0)
            ab.reverse()
            if copies and i % 100 == 99:
                t1 = time.perf_counter()
                ok(cu.cuMemcpyDtoH(y.ctypes.data, ab[0], 4 * n))
                in_copy += time.perf_counter() - t1
        ok(cu.cuCtxSynchronize())
        return time.perf_counter() - t, in_copy
    e2e()
    r = min(e2e() for _ in range(3))
    out["e2e ms"], out["in DtoH calls ms"] = round(r[0] * 1e3, 2), round(r[1] * 1e3, 2)
    out["launches only ms"] = round(min(e2e(False)[0] for _ in range(3)) * 1e3, 2)
    ev0, ev1 = ok(cu.cuEventCreate(0)), ok(cu.cuEventCreate(0))
    cu.cuCtxSynchronize()
    cu.cuEventRecord(ev0, 0)
    for _i in range(1000):
        cu.cuLaunchKernel(st, n // 256, 1, 1, 256, 1, 1, 0, 0, ((ab[0], ab[1], n), (P, P, I32)), 0)
    cu.cuEventRecord(ev1, 0); cu.cuEventSynchronize(ev1)
    out["GPU time of 1000 launches, ms (events)"] = round(ok(cu.cuEventElapsedTime(ev0, ev1)), 2)
    return out
from cuda.bindings import driver as N

ok(N.cuInit(0))
print("native   ", measure(N, True))
N.cuDevicePrimaryCtxRelease(ok(N.cuDeviceGet(0)))
_, stop = B.loopback_worker(256 << 20)
from kvmgpu_guest import driver as F

try:
    ok(F.cuInit(0))
    print("forwarded", measure(F, False))
finally:
    stop()
