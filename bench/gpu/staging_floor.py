"""The staging rhythm alone, the floor of a forwarded 1 MiB HtoD: memmove 1 MiB into slot A, DMA it
async, memmove into slot B, ... in one process with no worker and no Python around it (median copy
µs, µs an iteration), with the slots in /dev/shm memory as the region is, or anonymous, each with
and without MADV_HUGEPAGE asked for; and a 1 MiB DMA from them alone. Run on the GPU machine:
`python3 bench/gpu/staging_floor.py`"""
import ctypes
import mmap
import os
import time

import numpy as np
from cuda.bindings import driver as cu


def ok(r):
    if r[0] != 0: raise RuntimeError(r)
    return r[1] if len(r) == 2 else r[1:]
MiB = 1 << 20
for f in ("enabled", "shmem_enabled"):
    print(f, open(f"/sys/kernel/mm/transparent_hugepage/{f}").read().strip())
ok(cu.cuInit(0)); ctx = ok(cu.cuDevicePrimaryCtxRetain(ok(cu.cuDeviceGet(0)))); ok(cu.cuCtxSetCurrent(ctx))
d = ok(cu.cuMemAlloc(64 * MiB)); st = ok(cu.cuStreamCreate(0))
src = np.ones(MiB, np.uint8)
def region(kind):
    size = 64 * MiB
    if kind.startswith("shm"):
        path = f"/dev/shm/thp-test-{os.getpid()}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600); os.ftruncate(fd, size)
        m = mmap.mmap(fd, size); os.close(fd); os.unlink(path)
    else:
        m = mmap.mmap(-1, size)
    if kind.endswith("huge"):
        m.madvise(mmap.MADV_HUGEPAGE)
    buf = np.frombuffer(m, np.uint8); buf[:] = 0
    return m, buf
def pingpong(buf, n=400):
    base = buf.ctypes.data
    evs = [ok(cu.cuEventCreate(0)) for _ in range(2)]
    ts, t0 = [], time.perf_counter()
    for i in range(n):
        slot = i % 2
        ok(cu.cuEventSynchronize(evs[slot]))
        t = time.perf_counter_ns(); ctypes.memmove(base + slot * MiB, src.ctypes.data, MiB)
        ts.append(time.perf_counter_ns() - t)
        ok(cu.cuMemcpyHtoDAsync(d, base + slot * MiB, MiB, st)); ok(cu.cuEventRecord(evs[slot], st))
    ok(cu.cuStreamSynchronize(st))
    per = (time.perf_counter() - t0) / n * 1e6
    ts.sort(); return round(ts[n // 2] / 1e3, 1), round(per, 1)
def dma_us(buf, n=200):
    base = buf.ctypes.data
    ok(cu.cuStreamSynchronize(st)); t = time.perf_counter()
    for _ in range(n): ok(cu.cuMemcpyHtoDAsync(d, base + 8 * MiB, MiB, st))
    ok(cu.cuStreamSynchronize(st)); return round((time.perf_counter() - t) / n * 1e6, 1)
for _ in range(2):
    for kind in ("shm", "shm huge", "anon", "anon huge"):
        m, buf = region(kind)
        ok(cu.cuMemHostRegister(buf.ctypes.data, 64 * MiB, 0))
        huge = [line for line in open("/proc/meminfo") if line.startswith(("AnonHugePages", "ShmemHugePages"))]
        print(f"{kind:10} ping-pong copy / per iteration µs {pingpong(buf)}  DMA 1 MiB alone µs {dma_us(buf)}  ",
              " ".join(h.split()[0] + h.split()[1] for h in huge))
        ok(cu.cuMemHostUnregister(buf.ctypes.data)); del buf; m.close()
