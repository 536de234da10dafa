"""Is the guest's 1 MiB copy into the slot slowed by the DMA, or by a CPU spinning beside it?"""
import ctypes
import os
import subprocess
import sys
import time

import numpy as np
from cuda.bindings import driver as cu


def ok(r):
    if r[0] != 0: raise RuntimeError(r)
    return r[1] if len(r) == 2 else r[1:]
MiB = 1 << 20
src = np.ones(MiB, np.uint8); dst = np.zeros(4 * MiB, np.uint8)
def copy_us(off=0, n=400):
    s, d = src.ctypes.data, dst.ctypes.data + off
    for _ in range(20): ctypes.memmove(d, s, MiB)
    ts = []
    for _ in range(n):
        t = time.perf_counter_ns(); ctypes.memmove(d, s, MiB); ts.append(time.perf_counter_ns() - t)
    ts.sort(); return round(ts[n // 2] / 1e3, 1)
os.sched_setaffinity(0, {2})
print("cpus", os.cpu_count(), "alone on cpu 2:", copy_us())
for k in (0, 1, 3, 8, 10, 15):
    p = subprocess.Popen(["taskset", "-c", str(k), sys.executable, "-c", "while True: pass"])
    time.sleep(0.2)
    print(f"spinner on cpu {k}:", copy_us())
    p.kill(); p.wait()
ok(cu.cuInit(0)); dev = ok(cu.cuDeviceGet(0)); ctx = ok(cu.cuDevicePrimaryCtxRetain(dev)); ok(cu.cuCtxSetCurrent(ctx))
d = ok(cu.cuMemAlloc(64 * MiB)); st = ok(cu.cuStreamCreate(0))
hp = ok(cu.cuMemHostAlloc(64 * MiB, 0))
def dma(host, nbytes, times):
    for _ in range(times): ok(cu.cuMemcpyHtoDAsync(d, host, nbytes, st))
dma(hp, 64 * MiB, 60)  # ~70 ms of DMA from another buffer
print("DMA from another pinned buffer running:", copy_us(n=200),
      "done" if cu.cuStreamQuery(st)[0] else "(DMA over before the end)")
ok(cu.cuStreamSynchronize(st))
ok(cu.cuMemHostRegister(dst.ctypes.data, 4 * MiB, 0))
dma(dst.ctypes.data + 2 * MiB, MiB, 3000)  # DMA of the other half of dst (the "other slot"), ~60 ms
print("DMA from the other slot (just written? no: idle half) running:", copy_us(n=200))
ok(cu.cuStreamSynchronize(st))
# ping-pong like the staged path: copy into slot A, DMA slot A, copy into slot B while A DMAs, ...
ts = []
for i in range(400):
    off = (i % 2) * MiB
    t = time.perf_counter_ns(); ctypes.memmove(dst.ctypes.data + off, src.ctypes.data, MiB)
    ts.append(time.perf_counter_ns() - t)
    ok(cu.cuMemcpyHtoDAsync(d, dst.ctypes.data + off, MiB, st))
    if i % 2: ok(cu.cuStreamSynchronize(st))
ts.sort(); print("ping-pong, copy while the other slot DMAs (same process):", round(ts[200] / 1e3, 1))
ok(cu.cuStreamSynchronize(st))
print("alone again:", copy_us())
# the same with more slots, each slot's DMA started `lag` copies after its own (so that the core
# has written `lag` MiB elsewhere meanwhile)
ok(cu.cuMemHostUnregister(dst.ctypes.data))
dst = np.zeros(8 * MiB, np.uint8)
ok(cu.cuMemHostRegister(dst.ctypes.data, 8 * MiB, 0))
def pingpong(nslots, lag, n=400):
    evs = [ok(cu.cuEventCreate(0)) for _ in range(nslots)]
    ts = []
    for i in range(n + lag):
        if i < n:
            slot = i % nslots
            ok(cu.cuEventSynchronize(evs[slot]))
            t = time.perf_counter_ns(); ctypes.memmove(dst.ctypes.data + slot * MiB, src.ctypes.data, MiB)
            ts.append(time.perf_counter_ns() - t)
        if i >= lag:
            slot = (i - lag) % nslots
            ok(cu.cuMemcpyHtoDAsync(d, dst.ctypes.data + slot * MiB, MiB, st))
            ok(cu.cuEventRecord(evs[slot], st))
    ok(cu.cuStreamSynchronize(st))
    ts.sort(); return round(ts[n // 2] / 1e3, 1)
for nslots, lag in ((2, 0), (3, 1), (4, 2), (6, 3), (8, 4), (2, 0)):
    print(f"{nslots} slots, DMA {lag} copies later: copy", pingpong(nslots, lag), "µs")
