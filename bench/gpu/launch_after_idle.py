"""Does a launch onto a GPU that sat idle for a while cost more? Native cuda-bindings, spin kernel.
`python3 bench/gpu/launch_after_idle.py`."""
import ctypes
import statistics
import time
from pathlib import Path

from cuda.bindings import driver as cu


def ok(r):
    assert r[0] == 0, r
    return r[1] if len(r) == 2 else r[1:]
ok(cu.cuInit(0)); ctx = ok(cu.cuDevicePrimaryCtxRetain(ok(cu.cuDeviceGet(0)))); ok(cu.cuCtxSetCurrent(ctx))
mod = ok(cu.cuModuleLoadData(Path("tests/kernels/kernels.ptx").read_bytes()))
spin = ok(cu.cuModuleGetFunction(mod, b"spin"))
zero = ctypes.c_longlong(0); ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(zero)); kp = ctypes.addressof(ptrs)
ev = ok(cu.cuEventCreate(0))
pc = time.perf_counter
for gap_us in (0, 5, 10, 20, 30, 50, 100):
    L, S, R = [], [], []
    for _ in range(3000):
        end = pc() + gap_us / 1e6
        while pc() < end:
            pass
        t0 = pc(); cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, kp, 0); t1 = pc()
        cu.cuStreamSynchronize(0); t2 = pc()
        L.append(t1 - t0); S.append(t2 - t1)
    for _ in range(3000):
        end = pc() + gap_us / 1e6
        while pc() < end:
            pass
        t0 = pc(); cu.cuEventRecord(ev, 0); t1 = pc()
        cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, kp, 0); cu.cuStreamSynchronize(0)
        R.append(t1 - t0)
    m = lambda v: statistics.median(v) * 1e6
    print(f"idle {gap_us:4d} us before: launch {m(L):6.2f}  sync {m(S):6.2f}  launch+sync {m(L)+m(S):6.2f}   "
          f"event record first {m(R):5.2f} us")
