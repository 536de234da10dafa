"""Forwarded HtoD of 1 MiB, 20 copies then one cuCtxSynchronize, six times (GB/s). Run with
KVMGPU_STAGE_SLOTS / KVMGPU_STAGE_CHUNK set to compare staging layouts:
`PYTHONPATH=guest-agent:. python3 bench/gpu/htod_1m.py`."""
import sys
import time

import numpy as np

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

ok = B._ok
_, stop = B.loopback_worker(256 << 20)
from kvmgpu_guest import driver as cu

try:
    ok(cu.cuInit(0)); ok(cu.cuCtxCreate(0, ok(cu.cuDeviceGet(0))))
    host = np.ones(64 << 20, np.uint8); d = ok(cu.cuMemAlloc(64 << 20))
    def h(size=1 << 20, reps=20):
        t = time.perf_counter()
        for _ in range(reps): ok(cu.cuMemcpyHtoD(d, host.ctypes.data, size))
        ok(cu.cuCtxSynchronize())
        return size * reps / (time.perf_counter() - t) / 1e9
    print("htod 1M GB/s", [round(h(), 2) for _ in range(6)])
finally:
    stop()
