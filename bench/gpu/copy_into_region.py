"""The guest's copy into a registered /dev/shm region: fresh pages, populated, hot; and madvise support.
`python3 bench/gpu/copy_into_region.py`."""
import ctypes
import mmap
import os
import time

import numpy as np
from cuda.bindings import driver as cu

print("kernel", os.uname().release, "python has MADV_POPULATE_WRITE:", hasattr(mmap, "MADV_POPULATE_WRITE"))
n = 256 << 20; p = f"/dev/shm/kvmgpu-copyprobe-{os.getpid()}"
fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600); os.ftruncate(fd, n)
host = mmap.mmap(fd, n)  # the "worker": registers it
cu.cuInit(0); ctx = cu.cuDevicePrimaryCtxRetain(cu.cuDeviceGet(0)[1])[1]; cu.cuCtxSetCurrent(ctx)
addr = ctypes.addressof((ctypes.c_char * n).from_buffer(host))
print("register", cu.cuMemHostRegister(addr, n, 3))
g = mmap.mmap(fd, n); v = memoryview(g)  # the "guest"
src = np.ones(1 << 20, np.uint8); s = memoryview(src)
def pass_(base, k=64):
    t = time.perf_counter()
    for i in range(k):
        o = base + i * (1 << 20); v[o:o + (1 << 20)] = s
    return (time.perf_counter() - t) / k * 1e6
print(f"1 MiB into fresh (registered elsewhere) pages: {pass_(0):.1f} us")
try:
    t = time.perf_counter(); g.madvise(23, 64 << 20, 64 << 20)
    print(f"populate 64 MiB ok {1e3*(time.perf_counter()-t):.1f} ms")
except Exception as e:
    print("populate failed:", e)
print(f"1 MiB into populated pages: {pass_(64 << 20):.1f} us")
t = time.perf_counter(); x = bytes(v[128 << 20: 192 << 20: 4096])
print(f"read-touch 64 MiB {1e3*(time.perf_counter()-t):.1f} ms")
print(f"1 MiB into read-touched pages: {pass_(128 << 20):.1f} us")
print(f"1 MiB, second pass over the first pages (cold cache, mapped): {pass_(0):.1f} us")
print(f"1 MiB, same 1 MiB again and again (hot): {pass_(0, 1) and min(pass_(0, 1) for _ in range(50)):.1f} us")
d = np.empty(1 << 20, np.uint8)
hot = min((lambda t: (np.copyto(d, src), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(50))
print(f"numpy 1 MiB into private memory (hot): {hot * 1e6:.1f} us")
cu.cuMemHostUnregister(addr); os.unlink(p)
