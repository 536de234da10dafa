"""Where forwarded calls spend their time, by KVMGPU_TRACE's phases: a 4 MiB device-to-host copy
alone and as the launch-bound stencil makes it (after 100 queued launches), and a launch +
cuStreamSynchronize round trip (benchgpu's launch_sync); first the floors native code gets on the
same host: the DMA into registered (pinned) memory, a copy of 4 MiB between host buffers on 1-8
threads, native pageable DtoH. Run on the GPU machine from the repository root:
`PYTHONPATH=guest-agent:. python3 bench/gpu/traced_phases.py` (it runs itself once per
forwarded case, each with its own loopback worker and trace files)."""
import ctypes
import mmap
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

ok = B._ok
P, I32 = ctypes.c_void_p, ctypes.c_int
N4 = 4 << 20


def best(f, reps=20, rounds=5):
    f()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        out.append((time.perf_counter() - t) / reps * 1e6)
    return round(min(out), 1), round(sorted(out)[len(out) // 2], 1)


def floors():
    from cuda.bindings import driver as cu
    ok(cu.cuInit(0))
    dev = ok(cu.cuDeviceGet(0))
    ok(cu.cuCtxSetCurrent(ok(cu.cuDevicePrimaryCtxRetain(dev))))
    d = int(ok(cu.cuMemAlloc(N4)))
    y = np.ones(N4, np.uint8)
    buf = mmap.mmap(-1, 64 << 20)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    ctypes.memset(addr, 1, 64 << 20)
    ok(cu.cuMemHostRegister(addr, 64 << 20, 0))
    fd = os.open(f"/dev/shm/kvmgpu-probe-{os.getpid()}", os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(fd, 64 << 20)
    shm = mmap.mmap(fd, 64 << 20)
    os.unlink(f"/dev/shm/kvmgpu-probe-{os.getpid()}")
    shm_addr = ctypes.addressof(ctypes.c_char.from_buffer(shm))
    ctypes.memset(shm_addr, 1, 64 << 20)
    ok(cu.cuMemHostRegister(shm_addr, 64 << 20, cu.CU_MEMHOSTREGISTER_PORTABLE | cu.CU_MEMHOSTREGISTER_DEVICEMAP))
    print("native DtoH 4 MiB into a registered /dev/shm file mapping (as the worker's region) us:",
          best(lambda: ok(cu.cuMemcpyDtoH(shm_addr, d, N4))))
    for path in ("enabled", "shmem_enabled"):
        try:
            print("THP", path, open(f"/sys/kernel/mm/transparent_hugepage/{path}").read().strip())
        except OSError:
            pass
    print("native pageable DtoH 4 MiB us (best, median):", best(lambda: ok(cu.cuMemcpyDtoH(y.ctypes.data, d, N4))))
    print("native DtoH 4 MiB into registered memory us:", best(lambda: ok(cu.cuMemcpyDtoH(addr, d, N4))))
    print("memmove 4 MiB registered -> array, 1 thread us:", best(lambda: ctypes.memmove(y.ctypes.data, addr, N4)))
    print("memmove after a DMA into the source (cache cold?) us:",
          best(lambda: (ok(cu.cuMemcpyDtoH(addr, d, N4)), ctypes.memmove(y.ctypes.data, addr, N4))))
    for threads in (2, 4, 8):
        pool = ThreadPoolExecutor(threads - 1)
        step = N4 // threads

        def split(pool=pool, step=step):
            fs = [pool.submit(ctypes.memmove, y.ctypes.data + i, addr + i, step) for i in range(step, N4, step)]
            ctypes.memmove(y.ctypes.data, addr, step)
            for f in fs:
                f.result()
        print(f"memmove 4 MiB on {threads} threads (pool) us:", best(split))
        pool.shutdown()
    after_launches(cu, ok(cu.cuModuleLoadData(B.PTX.read_bytes())), y, "native")


def dtoh_after_launches(cu, mod, y):
    """A callable that queues 100 stencil launches on 1M floats, then copies the 4 MiB result
    into `y`, and returns how long the DtoH call took (s): the launch-bound stencil's copy out."""
    st = ok(cu.cuModuleGetFunction(mod, b"stencil1d"))
    n = 1 << 20
    ab = [int(ok(cu.cuMemAlloc(4 * n))), int(ok(cu.cuMemAlloc(4 * n)))]

    def seg():
        for _i in range(100):
            cu.cuLaunchKernel(st, n // 256, 1, 1, 256, 1, 1, 0, 0, ((ab[0], ab[1], n), (P, P, I32)), 0)
            ab.reverse()
        t = time.perf_counter()
        ok(cu.cuMemcpyDtoH(y.ctypes.data, ab[0], N4))
        return time.perf_counter() - t
    return seg


def after_launches(cu, mod, y, side):
    """The DtoH call right after 100 queued stencil launches, 20 times: its min and median."""
    seg = dtoh_after_launches(cu, mod, y)
    seg()
    t = [seg() for _ in range(20)]
    print(f"{side}: the DtoH call after 100 stencil launches us (min, median):",
          round(min(t) * 1e6, 1), round(sorted(t)[10] * 1e6, 1))


def forwarded(mode):
    from kvmgpu_guest import driver as cu
    ok(cu.cuInit(0)); ok(cu.cuCtxCreate(0, ok(cu.cuDeviceGet(0))))
    d = int(ok(cu.cuMemAlloc(N4)))
    y = np.ones(N4, np.uint8)
    if mode == "alone":
        print("forwarded DtoH 4 MiB alone us:", best(lambda: ok(cu.cuMemcpyDtoH(y.ctypes.data, d, N4))))
        return
    mod = ok(cu.cuModuleLoadData(B.PTX.read_bytes()))
    if mode == "launchsync":
        spin = ok(cu.cuModuleGetFunction(mod, b"spin"))
        kp = ((0,), (ctypes.c_longlong,))

        def ls():
            cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, kp, 0)
            cu.cuStreamSynchronize(0)
        print("forwarded launch + cuStreamSynchronize us (best, median):", best(ls, 2000))
        return
    after_launches(cu, mod, y, "forwarded")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        forwarded(sys.argv[1])
        sys.exit(0)
    floors()
    from cuda.bindings import driver as cu
    cu.cuDevicePrimaryCtxRelease(ok(cu.cuDeviceGet(0)))
    for mode in ("alone", "stencil", "launchsync"):
        prefix = os.path.join(tempfile.mkdtemp(), "trace")
        B.run_guest([__file__, mode], {"KVMGPU_TRACE": prefix})
        from kvmgpu_wire import trace
        print(f"trace, {mode}:")
        print(trace.report(prefix))
