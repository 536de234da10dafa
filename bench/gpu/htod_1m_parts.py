"""Where a forwarded 1 MiB cuMemcpyHtoD's time goes in a loop like benchgpu's (20 copies, then a
cuCtxSynchronize), with native beside it: the guest's parts timed by wrapping them (the copy into
the staging slot, the send, the wait for a free slot, the whole staged path), then the same copy
into the slot with no DMA running, and into a private buffer. Run on the GPU machine from the
repository root: `PYTHONPATH=guest-agent:. python3 bench/gpu/htod_1m_parts.py`"""
import sys
import time

import numpy as np

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

ok = B._ok
_, stop = B.loopback_worker(256 << 20)
from cuda.bindings import driver as nat

from kvmgpu_guest import client, driver as cu

acc = {}
def timed(name, fn):
    def w(*a, **k):
        t = time.perf_counter_ns()
        try:
            return fn(*a, **k)
        finally:
            acc[name] = acc.get(name, 0) + time.perf_counter_ns() - t
    return w
try:
    ok(nat.cuInit(0)); dev = ok(nat.cuDeviceGet(0)); nctx = ok(nat.cuDevicePrimaryCtxRetain(dev))
    ok(cu.cuInit(0)); ok(cu.cuCtxCreate(0, ok(cu.cuDeviceGet(0))))
    host = np.ones(64 << 20, np.uint8); d = ok(cu.cuMemAlloc(64 << 20))
    ok(nat.cuCtxSetCurrent(nctx)); nd = ok(nat.cuMemAlloc(64 << 20))
    def h(size=1 << 20, reps=20):
        t = time.perf_counter()
        for _ in range(reps): ok(cu.cuMemcpyHtoD(d, host.ctypes.data, size))
        ok(cu.cuCtxSynchronize())
        return (time.perf_counter() - t) / reps * 1e6
    def n(size=1 << 20, reps=20):
        ok(nat.cuCtxSetCurrent(nctx))
        t = time.perf_counter()
        for _ in range(reps): ok(nat.cuMemcpyHtoD(nd, host.ctypes.data, size))
        ok(nat.cuCtxSynchronize())
        return (time.perf_counter() - t) / reps * 1e6
    for _ in range(3): h(); n()
    print("µs per 1 MiB copy, native / forwarded:", [(round(n(), 1), round(h(), 1)) for _ in range(6)])
    cu._session._copies.copy = timed("copy into slot", cu._session._copies.copy)
    S = client.Session
    S._send = timed("send (syscall)", S._send)
    S._free_slot = timed("free slot (wait)", S._free_slot)
    S._htod_staged = timed("htod_staged total", S._htod_staged)
    reps = 0
    t = time.perf_counter()
    for _ in range(10):
        h(); reps += 20
    total = (time.perf_counter() - t) / reps * 1e6
    print("instrumented: per copy µs", round(total, 1), {k: round(v / reps / 1e3, 1) for k, v in acc.items()})
    # the copy alone into the slot, no GPU: same source, same slot
    s = cu._session
    view = s.view; off = s._stage_base
    src = memoryview(host)[:1 << 20]
    t = time.perf_counter()
    for _ in range(200): view[off: off + (1 << 20)] = src
    print("memmove into slot alone µs", round((time.perf_counter() - t) / 200 * 1e6, 1))
    import ctypes
    dst = np.empty(1 << 20, np.uint8)
    t = time.perf_counter()
    for _ in range(200): ctypes.memmove(dst.ctypes.data, host.ctypes.data, 1 << 20)
    print("memmove into private buffer µs", round((time.perf_counter() - t) / 200 * 1e6, 1))
finally:
    stop()
