"""Launch + cuStreamSynchronize round trips (benchgpu's launch_sync) forwarded through one loopback
worker, with the worker's and the guest's main threads left to the scheduler or pinned to given
CPUs (os.sched_setaffinity), in turn, several rounds: how much of the run-to-run spread is where
the two busy-polling threads land. Native launch + sync of the same kernel first.
`PYTHONPATH=guest-agent:. python3 bench/gpu/placement.py`"""
import ctypes
import os
import sys
import time

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

ok = B._ok
ALL = os.sched_getaffinity(0)


def loop(cu, spin, kp, n=2000):
    t = time.perf_counter()
    for _ in range(n):
        cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, kp, 0)
        cu.cuStreamSynchronize(0)
    return (time.perf_counter() - t) / n * 1e6


def best(cu, spin, kp):
    loop(cu, spin, kp, 200)
    return round(min(loop(cu, spin, kp) for _ in range(5)), 1)


from cuda.bindings import driver as N

ok(N.cuInit(0))
dev = ok(N.cuDeviceGet(0))
ok(N.cuCtxSetCurrent(ok(N.cuDevicePrimaryCtxRetain(dev))))
spin = ok(N.cuModuleGetFunction(ok(N.cuModuleLoadData(B.PTX.read_bytes())), b"spin"))
zero = ctypes.c_longlong(0)
ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(zero))
print("native launch + sync µs:", best(N, spin, ctypes.addressof(ptrs)))
N.cuDevicePrimaryCtxRelease(dev)
proc, stop = B.loopback_worker(64 << 20)
from kvmgpu_guest import driver as cu

try:
    ok(cu.cuInit(0)); ok(cu.cuCtxCreate(0, ok(cu.cuDeviceGet(0))))
    f = ok(cu.cuModuleGetFunction(ok(cu.cuModuleLoadData(B.PTX.read_bytes())), b"spin"))
    kp = ((0,), (ctypes.c_longlong,))
    cpus = sorted(ALL)
    places = {"scheduler": (ALL, ALL), "worker 2, guest 4": ({cpus[2]}, {cpus[4]}),
              "worker 2, guest 3": ({cpus[2]}, {cpus[3]}),
              "worker 2, guest 10": ({cpus[2]}, {cpus[min(10, len(cpus) - 1)]})}
    results = {k: [] for k in places}
    for _rnd in range(3):
        for name, (w, g) in places.items():
            os.sched_setaffinity(proc.pid, w)
            os.sched_setaffinity(0, g)
            results[name].append(best(cu, f, kp))
    for name, v in results.items():
        print(f"{name:20s} forwarded µs per round: {v}")
finally:
    os.sched_setaffinity(0, ALL)
    stop()
