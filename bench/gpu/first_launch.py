"""What the first launch after a synchronise costs, and what makes it dearer: the forwarded
launch + sync spends 12-16 µs in its one cuLaunchKernel (traced, docs/performance.md) where the
native loop's launch costs ~4 µs. One process, the spin kernel, the launch call timed alone after
each kind of pause between the synchronise and the next launch.

Usage (repository root, on a GPU machine): python3 bench/gpu/first_launch.py [--register]
(--register: 64 MiB of host memory registered first, as the worker registers its region)."""

import ctypes
import mmap
import select
import socket
import statistics
import sys
import time
from pathlib import Path

from cuda.bindings import driver as cu

PTX = Path(__file__).resolve().parents[2] / "tests" / "kernels" / "kernels.ptx"


def ok(r):
    if r[0]:
        raise SystemExit(f"CUDA error {r[0]}")
    return r[1] if len(r) == 2 else (r[1:] if len(r) > 2 else None)


def main() -> None:
    ok(cu.cuInit(0))
    dev = ok(cu.cuDeviceGet(0))
    ok(cu.cuCtxSetCurrent(ok(cu.cuDevicePrimaryCtxRetain(dev))))
    f = ok(cu.cuModuleGetFunction(ok(cu.cuModuleLoadData(PTX.read_bytes() + b"\0")), b"spin"))
    if "--register" in sys.argv:
        region = mmap.mmap(-1, 64 << 20)
        holder = ctypes.c_char.from_buffer(region)
        ok(cu.cuMemHostRegister(ctypes.addressof(holder), 64 << 20, 0))
    arg = ctypes.c_longlong(0)
    ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(arg))
    kp = ctypes.addressof(ptrs)
    buf = ctypes.create_string_buffer(8)
    size = ctypes.c_size_t(8)
    extra = (ctypes.c_void_p * 5)(cu.CU_LAUNCH_PARAM_BUFFER_POINTER, ctypes.addressof(buf),
                                  cu.CU_LAUNCH_PARAM_BUFFER_SIZE, ctypes.addressof(size),
                                  cu.CU_LAUNCH_PARAM_END)
    ex = ctypes.addressof(extra)
    null = cu.CUstream(0)
    a, b = socket.socketpair()
    poller = select.poll()
    poller.register(b, select.POLLIN)
    rbuf = bytearray(65536)
    ns = time.perf_counter_ns

    def spin_poll(us):
        end = time.perf_counter() + us / 1e6
        while time.perf_counter() < end:
            poller.poll(0)

    def busy(us):
        end = time.perf_counter() + us / 1e6
        while time.perf_counter() < end:
            pass

    def pingpong():
        a.send(b"x" * 64)
        poller.poll(0)
        b.recv_into(rbuf)

    pauses = {
        "none": lambda: None,
        "busy 30us": lambda: busy(30),
        "poll() 30us": lambda: spin_poll(30),
        "socket send+recv": pingpong,
        "sleep 50us": lambda: time.sleep(50e-6),
    }
    launches = {
        "kernelParams, null CUstream": lambda: cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, null, kp, 0),
        "extra, stream None": lambda: cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, None, 0, ex),
        "extra, null CUstream": lambda: cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, null, 0, ex),
    }
    rows = []
    for rnd in range(3):
        for pname, pause in pauses.items():
            for lname, launch in launches.items():
                times = []
                for _ in range(400):
                    ok(cu.cuStreamSynchronize(null))
                    pause()
                    t = ns()
                    launch()
                    times.append(ns() - t)
                ok(cu.cuStreamSynchronize(null))
                rows.append((rnd, pname, lname, statistics.median(times) / 1e3, min(times) / 1e3))
    # queued launches, for comparison: the launch call when the last one was a launch
    times = []
    for _ in range(2000):
        t = ns()
        cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, null, kp, 0)
        times.append(ns() - t)
    ok(cu.cuStreamSynchronize(null))
    print(f"{'pause before the launch':20} {'launch':30} {'median µs, rounds':>30}")
    for pname in pauses:
        for lname in launches:
            meds = [f"{m:.2f}" for _, p, lab, m, _ in rows if p == pname and lab == lname]
            print(f"{pname:20} {lname:30} {' / '.join(meds):>30}")
    print(f"back-to-back queued launches: median {statistics.median(times) / 1e3:.2f} µs")


if __name__ == "__main__":
    main()
